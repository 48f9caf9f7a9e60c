"""Node cards: issuing, verifying, fingerprints, rotation and revocation.

A card is trusted in exactly two ways: an operator pins it after comparing its
fingerprint out of band, or a pinned card's signing key signs its successor
(rotation). Everything here is pure: bytes in, verified values out.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from exchange_node.pb.exchange.v1 import card_pb2, types_pb2

from .errors import OpenError, Reason
from .framing import LABEL_CARD_FINGERPRINT, LABEL_CARD_SIGNATURE, LABEL_REVOCATION_SIGNATURE, frame
from .keys import EncryptionKey, SigningKey, Suite, ed25519_public_key, hpke_public_key, key_id

CARD_VERSION = 1
MAX_CARD_BYTES = 16 * 1024
NODE_ID_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,31}$")
COUNTRY_RE = re.compile(r"^[A-Z]{1,3}$")


@dataclass(frozen=True)
class KeyEntry:
    """One public key of a card, already checked (key id recomputed, bytes loadable)."""

    key_id: bytes
    algorithm: int
    public: bytes
    not_before_ms: int
    not_after_ms: int

    def valid_at(self, t_ms: int) -> bool:
        return self.not_before_ms <= t_ms and (self.not_after_ms == 0 or t_ms < self.not_after_ms)


@dataclass(frozen=True)
class PeerCard:
    """A verified node card. ``signed`` is the exact SignedCard bytes as received."""

    signed: bytes
    card_bytes: bytes
    node_id: str
    country: str
    endpoint: str
    display_name: str
    serial: int
    issued_at_ms: int
    tls_cert_sha256: bytes
    tls_certificate: bytes
    signing_keys: tuple[KeyEntry, ...]
    encryption_keys: tuple[KeyEntry, ...]
    signer_key_ids: frozenset[bytes]

    @property
    def fingerprint(self) -> str:
        return card_fingerprint(self.card_bytes)

    @property
    def current_signing_key(self) -> KeyEntry:
        return self.signing_keys[0]

    @property
    def current_encryption_key(self) -> KeyEntry:
        """The key to seal to. ValueError when every encryption key was revoked: the
        peer must publish a new card (re-pinned out of band) before anything is sent."""
        if not self.encryption_keys:
            raise ValueError(f"{self.node_id} has no usable encryption key (all revoked)")
        return self.encryption_keys[0]

    def signing_key(self, kid: bytes) -> KeyEntry | None:
        return next((k for k in self.signing_keys if k.key_id == kid), None)


def card_fingerprint(card_bytes: bytes) -> str:
    """Human-comparable fingerprint of a card: the first 20 bytes of
    SHA-256(frame(card-fingerprint label, card bytes)) in base32, groups of four."""
    digest = hashlib.sha256(frame(LABEL_CARD_FINGERPRINT, card_bytes)).digest()[:20]
    text = base64.b32encode(digest).decode()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalise_fingerprint(text: str) -> str:
    """Accept a fingerprint typed with any case, spaces or dashes."""
    raw = re.sub(r"[\s-]", "", text).upper()
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _entry(
    k: SigningKey | EncryptionKey, not_before_ms: int, not_after_ms: int
) -> card_pb2.PublicKey:
    algorithm = (
        types_pb2.KEY_ALGORITHM_ED25519 if isinstance(k, SigningKey) else k.suite.key_algorithm
    )
    return card_pb2.PublicKey(
        key_id=k.key_id,
        algorithm=algorithm,
        public_key=k.public,
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
    )


@dataclass(frozen=True)
class CardKey:
    """A key to list on a card with its validity window (not_after_ms 0 = open)."""

    key: SigningKey | EncryptionKey
    not_before_ms: int
    not_after_ms: int = 0


def issue_card(
    *,
    node_id: str,
    country: str,
    endpoint: str,
    display_name: str,
    signing_keys: Sequence[CardKey],
    encryption_keys: Sequence[CardKey],
    tls_certificate: bytes,
    serial: int,
    issued_at_ms: int,
    previous_signing_key: SigningKey | None = None,
) -> bytes:
    """Build and sign a card; return the SignedCard bytes.

    ``tls_certificate`` is the node's DER certificate (b"" for a node without TLS, e.g.
    in tests); its SHA-256 goes into ``tls_cert_sha256``. The first signing key is the
    current one and always signs. On a rotation pass the
    current signing key of the card being replaced as ``previous_signing_key``; it
    signs too, which is what lets peers accept the new card without a new pin.
    """
    if not NODE_ID_RE.fullmatch(node_id):
        raise ValueError(f"node id {node_id!r} must match {NODE_ID_RE.pattern}")
    card = card_pb2.NodeCard(
        version=CARD_VERSION,
        node_id=node_id,
        country=country,
        endpoint=endpoint,
        display_name=display_name,
        signing_keys=[_entry(c.key, c.not_before_ms, c.not_after_ms) for c in signing_keys],
        encryption_keys=[_entry(c.key, c.not_before_ms, c.not_after_ms) for c in encryption_keys],
        tls_cert_sha256=hashlib.sha256(tls_certificate).digest() if tls_certificate else b"",
        tls_certificate=tls_certificate,
        serial=serial,
        issued_at_ms=issued_at_ms,
    )
    card_bytes = card.SerializeToString()
    signers = [signing_keys[0].key]
    if previous_signing_key is not None and previous_signing_key.key_id != signers[0].key_id:
        signers.append(previous_signing_key)
    message = frame(LABEL_CARD_SIGNATURE, card_bytes)
    signed = card_pb2.SignedCard(
        card=card_bytes,
        signatures=[
            card_pb2.CardSignature(key_id=s.key_id, signature=s.sign(message))  # type: ignore[union-attr]
            for s in signers
        ],
    )
    return signed.SerializeToString()


def _fail(reason: Reason, detail: str) -> OpenError:
    return OpenError(reason, detail)


def _check_key(pk: card_pb2.PublicKey, expect_signing: bool) -> KeyEntry:
    alg = pk.algorithm
    try:
        if expect_signing:
            if alg != types_pb2.KEY_ALGORITHM_ED25519:
                raise ValueError("signing keys must be Ed25519")
            ed25519_public_key(pk.public_key)
        else:
            Suite.for_algorithm(alg)
            hpke_public_key(alg, pk.public_key)
    except ValueError as exc:
        raise _fail(Reason.MALFORMED, f"card key: {exc}") from None
    if key_id(alg, pk.public_key) != pk.key_id:
        raise _fail(Reason.MALFORMED, "card key id does not match its public key")
    if pk.not_after_ms and pk.not_after_ms <= pk.not_before_ms:
        raise _fail(Reason.MALFORMED, "card key validity window is empty")
    return KeyEntry(pk.key_id, alg, pk.public_key, pk.not_before_ms, pk.not_after_ms)


def verify_card(signed: bytes) -> PeerCard:
    """Parse and check a SignedCard; raise :class:`OpenError` if anything is wrong.

    Checks: size, structure, version, node id and country syntax, every key id
    recomputed, at least one key of each kind, no duplicate key ids, and a valid
    signature by the card's own current signing key. It does NOT decide trust: that is
    pinning (by fingerprint) or :func:`verify_rotation`.
    """
    if len(signed) > MAX_CARD_BYTES:
        raise _fail(Reason.OVERSIZED, f"card larger than {MAX_CARD_BYTES} bytes")
    try:
        sc = card_pb2.SignedCard.FromString(signed)
        card = card_pb2.NodeCard.FromString(sc.card)
    except DecodeError:
        raise _fail(Reason.MALFORMED, "card does not parse") from None
    if card.version != CARD_VERSION:
        raise _fail(Reason.UNSUPPORTED_VERSION, f"card version {card.version}")
    if not NODE_ID_RE.fullmatch(card.node_id):
        raise _fail(Reason.MALFORMED, "card node id is not valid")
    if not COUNTRY_RE.fullmatch(card.country):
        raise _fail(Reason.MALFORMED, "card country is not an ICAO code")
    if not card.signing_keys or not card.encryption_keys:
        raise _fail(Reason.MALFORMED, "card needs a signing key and an encryption key")
    if len(card.tls_cert_sha256) not in (0, 32) or (
        card.tls_certificate
        and hashlib.sha256(card.tls_certificate).digest() != card.tls_cert_sha256
    ):
        raise _fail(Reason.MALFORMED, "card TLS certificate and fingerprint do not match")
    signing = tuple(_check_key(k, True) for k in card.signing_keys)
    encryption = tuple(_check_key(k, False) for k in card.encryption_keys)
    ids = [k.key_id for k in signing + encryption]
    if len(set(ids)) != len(ids):
        raise _fail(Reason.MALFORMED, "card lists a key twice")
    message = frame(LABEL_CARD_SIGNATURE, sc.card)
    valid_signers: set[bytes] = set()
    by_id = {k.key_id: k for k in signing}
    for sig in sc.signatures:
        entry = by_id.get(sig.key_id)
        if entry is None:
            continue  # a previous card's key: checked by verify_rotation
        try:
            ed25519_public_key(entry.public).verify(sig.signature, message)
        except InvalidSignature:
            raise _fail(Reason.BAD_SIGNATURE, "card signature does not verify") from None
        valid_signers.add(sig.key_id)
    if signing[0].key_id not in valid_signers:
        raise _fail(Reason.BAD_SIGNATURE, "card is not signed by its current signing key")
    return PeerCard(
        signed=signed,
        card_bytes=sc.card,
        node_id=card.node_id,
        country=card.country,
        endpoint=card.endpoint,
        display_name=card.display_name,
        serial=card.serial,
        issued_at_ms=card.issued_at_ms,
        tls_cert_sha256=card.tls_cert_sha256,
        tls_certificate=card.tls_certificate,
        signing_keys=signing,
        encryption_keys=encryption,
        signer_key_ids=frozenset(valid_signers),
    )


def announced_card_bytes(signed_card: card_pb2.SignedCard) -> bytes:
    """The SignedCard bytes a receiver verifies and pins from a ``CardAnnouncement``.

    The announcement embeds the SignedCard as a message, not as bytes, so its encoding is
    rebuilt: ``card`` exactly as received (the bytes the signatures and the fingerprint
    cover), then every ``signatures`` entry in the order received, as ``{key_id,
    signature}``; unknown fields are dropped. Every implementation gets the same bytes,
    and for a card issued canonically they are the bytes its node serves (docs/protocol.md
    16.6).
    """
    return card_pb2.SignedCard(
        card=signed_card.card,
        signatures=[
            card_pb2.CardSignature(key_id=s.key_id, signature=s.signature)
            for s in signed_card.signatures
        ],
    ).SerializeToString()


def verify_rotation(
    pinned: PeerCard, signed: bytes, revoked: frozenset[bytes] = frozenset()
) -> PeerCard:
    """Accept a successor of ``pinned`` only when a non-revoked signing key of the pinned
    card signed it, it names the same node and its serial is higher."""
    new = verify_card(signed)
    if new.node_id != pinned.node_id:
        raise _fail(Reason.SENDER_MISMATCH, "new card names another node")
    if new.serial <= pinned.serial:
        raise _fail(Reason.EXPIRED, "new card serial is not higher than the pinned one")
    sc = card_pb2.SignedCard.FromString(signed)
    message = frame(LABEL_CARD_SIGNATURE, sc.card)
    for sig in sc.signatures:
        entry = pinned.signing_key(sig.key_id)
        if entry is None or entry.key_id in revoked:
            continue
        try:
            ed25519_public_key(entry.public).verify(sig.signature, message)
        except InvalidSignature:
            continue
        return new
    raise _fail(Reason.UNKNOWN_KEY, "new card is not signed by a trusted key of the pinned card")


@dataclass(frozen=True)
class Revocation:
    node_id: str
    key_id: bytes
    revoked_at_ms: int
    reason: str
    signed: bytes


def sign_revocation(
    *, node_id: str, revoked_key_id: bytes, revoked_at_ms: int, reason: str, signer: SigningKey
) -> bytes:
    """A SignedRevocation for ``revoked_key_id``, signed by ``signer`` (the revoked key
    itself or another signing key on the node's card)."""
    rev = card_pb2.KeyRevocation(
        version=CARD_VERSION,
        node_id=node_id,
        revoked_key_id=revoked_key_id,
        revoked_at_ms=revoked_at_ms,
        reason=reason,
    ).SerializeToString()
    sig = signer.sign(frame(LABEL_REVOCATION_SIGNATURE, rev))
    return card_pb2.SignedRevocation(
        revocation=rev, signature=card_pb2.CardSignature(key_id=signer.key_id, signature=sig)
    ).SerializeToString()


def verify_revocation(signed: bytes, pinned: PeerCard) -> Revocation:
    """Check a SignedRevocation against the node's pinned card."""
    try:
        sr = card_pb2.SignedRevocation.FromString(signed)
        rev = card_pb2.KeyRevocation.FromString(sr.revocation)
    except DecodeError:
        raise _fail(Reason.MALFORMED, "revocation does not parse") from None
    if rev.version != CARD_VERSION or rev.node_id != pinned.node_id:
        raise _fail(Reason.MALFORMED, "revocation is for another node or version")
    keys = {k.key_id for k in pinned.signing_keys + pinned.encryption_keys}
    if rev.revoked_key_id not in keys:
        raise _fail(Reason.UNKNOWN_KEY, "revoked key is not on the pinned card")
    signer = pinned.signing_key(sr.signature.key_id)
    if signer is None:
        raise _fail(Reason.UNKNOWN_KEY, "revocation signer is not on the pinned card")
    try:
        ed25519_public_key(signer.public).verify(
            sr.signature.signature, frame(LABEL_REVOCATION_SIGNATURE, sr.revocation)
        )
    except InvalidSignature:
        raise _fail(Reason.BAD_SIGNATURE, "revocation signature does not verify") from None
    return Revocation(rev.node_id, rev.revoked_key_id, rev.revoked_at_ms, rev.reason, signed)
