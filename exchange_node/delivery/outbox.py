"""Putting a notice into the outbox: who gets it, and sealing one copy per recipient.

The running node (``Node.submit``) and the command line (``exchange-node send``, key
announcements) queue notices the same way, through these functions; only where the
keyring comes from differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence

import structlog

from exchange_node.at_rest import AtRest
from exchange_node.config import NOTICE_KINDS
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.store.base import Store
from exchange_node.store.records import OutboxItem, PeerRecord

log = structlog.get_logger("exchange_node.outbox")

POLICY_KINDS = frozenset(NOTICE_KINDS)
"""Body kinds a peer policy governs; pings and key announcements always pass."""

REVOCATIONS_META = "revoked_keys"
"""Store meta key holding revoked peer key ids (hex) and when they were revoked."""


class UnknownRecipient(ValueError):
    def __init__(self, peer: str) -> None:
        super().__init__(f"{peer} is not a pinned peer")
        self.peer = peer


class RecipientNotAllowed(PermissionError):
    def __init__(self, peer: str, kind: str) -> None:
        super().__init__(f"the policy for {peer} does not allow {kind}")
        self.peer = peer
        self.kind = kind


def choose_recipients(
    kind: str,
    requested: Sequence[str] | None,
    pinned: Collection[str],
    policy: Callable[[str], Sequence[str]],
) -> list[str]:
    """The peers to send a ``kind`` body to.

    ``requested`` None means every pinned peer whose policy allows the kind. A named
    peer that is not pinned raises UnknownRecipient (a ValueError); one whose policy
    forbids the kind raises RecipientNotAllowed (a PermissionError).
    """
    governed = kind in POLICY_KINDS
    if requested is None:
        return [p for p in sorted(pinned) if not governed or kind in policy(p)]
    targets = list(dict.fromkeys(requested))
    for p in targets:
        if p not in pinned:
            raise UnknownRecipient(p)
        if governed and kind not in policy(p):
            raise RecipientNotAllowed(p, kind)
    return targets


def payload_context(peer_id: str, message_id: bytes) -> bytes:
    """Associated data binding an encrypted outbox payload to its row."""
    return b"outbox-payload\x00" + peer_id.encode() + b"\x00" + message_id


def seal_for(
    body: bytes,
    *,
    sender: LocalIdentity,
    keyring: Keyring,
    recipients: Sequence[str],
    at_rest: AtRest,
    now_ms: int,
) -> list[OutboxItem]:
    """One sealed copy of ``body`` per recipient, with the body kept encrypted at rest
    so the copy can be sealed again (peer key rotation, expiry)."""
    items = []
    for peer_id in recipients:
        sealed = seal(body, sender=sender, recipient=keyring.require(peer_id), now_ms=now_ms)
        items.append(
            OutboxItem(
                peer_id=peer_id,
                message_id=sealed.message_id,
                envelope=sealed.data,
                payload=at_rest.encrypt(body, payload_context(peer_id, sealed.message_id)),
                created_at=now_ms,
            )
        )
    return items


def keyring_from_store(
    store: Store, keep_revoked: dict[bytes, int] | None = None
) -> tuple[Keyring, list[PeerRecord]]:
    """The keyring of the peers pinned in ``store``, with their revocations applied.

    ``keep_revoked``: revocations already applied in memory (they are never undone; one
    whose write has not returned yet must survive). Cards that no longer verify are
    logged and left out.
    """
    peers = store.list_peers()
    stored = json.loads((store.get_meta(REVOCATIONS_META) or b"{}").decode())
    ring = Keyring(
        revoked={**{bytes.fromhex(k): v for k, v in stored.items()}, **(keep_revoked or {})}
    )
    for p in peers:
        try:
            ring.add_trusted(verify_card(p.card))
        except OpenError as exc:
            log.error("peer.card_invalid", peer=p.node_id, reason=exc.reason.value)
    return ring, peers


async def store_revocations(store: Store, keyring: Keyring, *, audit: Sequence = ()) -> None:
    """Keep the keyring's revocations, with the leaves recording them, in one commit.

    Added to those stored, never replacing them: another process of the node (on a
    shared database) may have stored one this keyring has not loaded yet."""
    mine = {k.hex(): v for k, v in keyring.revoked.items()}

    def work(tx) -> None:
        stored = json.loads((tx.get_meta(REVOCATIONS_META, lock=True) or b"{}").decode())
        tx.set_meta(REVOCATIONS_META, json.dumps({**stored, **mine}, sort_keys=True).encode())
        tx.audit(audit)

    await store.transaction(work, label="meta.set")
