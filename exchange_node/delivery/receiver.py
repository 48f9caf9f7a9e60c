"""The inbound half of delivery: one batch in, one signed receipt out.

Order of work for a batch from an authenticated peer:

1. every envelope is opened and checked (protocol core, on crypto threads when the
   batch is large), then against policy; failures become REJECTED with a wire reason;
2. in ONE transaction (:func:`apply_envelopes`, then the caller), in batch order, each
   envelope that passed is de-duplicated by (sender, message id) and stored, and its
   content is checked against what the store holds at that moment and applied by the
   content handlers (the domain's rules for notices and case steps, and the rows they
   write). An envelope refused at this step is rolled back alone: nothing of it is left
   for the next one to build on. Then the receipt, signed over the exact outcome list,
   and the audit leaves for every envelope and for the receipt;
3. the commit: ACCEPTED in the receipt means stored, applied and audited.

Nothing a peer sends can make this raise except a store failure, in which case no
receipt is given and the sender retries: at-least-once on the wire, exactly-once in
effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from google.protobuf.message import DecodeError

from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.protocol.cards import PeerCard
from exchange_node.protocol.envelope import Freshness, OpenedEnvelope, envelope_hash, open_envelope
from exchange_node.protocol.errors import OpenError, Reason, wire_reason
from exchange_node.protocol.ids import time_ordered_id
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.protocol.keys import SigningKey
from exchange_node.protocol.receipts import Outcome, build_receipt
from exchange_node.store.records import InboxItem
from exchange_node.store.records import Outcome as StoreOutcome

from .outbox import POLICY_KINDS

if TYPE_CHECKING:
    from exchange_node.store.sqlite import SqliteTransaction

log = structlog.get_logger("exchange_node.receiver")

MAX_BATCH_ENVELOPES = 500


class BatchRefused(Exception):
    """The batch as a whole is refused (HTTP 4xx); no envelope in it was processed."""

    def __init__(self, status: int, code: str, message: str, **attrs: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # Identifiers for the audit leaf (e.g. the sender a batch claimed to be from).
        self.attrs = attrs


@dataclass(frozen=True)
class EnvelopeResult:
    index: int
    envelope_hash: bytes
    message_id: bytes
    outcome: int
    reason: Reason | None
    kind: str
    opened: OpenedEnvelope | None


ContentHandler = Callable[["SqliteTransaction", PeerCard, OpenedEnvelope, str, int], None]
"""Checks a stored envelope's content against the store as the receiving transaction
sees it and writes what it implies, through that transaction: ``(tx, sender's card,
opened, kind, now)``. Raises ``OpenError(reason)`` to reject it (its writes, and the
envelope's inbox row, are then rolled back). Must change nothing outside ``tx``: the
transaction may be run again."""


def body_kind(opened: OpenedEnvelope) -> str:
    return opened.body.WhichOneof("content") or ""


@dataclass
class ReceiverContext:
    me: LocalIdentity
    keyring: Keyring
    freshness: Freshness
    policy: Callable[[str], Sequence[str]]


def parse_batch(data: bytes, peer_id: str | None) -> envelope_pb2.Batch:
    """Parse a Batch and check the batch-level rules; BatchRefused otherwise."""
    try:
        batch = envelope_pb2.Batch.FromString(data)
    except DecodeError:
        raise BatchRefused(400, "batch_malformed", "the body is not an exchange.v1.Batch") from None
    if len(batch.batch_id) != 16:
        raise BatchRefused(400, "batch_malformed", "batch_id must be 16 bytes")
    if peer_id is not None and batch.sender != peer_id:
        raise BatchRefused(403, "sender_mismatch", "batch sender is not the authenticated peer")
    if len(batch.envelopes) > MAX_BATCH_ENVELOPES:
        raise BatchRefused(
            413, "batch_too_many", f"at most {MAX_BATCH_ENVELOPES} envelopes per batch"
        )
    return batch


def open_envelopes(
    ctx: ReceiverContext, sender: str, envelopes: Sequence[bytes], first_index: int, now_ms: int
) -> list[EnvelopeResult]:
    """Phase one: the cryptography and the sender's policy, for a slice of a batch.

    Touches no store and mutates nothing shared, so slices may run on worker threads
    (the cryptography releases the GIL)."""
    results = []
    allowed = set(ctx.policy(sender))
    for i, data in enumerate(envelopes, first_index):
        try:
            opened = open_envelope(
                data,
                me=ctx.me,
                keyring=ctx.keyring,
                now_ms=now_ms,
                freshness=ctx.freshness,
                expected_sender=sender,
            )
            kind = body_kind(opened)
            if kind in POLICY_KINDS and kind not in allowed:
                raise OpenError(Reason.POLICY_DENIED, f"{kind} not allowed from {sender}")
        except OpenError as exc:
            results.append(_rejected(sender, i, envelope_hash(data), _message_id_of(data), exc))
            continue
        results.append(
            EnvelopeResult(
                i,
                opened.envelope_hash,
                opened.message_id,
                envelope_pb2.OUTCOME_ACCEPTED,
                None,
                kind,
                opened,
            )
        )
    return results


def apply_envelopes(
    tx: SqliteTransaction,
    card: PeerCard,
    results: Sequence[EnvelopeResult],
    handlers: Sequence[ContentHandler],
    received_at: int,
) -> list[EnvelopeResult]:
    """Phase two, inside the receiving transaction, in batch order: store each opened
    envelope (ACCEPTED, DUPLICATE, or REJECTED ``message_id_reused``) and, when it is
    new, let the handlers check and apply its content; a handler's refusal rolls the
    envelope back alone and makes it REJECTED. The outcomes, in batch order."""
    out = []
    for r in results:
        if r.opened is None:
            out.append(r)
            continue
        try:
            with tx.savepoint():
                [stored] = tx.accept([_inbox_item(r, received_at)])
                if stored.outcome is StoreOutcome.ACCEPTED:
                    for handle in handlers:
                        handle(tx, card, r.opened, r.kind, received_at)
        except OpenError as exc:
            out.append(_rejected(card.node_id, r.index, r.envelope_hash, r.message_id, exc))
            continue
        if stored.outcome is StoreOutcome.REJECTED:
            log.warning(
                "envelope.rejected",
                peer=card.node_id,
                message_id=r.message_id.hex(),
                reason=stored.reason,
                detail="the message id was already used for another envelope",
            )
        reason = Reason(stored.reason) if stored.outcome is StoreOutcome.REJECTED else None
        out.append(
            EnvelopeResult(
                r.index,
                r.envelope_hash,
                r.message_id,
                _STORE_TO_WIRE[stored.outcome],
                reason,
                r.kind,
                r.opened,
            )
        )
    return out


def _rejected(sender: str, index: int, h: bytes, mid: bytes, exc: OpenError) -> EnvelopeResult:
    log.warning(
        "envelope.rejected",
        peer=sender,
        message_id=mid.hex(),
        reason=exc.reason.value,
        detail=exc.detail,
    )
    return EnvelopeResult(index, h, mid, envelope_pb2.OUTCOME_REJECTED, exc.reason, "", None)


def _message_id_of(data: bytes) -> bytes:
    try:
        return envelope_pb2.EnvelopeHeader.FromString(
            envelope_pb2.Envelope.FromString(data).header
        ).message_id[:16]
    except DecodeError:
        return b""


def _inbox_item(r: EnvelopeResult, received_at: int) -> InboxItem:
    return InboxItem(
        sender=r.opened.sender,
        message_id=r.message_id,
        envelope_hash=r.envelope_hash,
        kind=r.kind,
        header=r.opened.header_bytes,
        body=r.opened.body_bytes,
        signature=r.opened.signature,
        received_at=received_at,
    )


_STORE_TO_WIRE = {
    StoreOutcome.ACCEPTED: envelope_pb2.OUTCOME_ACCEPTED,
    StoreOutcome.DUPLICATE: envelope_pb2.OUTCOME_DUPLICATE,
    StoreOutcome.REJECTED: envelope_pb2.OUTCOME_REJECTED,
}


def sign_receipt(
    *,
    me: LocalIdentity,
    signing_key: SigningKey,
    batch: envelope_pb2.Batch,
    results: Sequence[EnvelopeResult],
    now_ms: int,
    checkpoint: bytes,
) -> bytes:
    return build_receipt(
        batch_id=batch.batch_id,
        receiver=me.node_id,
        sender=batch.sender,
        received_at_ms=now_ms,
        outcomes=[
            Outcome(
                r.envelope_hash,
                r.message_id,
                r.outcome,
                wire_reason(r.reason) if r.reason is not None else 0,
            )
            for r in results
        ],
        signing_key=signing_key,
        checkpoint=checkpoint,
    )


def new_batch_id(now_ms: int) -> bytes:
    return time_ordered_id(now_ms)
