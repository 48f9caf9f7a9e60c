"""The node's own keys and the pinned cards of its peers.

The keyring is plain in-memory state; the node persists pinned cards and revocations
in its store and rebuilds the keyring from them at start-up. Pinning requires the
fingerprint an operator compared out of band; later cards are accepted only as
rotations signed by a key the node already trusts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError

from exchange_node.pb.exchange.v1 import card_pb2

from .cards import (
    PeerCard,
    Revocation,
    normalise_fingerprint,
    verify_card,
    verify_revocation,
    verify_rotation,
)
from .errors import OpenError, Reason
from .keys import EncryptionKey, SigningKey


@dataclass(frozen=True)
class LocalIdentity:
    """This node's private keys. ``encryption_keys[0]`` is current; later keys are kept
    so envelopes sealed to them before a rotation still open."""

    node_id: str
    signing_key: SigningKey
    encryption_keys: tuple[EncryptionKey, ...]

    def encryption_key(self, kid: bytes) -> EncryptionKey | None:
        return next((k for k in self.encryption_keys if k.key_id == kid), None)


class FingerprintMismatch(ValueError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"card fingerprint is {actual}, not the expected {expected}: do not pin it; "
            "ask the peer's operator to read the fingerprint again"
        )
        self.expected = expected
        self.actual = actual


@dataclass
class Keyring:
    """Pinned peer cards by node id, and revoked key ids (with when they were revoked)."""

    peers: dict[str, PeerCard] = field(default_factory=dict)
    revoked: dict[bytes, int] = field(default_factory=dict)

    @classmethod
    def from_cards(
        cls, cards: Iterable[bytes], revocations: Iterable[tuple[bytes, int]] = ()
    ) -> Keyring:
        """Rebuild from stored SignedCard bytes (already trusted when stored)."""
        ring = cls()
        ring.revoked.update(revocations)
        for signed in cards:
            ring.add_trusted(verify_card(signed))
        return ring

    def add_trusted(self, card: PeerCard) -> PeerCard:
        """Add a card this node already trusts (pinned earlier and read back from its
        store); revoked encryption keys are dropped from it as always."""
        self.peers[card.node_id] = _without_revoked(card, self.revoked)
        return self.peers[card.node_id]

    def pin(self, signed: bytes, expected_fingerprint: str) -> PeerCard:
        """Pin a peer's card after an out-of-band fingerprint comparison.

        Raises FingerprintMismatch (nothing pinned) or OpenError for a bad card.
        """
        card = verify_card(signed)
        expected = normalise_fingerprint(expected_fingerprint)
        if card.fingerprint != expected:
            raise FingerprintMismatch(expected, card.fingerprint)
        self.peers[card.node_id] = _without_revoked(card, self.revoked)
        return self.peers[card.node_id]

    def rotate(self, signed: bytes) -> PeerCard:
        """Replace a pinned card by its successor; OpenError unless trusted."""
        card = verify_card(signed)
        pinned = self.peers.get(card.node_id)
        if pinned is None:
            raise OpenError(Reason.UNKNOWN_SENDER, "no pinned card for this node")
        new = verify_rotation(pinned, signed, frozenset(self.revoked))
        self.peers[new.node_id] = _without_revoked(new, self.revoked)
        return self.peers[new.node_id]

    def revoke(self, signed: bytes) -> Revocation:
        """Apply a peer's signed revocation; OpenError unless it verifies."""
        try:
            node_id = card_pb2.KeyRevocation.FromString(
                card_pb2.SignedRevocation.FromString(signed).revocation
            ).node_id
        except DecodeError:
            raise OpenError(Reason.MALFORMED, "revocation does not parse") from None
        pinned = self.peers.get(node_id)
        if pinned is None:
            raise OpenError(Reason.UNKNOWN_SENDER, "no pinned card for this node")
        rev = verify_revocation(signed, pinned)
        signer = card_pb2.SignedRevocation.FromString(signed).signature.key_id
        if signer in self.revoked and signer != rev.key_id:
            # Whoever stole a revoked key must not be able to revoke the keys that
            # replaced it (and so cut the node off).
            raise OpenError(Reason.KEY_REVOKED, "revocation signed by an already revoked key")
        self.revoked[rev.key_id] = rev.revoked_at_ms
        self.peers[node_id] = _without_revoked(pinned, self.revoked)
        return rev

    def remove(self, node_id: str) -> None:
        self.peers.pop(node_id, None)

    def get(self, node_id: str) -> PeerCard | None:
        return self.peers.get(node_id)

    def require(self, node_id: str) -> PeerCard:
        card = self.peers.get(node_id)
        if card is None:
            raise OpenError(Reason.UNKNOWN_SENDER, f"{node_id} is not a pinned peer")
        return card

    def signing_key(self, node_id: str, kid: bytes, at_ms: int) -> bytes:
        """Raw Ed25519 public key ``kid`` of ``node_id`` if usable for something dated
        ``at_ms``; OpenError with the precise reason otherwise.

        A revoked key is refused whatever the date it claims: whoever stole it can
        also back-date what they sign.
        """
        card = self.require(node_id)
        entry = card.signing_key(kid)
        if entry is None:
            raise OpenError(Reason.UNKNOWN_KEY, "signing key not on the pinned card")
        if kid in self.revoked:
            raise OpenError(Reason.KEY_REVOKED, "signing key was revoked")
        if not entry.valid_at(at_ms):
            raise OpenError(Reason.KEY_NOT_VALID, "signing key not valid at created_at")
        return entry.public


def _without_revoked(card: PeerCard, revoked: dict[bytes, int]) -> PeerCard:
    """The card as this node uses it: revoked encryption keys removed, so nothing is
    ever sealed to them. (Revoked signing keys stay listed so the refusal can name
    KEY_REVOKED; :meth:`Keyring.signing_key` refuses them.)"""
    usable = tuple(k for k in card.encryption_keys if k.key_id not in revoked)
    if len(usable) == len(card.encryption_keys):
        return card
    return replace(card, encryption_keys=usable)
