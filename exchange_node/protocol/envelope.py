"""Sealing and opening envelopes: sign, then encrypt, bound to the clear header.

``seal`` signs ``frame(envelope-signature label, header, body)`` with the sender's
Ed25519 key and HPKE-seals the SignedBody to the recipient's current encryption key
with ``info = frame(hpke-info label, header)``. ``open_envelope`` checks everything
that can be checked on the clear header first (cheap, no secret-key operation), then
decrypts, verifies the signature over the exact bytes, and only then parses the body.
Any failure raises :class:`OpenError`; its ``reason`` is for logs and audit only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from exchange_node.pb.exchange.v1 import envelope_pb2, notice_pb2

from .cards import NODE_ID_RE, PeerCard
from .errors import OpenError, Reason
from .framing import LABEL_ENVELOPE_SIGNATURE, LABEL_HPKE_INFO, frame
from .ids import time_ordered_id
from .keyring import Keyring, LocalIdentity
from .keys import Suite, ed25519_public_key, hpke_public_key

PROTOCOL_VERSION = 1
MESSAGE_ID_LEN = 16
MAX_BODY_BYTES = 48 * 1024
MAX_ENVELOPE_BYTES = 64 * 1024
DAY_MS = 86_400_000
# The reference defaults of docs/protocol.md section 14; ``[protocol]`` in the config
# sets a node's own values (``max_clock_skew_seconds``, ``retention_days``).
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000
DEFAULT_MAX_AGE_MS = 30 * DAY_MS


@dataclass(frozen=True)
class Freshness:
    """How far a receiver trusts the sender's clock. ``max_age_ms`` is the retention
    window of de-duplication: anything older could be a replay and is refused."""

    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    max_age_ms: int = DEFAULT_MAX_AGE_MS


@dataclass(frozen=True)
class SealedEnvelope:
    data: bytes
    message_id: bytes
    envelope_hash: bytes


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified envelope. ``header_bytes``, ``body_bytes`` and ``signature`` are the
    evidence a third party can check with the sender's public key alone."""

    header: envelope_pb2.EnvelopeHeader
    header_bytes: bytes
    body_bytes: bytes
    signature: bytes
    body: notice_pb2.Body
    envelope_hash: bytes

    @property
    def sender(self) -> str:
        return self.header.sender

    @property
    def message_id(self) -> bytes:
        return self.header.message_id


def envelope_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def signature_input(header_bytes: bytes, body_bytes: bytes) -> bytes:
    return frame(LABEL_ENVELOPE_SIGNATURE, header_bytes, body_bytes)


def hpke_info(header_bytes: bytes) -> bytes:
    return frame(LABEL_HPKE_INFO, header_bytes)


def seal(
    body: bytes,
    *,
    sender: LocalIdentity,
    recipient: PeerCard,
    now_ms: int,
    message_id: bytes | None = None,
) -> SealedEnvelope:
    """Seal serialized ``Body`` bytes to ``recipient``'s current encryption key.

    ``message_id`` defaults to a new time-ordered id (``ids.time_ordered_id``). Raises ValueError for a body over
    the size limit or a message id of the wrong length.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    mid = time_ordered_id(now_ms) if message_id is None else message_id
    if len(mid) != MESSAGE_ID_LEN:
        raise ValueError("message id must be 16 bytes")
    rkey = recipient.current_encryption_key
    suite = Suite.for_algorithm(rkey.algorithm)
    header = envelope_pb2.EnvelopeHeader(
        version=PROTOCOL_VERSION,
        message_id=mid,
        sender=sender.node_id,
        recipient=recipient.node_id,
        created_at_ms=now_ms,
        sender_key_id=sender.signing_key.key_id,
        recipient_key_id=rkey.key_id,
        suite=suite.value,
    ).SerializeToString()
    signature = sender.signing_key.sign(signature_input(header, body))
    plaintext = envelope_pb2.SignedBody(body=body, signature=signature).SerializeToString()
    sealed = suite.hpke.encrypt(
        plaintext, hpke_public_key(rkey.algorithm, rkey.public), info=hpke_info(header)
    )
    data = envelope_pb2.Envelope(header=header, sealed=sealed).SerializeToString()
    return SealedEnvelope(data, mid, envelope_hash(data))


def parse_header(data: bytes) -> tuple[envelope_pb2.Envelope, envelope_pb2.EnvelopeHeader]:
    """Parse the outer envelope and its clear header, checking sizes and syntax only."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise OpenError(Reason.OVERSIZED, f"envelope is {len(data)} bytes")
    try:
        env = envelope_pb2.Envelope.FromString(data)
        header = envelope_pb2.EnvelopeHeader.FromString(env.header)
    except DecodeError:
        raise OpenError(Reason.MALFORMED, "envelope does not parse") from None
    # Only the canonical encoding opens: one envelope, one hash. Otherwise a re-encoded
    # copy (unknown, repeated or reordered fields) would carry the same content under
    # another envelope hash, and receipts and de-duplication key on that hash.
    if envelope_pb2.Envelope(header=env.header, sealed=env.sealed).SerializeToString() != data:
        raise OpenError(Reason.MALFORMED, "envelope is not canonically encoded")
    if header.version != PROTOCOL_VERSION:
        raise OpenError(Reason.UNSUPPORTED_VERSION, f"header version {header.version}")
    if (
        len(header.message_id) != MESSAGE_ID_LEN
        or not NODE_ID_RE.fullmatch(header.sender)
        or not NODE_ID_RE.fullmatch(header.recipient)
        or not env.sealed
    ):
        raise OpenError(Reason.MALFORMED, "header field missing or invalid")
    return env, header


def open_envelope(
    data: bytes,
    *,
    me: LocalIdentity,
    keyring: Keyring,
    now_ms: int,
    freshness: Freshness = Freshness(),
    expected_sender: str | None = None,
) -> OpenedEnvelope:
    """Verify and decrypt one envelope addressed to ``me``.

    ``expected_sender`` is the peer authenticated by the transport; a header naming
    anyone else is refused. Raises OpenError (and nothing else) for any bad input.
    """
    env, header = parse_header(data)
    if header.recipient != me.node_id:
        raise OpenError(Reason.WRONG_RECIPIENT, "envelope is for another node")
    if expected_sender is not None and header.sender != expected_sender:
        raise OpenError(Reason.SENDER_MISMATCH, "header sender is not the delivering peer")
    keyring.require(header.sender)
    if header.created_at_ms > now_ms + freshness.max_skew_ms:
        raise OpenError(Reason.FUTURE_DATED, "created_at is in the future")
    if header.created_at_ms < now_ms - freshness.max_age_ms:
        raise OpenError(Reason.EXPIRED, "created_at is older than the retention window")
    sender_public = keyring.signing_key(header.sender, header.sender_key_id, header.created_at_ms)
    key = me.encryption_key(header.recipient_key_id)
    if key is None:
        raise OpenError(Reason.UNKNOWN_RECIPIENT_KEY, "sealed to a key this node does not hold")
    if header.suite != key.suite.value:
        raise OpenError(Reason.SUITE_MISMATCH, "header suite does not match the recipient key")
    try:
        plaintext = key.decrypt(env.sealed, hpke_info(env.header))
    except Exception:  # cryptography raises several types; all mean the same here
        raise OpenError(Reason.DECRYPTION_FAILED, "HPKE open failed") from None
    try:
        signed = envelope_pb2.SignedBody.FromString(plaintext)
    except DecodeError:
        raise OpenError(Reason.MALFORMED, "signed body does not parse") from None
    try:
        ed25519_public_key(sender_public).verify(
            signed.signature, signature_input(env.header, signed.body)
        )
    except InvalidSignature:
        raise OpenError(Reason.BAD_SIGNATURE, "signature does not verify") from None
    try:
        body = notice_pb2.Body.FromString(signed.body)
    except DecodeError:
        raise OpenError(Reason.MALFORMED, "body does not parse") from None
    if body.WhichOneof("content") is None:
        raise OpenError(Reason.MALFORMED, "body carries no content")
    return OpenedEnvelope(
        header, env.header, signed.body, signed.signature, body, envelope_hash(data)
    )


def verify_evidence(
    header_bytes: bytes, body_bytes: bytes, signature: bytes, sender_public: bytes
) -> bool:
    """Check stored evidence (header, body, signature) with the sender's public key."""
    try:
        ed25519_public_key(sender_public).verify(
            signature, signature_input(header_bytes, body_bytes)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
