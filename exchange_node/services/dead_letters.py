"""Dead letters seen to by a person: retried or acknowledged, each one audit leaf.

A dead letter is a message a peer refused for good (or one left when its peer was
removed). It is never resent silently; an operator either puts it back in its queue at
its original place (``retry``: the peer has been fixed, the policy changed) or marks it
acknowledged (``acknowledge``: handled another way). An acknowledged row stays as
evidence but no longer counts as waiting for a person (``queue_stats().dead``, the
``exchange_outbox_dead_letters`` gauge, the console's alert).

Plain functions of the store, so the console (with a running node) and the command line
(offline, against the data directory) call the same code. The caller wakes the peer's
worker after a retry when a node runs in its process.
"""

from __future__ import annotations

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.errors import NotFoundError
from exchange_node.store.base import Store
from exchange_node.store.records import OutboxRow


def _row(store: Store, outbox_id: int) -> OutboxRow:
    row = store.get_outbox(outbox_id)
    if row is None:
        raise NotFoundError(
            "dead_letter_not_found", f"there is no outbox row {outbox_id}", "outbox_id"
        )
    return row


async def retry(store: Store, outbox_id: int, *, actor: str, now: int) -> OutboxRow:
    """Queue the dead letter again (refused if it is not dead or its peer is gone)."""
    row = _row(store, outbox_id)
    leaf = leaves.dead_letter_handled(
        now, LeafKind.DEAD_LETTER_RETRIED, actor, row.peer_id, row.message_id, outbox_id
    )
    await store.requeue_dead(outbox_id, audit=[leaf])
    return row


async def acknowledge(store: Store, outbox_id: int, *, actor: str, now: int) -> OutboxRow:
    """Mark the dead letter seen to by ``actor`` (refused if not dead or done already)."""
    row = _row(store, outbox_id)
    leaf = leaves.dead_letter_handled(
        now, LeafKind.DEAD_LETTER_ACKNOWLEDGED, actor, row.peer_id, row.message_id, outbox_id
    )
    return await store.acknowledge_dead(outbox_id, now, actor, audit=[leaf])
