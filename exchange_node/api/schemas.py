"""Request and response bodies of the local JSON API (``/api/v1``).

Every body is a msgspec Struct: requests are decoded and validated into them (unknown
fields refused), responses encoded from them, and the OpenAPI document's schemas are
generated from them (``api/openapi.py``), so the three cannot drift apart.

Times are Unix milliseconds; ids (notice, message, event) lowercase hex.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

NoticeKindName = Literal[
    "STOLEN",
    "LOST",
    "REVOKED",
    "INVALIDATED",
    "STOLEN_BLANK",
    "COUNTERFEIT",
    "FORGED",
    "PSEUDO",
    "FRAUDULENTLY_OBTAINED",
    "IMPOSTOR",
    "WITHDRAWAL",
]
CaseRoleName = Literal["IDENTIFYING_STATE", "ORIGIN_STATE", "IOM", "OTHER"]
CaseEventName = Literal[
    "open_case",
    "record_consent",
    "record_assessment",
    "accept_return",
    "request_travel_document",
    "issue_travel_document",
    "plan_travel",
    "depart",
    "confirm_arrival",
    "start_reintegration",
    "report_reintegration",
    "start_monitoring",
    "close_case",
    "withdraw_consent",
    "suspend",
    "resume",
    "cancel",
]
PurgeReasonName = Literal["retention", "erasure_request", "withdrawn_by_source", "rectified"]
DeliveryState = Literal["queued", "sent", "accepted", "duplicate", "rejected", "dead"]
Millis = Annotated[int, Meta(ge=0, le=2**53 - 1)]
Hex16 = Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]
ShortText = Annotated[str, Meta(max_length=200)]
Remarks = Annotated[str, Meta(max_length=1000)]
NodeId = Annotated[str, Meta(min_length=1, max_length=64)]


class Problem(Struct, omit_defaults=False):
    """RFC 9457 problem details, with a stable ``code`` and the offending ``field``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


# --- documents and notices -----------------------------------------------------------------


class DocumentIn(Struct, forbid_unknown_fields=True):
    """A travel document: ICAO issuing state code, number, type code ("" if unknown) and
    optionally the MRZ lines joined with newlines (verified, and must agree)."""

    issuing_state: Annotated[str, Meta(max_length=3)]
    document_number: Annotated[str, Meta(max_length=44)]
    document_type: Annotated[str, Meta(max_length=2)] = ""
    mrz: Annotated[str, Meta(max_length=100)] = ""


class DetectionIn(Struct, forbid_unknown_fields=True):
    place: Annotated[str, Meta(max_length=100)]
    detected_at_ms: Millis
    authority: ShortText = ""


class NoticeRequest(Struct, forbid_unknown_fields=True):
    """A notice to send. ``kind`` picks the family: a status (issuing state only), a
    fraud detection (needs ``detection``) or ``WITHDRAWAL``. With ``supersedes`` (the
    notice id of one of this node's notices) it is a correction that replaces that
    notice, or withdraws it for ``WITHDRAWAL`` (then ``document`` may be omitted).
    ``recipients``: ``"all"`` (every peer whose policy allows the kind) or node ids (at
    least one; an empty list is refused with ``recipients_empty``)."""

    kind: NoticeKindName
    document: DocumentIn | None = None
    recipients: list[NodeId] | Literal["all"] = "all"
    effective_at_ms: Millis = 0
    detection: DetectionIn | None = None
    supersedes: Hex16 | None = None
    reason: Remarks = ""
    remarks: Remarks = ""


class MessageRef(Struct):
    recipient: str
    message_id: str


class NoticeAccepted(Struct):
    notice_id: str
    kind: str
    messages: list[MessageRef]


MAX_BATCH = 1000
"""Most notices in one batch submission (the body is also limited to 1 MiB)."""


class NoticeBatchRequest(Struct, forbid_unknown_fields=True):
    """Notices to send together: all are checked first, then all are indexed and queued
    in one transaction, or none is. A refusal names the first bad notice by its index
    (``notices[17].document``). Two notices of a batch may not supersede the same
    notice."""

    notices: Annotated[list[NoticeRequest], Meta(min_length=1, max_length=MAX_BATCH)]


class NoticeBatchAccepted(Struct):
    """One answer per notice, in the order they were sent."""

    notices: list[NoticeAccepted]


class IdempotencyRecordOut(Struct):
    """What this token's request with ``key`` did: its method and path, the SHA-256 of
    its method, path and canonical body, and the answer it got (``status`` and the JSON
    ``response``, which a retry with the same key and request is answered with again)."""

    key: str
    method: str
    path: str
    request_sha256: str
    status: int
    created_at_ms: int
    response: Annotated[
        msgspec.Raw, Meta(extra_json_schema={"type": "object"}, description="the answer")
    ]


class Receipt(Struct):
    """A signed batch receipt from the recipient, as received (base64)."""

    receipt_id: int
    peer: str
    received_at_ms: int
    signed_receipt: str


class RecipientDelivery(Struct):
    recipient: str
    state: DeliveryState
    attempts: int
    created_at_ms: int
    last_attempt_at_ms: int | None
    last_error: str | None
    delivered_at_ms: int | None
    reason: str | None
    receipt: Receipt | None


class MessageStatus(Struct):
    message_id: str
    recipients: list[RecipientDelivery]


class DocumentOut(Struct):
    issuing_state: str
    document_type: str
    document_number: str


class DetectionOut(Struct):
    place: str
    detected_at_ms: int
    authority: str


class NoticeOut(Struct):
    notice_id: str
    kind: str
    sender_node: str
    sender_country: str
    document: DocumentOut
    issued_at_ms: int
    effective_at_ms: int | None
    supersedes: str | None
    detection: DetectionOut | None
    remarks: str
    reason: str
    message_id: str | None


class HistoryEntryOut(Struct):
    notice: NoticeOut
    in_effect: bool
    superseded_by: str | None
    withdrawn: bool
    anomaly: str | None


class DocumentRecordOut(Struct):
    """What is known about one document: the current status (None if no status notice
    is in effect), fraud detections in effect, and the whole history, oldest first."""

    document: DocumentOut
    status: str | None
    status_notice_id: str | None
    fraud: list[str]
    history: list[HistoryEntryOut]
    sources: list[str]
    notice_ids: list[str]


class LookupAnswer(Struct):
    issuing_state: str
    document_number: str
    document_type: str
    known: bool
    records: list[DocumentRecordOut]


class DocumentQuery(Struct, forbid_unknown_fields=True):
    issuing_state: Annotated[str, Meta(max_length=3)]
    document_number: Annotated[str, Meta(max_length=44)]
    document_type: Annotated[str, Meta(max_length=2)] = ""


class LookupRequest(Struct, forbid_unknown_fields=True):
    documents: Annotated[list[DocumentQuery], Meta(min_length=1, max_length=1000)]


class LookupBatchAnswer(Struct):
    results: list[LookupAnswer]


class InboxItem(Struct):
    cursor: str
    sender: str
    message_id: str
    received_at_ms: int
    kind: str
    notice: NoticeOut | None


class InboxPage(Struct):
    """``next_cursor`` goes in ``after`` of the next request (opaque)."""

    items: list[InboxItem]
    next_cursor: str


# --- cases ---------------------------------------------------------------------------------


class ParticipantIn(Struct, forbid_unknown_fields=True):
    node_id: NodeId
    role: CaseRoleName


class PersonalDataIn(Struct, forbid_unknown_fields=True):
    """Only what participants need; stored encrypted, sent only to participants."""

    full_name: ShortText = ""
    date_of_birth: Annotated[str, Meta(max_length=10)] = ""
    nationality: Annotated[str, Meta(max_length=3)] = ""
    sex: Annotated[str, Meta(max_length=1)] = ""
    languages: ShortText = ""
    special_needs: ShortText = ""


class CaseOpenRequest(Struct, forbid_unknown_fields=True):
    participants: Annotated[list[ParticipantIn], Meta(min_length=1, max_length=16)]
    personal_data: PersonalDataIn | None = None
    note: Annotated[str, Meta(max_length=2000)] = ""


class CaseEventRequest(Struct, forbid_unknown_fields=True):
    type: CaseEventName
    note: Annotated[str, Meta(max_length=2000)] = ""


class ParticipantOut(Struct):
    node_id: str
    role: str


class StepDelivery(Struct):
    recipient: str
    message_id: str
    state: DeliveryState
    receipt_id: int | None


class TimelineEntryOut(Struct):
    sequence: int
    type: str
    actor: str
    actor_role: str
    at_ms: int
    from_status: str
    to_status: str
    performed_by: str
    note: str
    received_message_id: str | None
    deliveries: list[StepDelivery]


class PurgeOut(Struct):
    """A record whose personal content this node destroyed: why, who approved, when."""

    record: str
    record_type: str
    reason: PurgeReasonName
    approver: str
    purged_at_ms: int
    # The purge notices sent to the peers that held the record, each with its delivery
    # state: ``accepted`` (or ``duplicate``) with a receipt id means the peer confirmed.
    confirmations: list[StepDelivery] = []


class CaseOut(Struct):
    case_ref: str
    status: str
    consent: bool
    my_role: str
    opened_by: str
    opened_at_ms: int
    participants: list[ParticipantOut]
    personal_data: PersonalDataIn | None
    allowed_events: list[str]
    timeline: list[TimelineEntryOut]
    purged: PurgeOut | None = None


class DocumentRefIn(Struct, forbid_unknown_fields=True):
    """A travel document by issuing state and number."""

    issuing_state: Annotated[str, Meta(max_length=3)]
    document_number: Annotated[str, Meta(max_length=44)]


class HoldTarget(Struct, forbid_unknown_fields=True):
    """Exactly one of a case (its reference) or a document."""

    case_ref: Annotated[str, Meta(max_length=40)] | None = None
    document: DocumentRefIn | None = None


class HoldRequest(Struct, forbid_unknown_fields=True):
    """A legal hold: nothing of the record is purged until it is released."""

    reason: Annotated[str, Meta(min_length=1, max_length=200)]
    case_ref: Annotated[str, Meta(max_length=40)] | None = None
    document: DocumentRefIn | None = None


class HoldOut(Struct):
    """A legal hold. ``record``: ``case:<ref>``, or ``document:<keyed hash>`` (no number
    in clear)."""

    record: str
    reason: str
    placed_by: str
    placed_at_ms: int


class HoldList(Struct):
    holds: list[HoldOut]


class ReviewOut(Struct):
    """A record due for its periodic review. ``record``: ``case:<ref>`` or
    ``notice:<id>``; ``since_ms``: when stored or last kept."""

    record: str
    record_type: str
    since_ms: int
    due_at_ms: int
    issuing_state: str | None = None
    document_number: str | None = None


class ReviewList(Struct):
    """The records due, oldest first (at most 1,000 notices); ``total``: how many are
    due in all."""

    reviews: list[ReviewOut]
    total: int


class KeepRequest(Struct, forbid_unknown_fields=True):
    """Keep a record at its review; purge it instead with an erasure."""

    record: Annotated[str, Meta(min_length=1, max_length=80)]
    reason: Annotated[str, Meta(min_length=1, max_length=200)]


class RefusalIn(Struct, forbid_unknown_fields=True):
    """The request is refused under the law of ``jurisdiction`` (ICAO code), e.g. to
    protect an investigation; ``basis`` names the provision."""

    jurisdiction: Annotated[str, Meta(max_length=3)]
    basis: Annotated[str, Meta(min_length=1, max_length=300)]


class SubjectReportRequest(Struct, forbid_unknown_fields=True):
    """A subject access report on exactly one of a case or a document."""

    purpose: Annotated[str, Meta(max_length=32)]
    case_ref: Annotated[str, Meta(max_length=40)] | None = None
    document: DocumentRefIn | None = None
    refusal: RefusalIn | None = None


class SubjectReportOut(Struct):
    """The signed report (``format``, ``report``, ``signature``, ``signing_key``: the
    file to hand out, verified by ``exchange-node data verify-report``) and its text."""

    format: str
    report: dict[str, Any]
    signature: str
    signing_key: str
    text: str


class ErasureRequest(Struct, forbid_unknown_fields=True):
    """Why a case's personal content is to be destroyed."""

    reason: PurgeReasonName


class CaseStepAccepted(Struct):
    case_ref: str
    sequence: int
    status: str
    messages: list[MessageRef]


# --- audit ---------------------------------------------------------------------------------


class AuditEntry(Struct):
    """One audit leaf; ``leaf`` is its exact stored bytes (canonical JSON text)."""

    seq: int
    time: int
    kind: str
    actor: str
    peer: str
    message_id: str
    reason: str
    subject_hash: str
    attrs: dict[str, str]
    leaf: str


class AuditPage(Struct):
    entries: list[AuditEntry]
    next_after: int | None


class CheckpointOut(Struct):
    tree_size: int
    root_hash: str
    note: str


class InclusionProofOut(Struct):
    """RFC 9162 audit path (hex, leaf end first) of leaf ``seq`` in ``checkpoint``."""

    seq: int
    leaf: str
    hashes: list[str]
    checkpoint: CheckpointOut


# --- operator ------------------------------------------------------------------------------


class PeerOut(Struct):
    node_id: str
    fingerprint: str
    paused: bool
    policy: list[str]
    last_contact_at_ms: int | None
    last_error: str | None


class QueueOut(Struct):
    peer_id: str
    depth: int
    oldest_queued_at_ms: int | None
    dead: int
    delivered: int
    paused: bool
    last_contact_at_ms: int | None
    last_error: str | None


class DeadLetterOut(Struct):
    outbox_id: int
    recipient: str
    message_id: str
    created_at_ms: int
    attempts: int
    reason: str | None
    last_error: str | None


class StatusOut(Struct):
    node_id: str
    country: str
    ready: bool
    peers: int
    audit_size: int
    queued: int
    dead: int
    # Records due for their periodic review (GET /api/v1/reviews).
    reviews_due: int = 0
    # Purge notices sent that their recipient has not confirmed yet.
    purges_unconfirmed: int = 0


class PeerList(Struct):
    peers: list[PeerOut]


class QueueList(Struct):
    queues: list[QueueOut]


class DeadLetterList(Struct):
    dead_letters: list[DeadLetterOut]


REQUEST_TYPES = (
    NoticeRequest,
    NoticeBatchRequest,
    LookupRequest,
    CaseOpenRequest,
    CaseEventRequest,
    ErasureRequest,
    HoldRequest,
    HoldTarget,
    KeepRequest,
    SubjectReportRequest,
)
RESPONSE_TYPES = (
    Problem,
    NoticeAccepted,
    NoticeBatchAccepted,
    IdempotencyRecordOut,
    MessageStatus,
    LookupAnswer,
    LookupBatchAnswer,
    InboxPage,
    CaseOut,
    CaseStepAccepted,
    AuditPage,
    CheckpointOut,
    InclusionProofOut,
    PeerList,
    QueueList,
    DeadLetterList,
    StatusOut,
    PurgeOut,
    HoldOut,
    HoldList,
    ReviewList,
    SubjectReportOut,
)

encoder = msgspec.json.Encoder()
