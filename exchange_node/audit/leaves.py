"""Every audit leaf the node writes about delivery (and the local API's request
refusals) is built here, from plain values.

One function per event, so the attrs of a kind (``docs/audit-format.md``) are decided in
one place and the code that records an event cannot drift from the format. Pure: time is
an argument, nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from exchange_node.audit.leaf import AuditEvent, LeafKind


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def notice_submitted(now: int, actor: str, peer: str, message_id: bytes, kind: str) -> AuditEvent:
    """A local system queued a message for ``peer``."""
    return AuditEvent(
        time=now,
        kind=LeafKind.NOTICE_SUBMITTED,
        actor=actor,
        peer=peer,
        message_id=message_id.hex(),
        attrs={"kind": kind},
    )


def envelope_sent(
    now: int, me: str, peer: str, message_id: bytes, batch_id: bytes, outcome: str, reason: str
) -> AuditEvent:
    """``peer``'s verified receipt settled one of our envelopes with ``outcome``."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_SENT,
        actor=me,
        peer=peer,
        message_id=message_id.hex(),
        reason=reason,
        attrs={"outcome": outcome, "batch_id": batch_id.hex()},
    )


def receipt_received(
    now: int, me: str, peer: str, batch_id: bytes, receipt: bytes, counts: dict[str, int]
) -> AuditEvent:
    """A verified receipt for our batch, with how many envelopes had each outcome."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_RECEIVED,
        actor=me,
        peer=peer,
        attrs={
            "batch_id": batch_id.hex(),
            "receipt_sha256": _sha256(receipt),
            **{k: str(counts.get(k, 0)) for k in ("accepted", "duplicate", "rejected")},
        },
    )


def receipt_refused(
    now: int, peer: str, batch_id: bytes, receipt: bytes, reason: str
) -> AuditEvent:
    """A receipt for our batch that did not verify (the batch stays queued)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_RECEIVED,
        actor=peer,
        peer=peer,
        reason=reason,
        attrs={
            "outcome": "refused",
            "batch_id": batch_id.hex(),
            "receipt_sha256": _sha256(receipt),
        },
    )


def envelope_received(
    now: int,
    sender: str,
    message_id: bytes | None,
    envelope_hash: bytes,
    outcome: str,
    reason: str,
    kind: str,
) -> AuditEvent:
    """One envelope of a peer's batch and what our receipt said of it."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_REJECTED if outcome == "rejected" else LeafKind.ENVELOPE_RECEIVED,
        actor=sender,
        peer=sender,
        message_id=message_id.hex() if message_id else "",
        reason=reason,
        attrs={
            "outcome": outcome,
            "envelope_sha256": envelope_hash.hex(),
            **({"kind": kind} if kind else {}),
        },
    )


def receipt_sent(now: int, me: str, peer: str, batch_id: bytes, receipt: bytes) -> AuditEvent:
    """The signed receipt we answered ``peer``'s batch with."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_SENT,
        actor=me,
        peer=peer,
        attrs={"batch_id": batch_id.hex(), "receipt_sha256": _sha256(receipt)},
    )


def batch_refused(
    now: int, peer: str, code: str, attrs: dict[str, str] | None = None
) -> AuditEvent:
    """A batch refused as a whole (oversized, malformed, unknown peer)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_REJECTED,
        actor=peer or "unknown",
        peer=peer,
        reason=code,
        attrs={"scope": "batch", **(attrs or {})},
    )


def request_refused(now: int, actor: str, operation: str, code: str) -> AuditEvent:
    """A local API request refused for how it was made, not for its content (an
    ``Idempotency-Key`` malformed or reused with another request)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.REQUEST_REFUSED,
        actor=actor,
        reason=code,
        attrs={"operation": operation},
    )


def settlement(
    now: int,
    me: str,
    peer: str,
    batch_id: bytes,
    receipt: bytes,
    settled: Sequence[tuple[bytes, str, str]],
) -> list[AuditEvent]:
    """The leaves of one receipt's settlement: ``envelope.sent`` per (message id,
    outcome, reason), then ``receipt.received`` with the counts."""
    counts: dict[str, int] = {}
    events = []
    for message_id, outcome, reason in settled:
        counts[outcome] = counts.get(outcome, 0) + 1
        events.append(envelope_sent(now, me, peer, message_id, batch_id, outcome, reason))
    events.append(receipt_received(now, me, peer, batch_id, receipt, counts))
    return events
