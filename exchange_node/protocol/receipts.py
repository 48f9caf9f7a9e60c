"""Batch receipts: the receiver's signed statement of what happened to each envelope.

A receipt lists, in batch order, SHA-256 of each exact envelope received with its
outcome. The sender checks that the list matches what it sent, hash by hash, before
it treats anything as delivered, and keeps the signed bytes as proof of delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from exchange_node.pb.exchange.v1 import envelope_pb2

from .errors import OpenError, Reason
from .framing import LABEL_RECEIPT_SIGNATURE, frame
from .keyring import Keyring
from .keys import SigningKey, ed25519_public_key

RECEIPT_VERSION = 1
_KNOWN_OUTCOMES = frozenset(
    {envelope_pb2.OUTCOME_ACCEPTED, envelope_pb2.OUTCOME_DUPLICATE, envelope_pb2.OUTCOME_REJECTED}
)


@dataclass(frozen=True)
class Outcome:
    envelope_hash: bytes
    message_id: bytes
    outcome: int  # exchange.v1.Outcome
    reason: int = 0  # exchange.v1.Reason


@dataclass(frozen=True)
class VerifiedReceipt:
    signed: bytes
    receipt: envelope_pb2.BatchReceipt
    outcomes: tuple[Outcome, ...]

    @property
    def checkpoint(self) -> bytes:
        return self.receipt.checkpoint


def outcome_name(outcome: int) -> str:
    """Stable lower-case name of an ``exchange.v1.Outcome``, e.g. ``accepted``."""
    return envelope_pb2.Outcome.Name(outcome).removeprefix("OUTCOME_").lower()


def receipt_signature_input(receipt_bytes: bytes) -> bytes:
    return frame(LABEL_RECEIPT_SIGNATURE, receipt_bytes)


def build_receipt(
    *,
    batch_id: bytes,
    receiver: str,
    sender: str,
    received_at_ms: int,
    outcomes: Sequence[Outcome],
    signing_key: SigningKey,
    checkpoint: bytes = b"",
) -> bytes:
    """Sign a receipt; return SignedReceipt bytes."""
    receipt = envelope_pb2.BatchReceipt(
        version=RECEIPT_VERSION,
        batch_id=batch_id,
        receiver=receiver,
        sender=sender,
        received_at_ms=received_at_ms,
        outcomes=[
            envelope_pb2.EnvelopeOutcome(
                envelope_hash=o.envelope_hash,
                message_id=o.message_id,
                outcome=o.outcome,
                reason=o.reason,
            )
            for o in outcomes
        ],
        signer_key_id=signing_key.key_id,
        checkpoint=checkpoint,
    ).SerializeToString()
    signature = signing_key.sign(receipt_signature_input(receipt))
    return envelope_pb2.SignedReceipt(receipt=receipt, signature=signature).SerializeToString()


def verify_receipt(
    signed: bytes,
    *,
    keyring: Keyring,
    receiver: str,
    sender: str,
    batch_id: bytes,
    envelope_hashes: Sequence[bytes],
) -> VerifiedReceipt:
    """Verify a receipt for the batch we sent. OpenError on any mismatch.

    The receiver's signing key must be on its pinned card and not revoked; the receipt
    must name this batch, both nodes, and list exactly our envelope hashes in order.
    """
    try:
        sr = envelope_pb2.SignedReceipt.FromString(signed)
    except DecodeError:
        raise OpenError(Reason.MALFORMED, "receipt does not parse") from None
    try:
        receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    except DecodeError:
        raise OpenError(Reason.MALFORMED, "receipt body does not parse") from None
    public = keyring.signing_key(receiver, receipt.signer_key_id, receipt.received_at_ms)
    try:
        ed25519_public_key(public).verify(sr.signature, receipt_signature_input(sr.receipt))
    except InvalidSignature:
        raise OpenError(Reason.BAD_SIGNATURE, "receipt signature does not verify") from None
    if receipt.version != RECEIPT_VERSION:
        raise OpenError(Reason.UNSUPPORTED_VERSION, f"receipt version {receipt.version}")
    if receipt.receiver != receiver or receipt.sender != sender or receipt.batch_id != batch_id:
        raise OpenError(Reason.MALFORMED, "receipt names another batch or node")
    got = [o.envelope_hash for o in receipt.outcomes]
    if got != list(envelope_hashes):
        raise OpenError(Reason.MALFORMED, "receipt does not list exactly the envelopes sent")
    outcomes = tuple(
        Outcome(o.envelope_hash, o.message_id, o.outcome, o.reason) for o in receipt.outcomes
    )
    for o in outcomes:
        rejected = o.outcome == envelope_pb2.OUTCOME_REJECTED
        if o.outcome not in _KNOWN_OUTCOMES or rejected != (o.reason != 0):
            # A REJECTED without a reason, or an ACCEPTED with one, is not an answer
            # the sender can act on: treat the whole receipt as malformed.
            raise OpenError(Reason.MALFORMED, "receipt outcome and reason do not agree")
    return VerifiedReceipt(signed, receipt, outcomes)
