"""Proof of delivery: one file a court's expert can check offline (user story 14).

A delivery proof holds, for one message to one recipient: the sealed envelope as sent,
the recipient's signed receipt listing that envelope's hash as ACCEPTED (or DUPLICATE),
the recipient's node card as this node pinned it, and an audit bundle of the sender's
own log proving its ``envelope.sent`` entry for that message and batch (and the
``receipt.received`` entry for the receipt) against a signed checkpoint.

:func:`verify_proof` needs nothing but the file and the recipient's card fingerprint
obtained out of band (and, ideally, the sender's audit key). Without the fingerprint the
file may be consistent but nothing ties it to the recipient: ``established`` stays
False. It never raises for a bad file; every problem is in the report
(docs/audit-format.md section 11 lists the checks and codes).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from exchange_node.audit.bundle import verify_bundle
from exchange_node.audit.checkpoint import log_origins, origin_for
from exchange_node.audit.leaf import LeafKind
from exchange_node.audit.strict_json import duplicate_key
from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.protocol.cards import normalise_fingerprint, verify_card
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keys import ed25519_public_key
from exchange_node.protocol.receipts import (
    RECEIPT_VERSION,
    outcome_name,
    receipt_signature_input,
)

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
    """``ok``: every check passed. ``established``: ok *and* the recipient's card is the
    one whose fingerprint was given; only then does the file prove the delivery.
    ``fingerprint_matches`` / ``audit_key_matches``: None when nothing was given to
    compare with."""

    ok: bool = False
    established: bool = False
    sender: str = ""
    recipient: str = ""
    message_id: str = ""
    batch_id: str = ""
    outcome: str = ""
    received_at_ms: int = 0
    recipient_fingerprint: str = ""
    recipient_card_serial: int = 0
    fingerprint_matches: bool | None = None
    audit_key_fingerprint: str = ""
    audit_key_matches: bool | None = None
    problems: list[str] = field(default_factory=list)
    # The sender erased the record this message carried: the proof of delivery still
    # holds (the envelope as sent is sealed to the recipient), the content is gone.
    purged: list[str] = field(default_factory=list)


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


def proof_of_delivery(
    store, log, keys: Sequence[bytes], sender: str, message_id: bytes, peer_id: str
) -> bytes:
    """The proof file of ``message_id``'s delivery to ``peer_id`` from what this node
    holds: the envelope, the receipt, the pinned card and an audit bundle of the
    entries the proof relies on, against the log's latest checkpoint (sign one first to
    cover the latest entries). ``NotFoundError``/``ConflictError`` say what is missing."""
    from exchange_node.audit.bundle import export_bundle
    from exchange_node.audit.log import LeafFilter
    from exchange_node.errors import ConflictError, NotFoundError

    rows = [r for r in store.message_status(message_id) if r.peer_id == peer_id]
    if not rows:
        raise NotFoundError(
            "message_not_found", f"no message {message_id.hex()} was sent to {peer_id}"
        )
    row = rows[0]
    if row.receipt_id is None:
        raise ConflictError(
            "no_receipt_yet",
            f"message {message_id.hex()} to {peer_id} has no receipt yet (state {row.state})",
        )
    envelope = store.get_outbox(row.outbox_id).envelope
    receipt = store.get_receipt(row.receipt_id).receipt
    peer = store.get_peer(peer_id)
    if peer is None:
        raise ConflictError(
            "peer_not_pinned", f"{peer_id} is no longer pinned: its card is not available"
        )
    batch_id = envelope_pb2.BatchReceipt.FromString(
        envelope_pb2.SignedReceipt.FromString(receipt).receipt
    ).batch_id.hex()
    entries = [
        *log.iter_query(LeafFilter(message_id=message_id.hex(), peer=peer_id)),
        *(
            leaf
            for leaf in log.iter_query(LeafFilter(kind="receipt.received", peer=peer_id))
            if leaf.record.attrs.get("batch_id") == batch_id and not leaf.record.reason
        ),
    ]
    bundle = export_bundle(log, sorted(entries, key=lambda leaf: leaf.seq), list(keys))
    return build_proof(
        sender=sender,
        recipient=peer_id,
        message_id=message_id,
        envelope=envelope,
        receipt=receipt,
        recipient_card=peer.card,
        audit_bundle=bundle,
    )


def verify_proof(
    data: bytes,
    *,
    recipient_fingerprint: str | None = None,
    audit_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
) -> ProofReport:
    """Check a delivery proof offline; see the module docstring."""
    r = ProofReport()
    dup = duplicate_key(data)
    if dup is not None:
        r.problems.append(f"proof_duplicate_key: the key {dup!r} appears twice in one object")
        return r
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
    r.recipient_card_serial = card.serial
    if card.node_id != p.recipient:
        r.problems.append("card_mismatch: the card is not the recipient's")
    if recipient_fingerprint is not None:
        r.fingerprint_matches = normalise_fingerprint(recipient_fingerprint) == card.fingerprint
        if not r.fingerprint_matches:
            r.problems.append(
                "card_untrusted: the card's fingerprint is not the one given: this card is"
                " not the recipient's as its operator knows it"
            )
    try:
        sr = envelope_pb2.SignedReceipt.FromString(signed)
        receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    except DecodeError:
        r.problems.append("receipt_malformed: the receipt does not parse")
        return r
    r.batch_id = receipt.batch_id.hex()
    r.received_at_ms = receipt.received_at_ms
    key = card.signing_key(receipt.signer_key_id)
    try:
        if key is None:
            raise InvalidSignature
        ed25519_public_key(key.public).verify(sr.signature, receipt_signature_input(sr.receipt))
    except InvalidSignature:
        r.problems.append("receipt_signature_invalid: not signed by a key on the recipient's card")
    else:
        if not key.valid_at(receipt.received_at_ms):
            r.problems.append(
                "receipt_key_not_valid: the card's key was not valid when the receipt says it"
                " was made (protocol 11.4 step 2)"
            )
    r.problems += _receipt_rules(receipt, p)
    h = hashlib.sha256(envelope).digest()
    listed = [o for o in receipt.outcomes if o.envelope_hash == h]
    if not listed:
        r.problems.append("envelope_not_in_receipt: the receipt does not list this envelope")
    elif len(listed) > 1:
        r.problems.append("receipt_malformed: the receipt lists this envelope more than once")
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
    r.problems += _audit_checks(r, p, bundle, audit_key, hashlib.sha256(signed).hexdigest())
    r.ok = not r.problems
    r.established = r.ok and r.fingerprint_matches is True
    return r


def _receipt_rules(receipt: envelope_pb2.BatchReceipt, p: DeliveryProof) -> list[str]:
    """Protocol 11.4 steps 4, 5 and 7 as far as one envelope of the batch allows (step 6,
    every envelope of the batch in order, needs the others; the sender checked it)."""
    problems = []
    if receipt.version != RECEIPT_VERSION:
        problems.append(f"receipt_version_unsupported: version {receipt.version}")
    if receipt.receiver != p.recipient or receipt.sender != p.sender:
        problems.append("receipt_parties_mismatch: the receipt names other nodes")
    if not receipt.batch_id:
        problems.append("receipt_malformed: the receipt names no batch")
    known = {
        envelope_pb2.OUTCOME_ACCEPTED,
        envelope_pb2.OUTCOME_DUPLICATE,
        envelope_pb2.OUTCOME_REJECTED,
    }
    for i, o in enumerate(receipt.outcomes):
        if o.outcome not in known:
            problems.append(
                f"receipt_outcome_invalid: outcome {i} is not accepted, duplicate or rejected"
            )
        elif (o.outcome == envelope_pb2.OUTCOME_REJECTED) != (o.reason != 0):
            problems.append(
                f"receipt_outcome_invalid: outcome {i} is {outcome_name(o.outcome)}"
                + (" without a reason" if o.reason == 0 else " with a reason")
            )
    return problems


def _audit_checks(
    r: ProofReport,
    p: DeliveryProof,
    bundle: bytes,
    audit_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
    receipt_sha256: str,
) -> list[str]:
    audit = verify_bundle(bundle, audit_key)
    r.audit_key_fingerprint = audit.key_fingerprint
    if audit_key is not None:
        r.audit_key_matches = audit.key_trusted
    problems = [f"audit: {x}" for x in audit.problems]
    r.purged = list(audit.purged)
    if audit.origin and audit.origin not in log_origins(origin_for(p.sender)):
        problems.append(
            f"audit_origin_mismatch: the bundle is the log {audit.origin!r}, not the"
            f" sender's {origin_for(p.sender)!r}"
        )
    if problems:
        return problems
    sent = [
        leaf
        for leaf in audit.leaves
        if leaf.kind == LeafKind.ENVELOPE_SENT
        and leaf.message_id == p.message_id
        and leaf.peer == p.recipient
        and leaf.attrs.get("batch_id") == r.batch_id
    ]
    if not sent:
        return [
            "audit_entry_missing: the bundle proves no envelope.sent entry for this message"
            f" to {p.recipient} in batch {r.batch_id}"
        ]
    if r.outcome and all(leaf.attrs.get("outcome") != r.outcome for leaf in sent):
        return [f"audit_entry_mismatch: the sender's log records another outcome than {r.outcome}"]
    for leaf in audit.leaves:
        if (
            leaf.kind == LeafKind.RECEIPT_RECEIVED
            and not leaf.reason
            and leaf.attrs.get("batch_id") == r.batch_id
            and leaf.attrs.get("receipt_sha256") != receipt_sha256
        ):
            return [
                f"audit_receipt_mismatch: the sender's log (seq {leaf.seq}) records another"
                " receipt for this batch"
            ]
    return []
