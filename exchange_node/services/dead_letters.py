"""Dead letters an operator deals with: retry (queue again) or acknowledge (keep, stop
counting). One function each, shared by the command line and the console, so both write
the same audit leaf in the transaction of the change.

Works on any :class:`~exchange_node.store.base.Store` with the audit log attached; a
running node's worker picks a retried row up within its idle poll (a second), whichever
process made the change.
"""

from __future__ import annotations

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.store.base import Store
from exchange_node.store.records import OutboxRow


async def retry_dead_letter(store: Store, outbox_id: int, actor: str, now: int) -> OutboxRow:
    """Queue dead letter ``outbox_id`` again, audited as ``dead_letter.retried``."""
    return await store.retry_dead_letter(
        outbox_id,
        audit=lambda row: [_leaf(LeafKind.DEAD_LETTER_RETRIED, now, actor, row)],
    )


async def acknowledge_dead_letter(store: Store, outbox_id: int, actor: str, now: int) -> OutboxRow:
    """Mark dead letter ``outbox_id`` as dealt with, audited as
    ``dead_letter.acknowledged``: the alert on dead letters clears."""
    return await store.acknowledge_dead_letter(
        outbox_id,
        actor,
        now,
        audit=lambda row: [_leaf(LeafKind.DEAD_LETTER_ACKNOWLEDGED, now, actor, row)],
    )


def _leaf(kind: LeafKind, now: int, actor: str, row: OutboxRow):
    return leaves.dead_letter(now, kind, actor, row.peer_id, row.message_id, row.id, row.reason)
