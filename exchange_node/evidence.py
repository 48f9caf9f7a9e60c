"""Proof of delivery: one file a court's expert can check offline (user story 14).

A delivery proof holds, for one message to one recipient: the sealed envelope as sent,
the recipient's signed receipt listing that envelope's hash as ACCEPTED (or DUPLICATE),
the recipient's node card as this node pinned it, and an audit bundle proving the
sender's ``envelope.sent`` and ``receipt.received`` entries against a signed checkpoint.

:func:`verify_proof` needs nothing but the file (and, ideally, the recipient's card
fingerprint and the sender's audit key obtained out of band). It never raises for a bad
file; every problem is in the report.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from exchange_node.audit.bundle import verify_bundle
from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.protocol.cards import normalise_fingerprint, verify_card
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keys import ed25519_public_key
from exchange_node.protocol.receipts import outcome_name, receipt_signature_input

PROOF_FORMAT = "exchange-node/delivery-proof/v1"


class DeliveryProof(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    sender: str
    recipient: str
    message_id: str  # hex
    envelope: str  # base64 of the Envelope bytes as sent
    receipt: str  # base64 of the SignedReceipt bytes as received
    recipient_card: str  # base64 of the SignedCard the sender had pinned
    audit_bundle: str  # base64 of the sender's audit bundle (docs/audit-format.md)


@dataclass
class ProofReport:
    ok: bool = False
    sender: str = ""
    recipient: str = ""
    message_id: str = ""
    outcome: str = ""
    received_at_ms: int = 0
    recipient_fingerprint: str = ""
    audit_key_fingerprint: str = ""
    problems: list[str] = field(default_factory=list)


def build_proof(
    *,
    sender: str,
    recipient: str,
    message_id: bytes,
    envelope: bytes,
    receipt: bytes,
    recipient_card: bytes,
    audit_bundle: bytes,
) -> bytes:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return msgspec.json.format(
        msgspec.json.encode(
            DeliveryProof(
                format=PROOF_FORMAT,
                sender=sender,
                recipient=recipient,
                message_id=message_id.hex(),
                envelope=b64(envelope),
                receipt=b64(receipt),
                recipient_card=b64(recipient_card),
                audit_bundle=b64(audit_bundle),
            )
        )
    )


def verify_proof(
    data: bytes,
    *,
    recipient_fingerprint: str | None = None,
    audit_key: Ed25519PublicKey | None = None,
) -> ProofReport:
    """Check a delivery proof offline; see the module docstring."""
    r = ProofReport()
    try:
        p = msgspec.json.decode(data, type=DeliveryProof)
        envelope = base64.b64decode(p.envelope, validate=True)
        signed = base64.b64decode(p.receipt, validate=True)
        card_bytes = base64.b64decode(p.recipient_card, validate=True)
        bundle = base64.b64decode(p.audit_bundle, validate=True)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        r.problems.append(f"proof_malformed: {exc}")
        return r
    if p.format != PROOF_FORMAT:
        r.problems.append(f"proof_format_unknown: {p.format!r}")
        return r
    r.sender, r.recipient, r.message_id = p.sender, p.recipient, p.message_id
    try:
        card = verify_card(card_bytes)
    except OpenError as exc:
        r.problems.append(f"card_invalid: {exc.reason.value}")
        return r
    r.recipient_fingerprint = card.fingerprint
    if card.node_id != p.recipient:
        r.problems.append("card_mismatch: the card is not the recipient's")
    if (
        recipient_fingerprint is not None
        and normalise_fingerprint(recipient_fingerprint) != card.fingerprint
    ):
        r.problems.append("card_untrusted: the card's fingerprint is not the one given")
    try:
        sr = envelope_pb2.SignedReceipt.FromString(signed)
        receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    except DecodeError:
        r.problems.append("receipt_malformed")
        return r
    key = card.signing_key(receipt.signer_key_id)
    try:
        if key is None:
            raise InvalidSignature
        ed25519_public_key(key.public).verify(sr.signature, receipt_signature_input(sr.receipt))
    except InvalidSignature:
        r.problems.append("receipt_signature_invalid: not signed by a key on the recipient's card")
    if receipt.receiver != p.recipient or receipt.sender != p.sender:
        r.problems.append("receipt_parties_mismatch")
    r.received_at_ms = receipt.received_at_ms
    h = hashlib.sha256(envelope).digest()
    listed = [o for o in receipt.outcomes if o.envelope_hash == h]
    if not listed:
        r.problems.append("envelope_not_in_receipt: the receipt does not list this envelope")
    else:
        r.outcome = outcome_name(listed[0].outcome)
        if r.outcome not in ("accepted", "duplicate"):
            r.problems.append(f"not_delivered: the receipt says {r.outcome}")
    try:
        header = envelope_pb2.EnvelopeHeader.FromString(
            envelope_pb2.Envelope.FromString(envelope).header
        )
        if (
            header.message_id.hex() != p.message_id
            or header.recipient != p.recipient
            or header.sender != p.sender
        ):
            r.problems.append("envelope_header_mismatch")
    except DecodeError:
        r.problems.append("envelope_malformed")
    audit = verify_bundle(bundle, audit_key)
    r.audit_key_fingerprint = audit.key_fingerprint
    if not audit.ok:
        r.problems += [f"audit: {x}" for x in audit.problems]
    elif not any(leaf.message_id == p.message_id for leaf in audit.leaves):
        r.problems.append("audit_entry_missing: the bundle proves no entry for this message")
    r.ok = not r.problems
    return r
