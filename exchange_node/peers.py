"""The peer directory: who this node talks to, with which keys, under which policy.

One object holds what the hot paths ask about peers (the keyring of pinned cards and
revocations, pauses, policies, the TLS certificate each peer authenticates with), kept
in memory and rebuilt from the store when the pinned peers change, so no hot path
queries for it. Changes of a peer's card or keys that arrive over the wire (a rotation
announcement, a revocation) are applied here, each with its audit leaf in one commit.

Others learn of a reload through :attr:`PeerDirectory.listeners`: the composition root
re-trusts the TLS certificates and starts or stops delivery workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from exchange_node.audit import leaves
from exchange_node.config import Config
from exchange_node.delivery.outbox import keyring_from_store, store_revocations
from exchange_node.protocol.cards import PeerCard
from exchange_node.protocol.keyring import Keyring
from exchange_node.store.base import Store
from exchange_node.store.records import PeerRecord

log = structlog.get_logger("exchange_node.peers")

PeerState = tuple[str, int, bool]
"""(node id, updated at, paused): what tells a reload that an operator changed a peer."""

Listener = Callable[[frozenset[str]], None]
"""Called after each reload with the peers an operator changed (empty when the reload
was forced, e.g. after a rotation, or found nothing changed but the cards)."""


class PeerDirectory:
    def __init__(self, store: Store, config: Config, clock: Callable[[], int]) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self.keyring = Keyring()
        self._paused: set[str] = set()
        self._policies: dict[str, tuple[str, ...]] = {}
        self._tls_by_fp: dict[bytes, str] = {}
        self._state: tuple[PeerState, ...] = ()
        self.listeners: list[Listener] = []

    # --- questions the hot paths ask -------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerCard]:
        """The pinned peers' current cards by node id."""
        return self.keyring.peers

    def by_tls_fingerprint(self, fp: bytes) -> str | None:
        """The peer whose card names this TLS certificate (SHA-256), if any."""
        return self._tls_by_fp.get(fp)

    def is_paused(self, peer_id: str) -> bool:
        return peer_id in self._paused

    def policy(self, peer_id: str) -> tuple[str, ...]:
        """Notice kinds allowed with ``peer_id``: the policy stored with the peer (set by
        ``peer add --allow`` or the API), else the config file's."""
        policy = self._policies.get(peer_id)
        return policy if policy is not None else self._config.policy_for(peer_id)

    def tls_certificates(self) -> list[bytes]:
        return [c.tls_certificate for c in self.keyring.peers.values()]

    # --- keeping up with the store ---------------------------------------------------------

    def changed_in_store(self, peers: Sequence[PeerRecord]) -> bool:
        """True if ``peers`` (as just listed from the store) differ from what was loaded."""
        return _state(peers) != self._state

    def reload(self) -> None:
        """Rebuild everything from the store's pinned peers, then tell the listeners which
        peers an operator changed."""
        ring, peers = keyring_from_store(self._store, self.keyring.revoked)
        self.keyring = ring
        self._paused = {p.node_id for p in peers if p.paused}
        self._policies = {p.node_id: tuple(p.policy) for p in peers if p.policy}
        self._tls_by_fp = {
            c.tls_cert_sha256: c.node_id for c in ring.peers.values() if c.tls_cert_sha256
        }
        before = {s[0]: s for s in self._state}
        self._state = _state(peers)
        # An empty ``before`` is a forced reload (or the first): nobody acted on a peer.
        changed = frozenset(
            s[0] for s in self._state if before and before.get(s[0]) not in (None, s)
        )
        for listener in self.listeners:
            listener(changed)

    def force_reload(self) -> None:
        """Make the next :meth:`changed_in_store` true (a card changed under us)."""
        self._state = ()

    # --- changes -----------------------------------------------------------------------------

    async def set_policy(self, peer_id: str, kinds: Sequence[str]) -> None:
        """Store and apply at once which notice kinds may go to and come from a peer."""
        await self._store.set_policy(peer_id, kinds, self._clock())
        self.reload()

    async def accept_rotation(self, signed_card: bytes, *, actor: str) -> PeerCard:
        """Adopt a peer's new card if a key we trust signed it (``OpenError`` otherwise),
        stored with its ``key.rotated`` leaf in one commit."""
        card = self.keyring.rotate(signed_card)
        known = self._store.get_peer(card.node_id) is not None
        now = self._clock()
        leaf = leaves.key_rotated(
            now, actor, card.node_id, card.serial, card.current_signing_key.key_id
        )
        await self._store.upsert_peer(
            card.node_id, card.signed, card.fingerprint, now, audit=[leaf]
        )
        self._tls_by_fp[card.tls_cert_sha256] = card.node_id
        self.force_reload()  # the watch reloads everything at its next tick
        for listener in self.listeners:
            listener(frozenset())
        log.info("peer.rotated", peer=card.node_id, serial=card.serial, previous=known)
        return card

    async def accept_revocation(self, signed: bytes, *, actor: str) -> None:
        """Apply a peer's key revocation (``OpenError`` if it does not verify), kept with
        its ``key.revoked`` leaf in one commit. Revocations are never undone."""
        rev = self.keyring.revoke(signed)
        leaf = leaves.key_revoked(self._clock(), actor, rev.node_id, rev.key_id, rev.revoked_at_ms)
        await store_revocations(self._store, self.keyring, audit=[leaf])
        log.warning("peer.key_revoked", peer=rev.node_id, key_id=rev.key_id.hex())


def _state(peers: Sequence[PeerRecord]) -> tuple[PeerState, ...]:
    return tuple((p.node_id, p.updated_at, p.paused) for p in peers)
