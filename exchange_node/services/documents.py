"""The document index: every travel-document notice this node sent or accepted.

Rows live in the ``doc_notices`` table (store migration 2) and are never updated or
deleted: a correction or withdrawal is one more row that names the notice it
supersedes, and ``domain.documents.fold_history`` turns the rows about one document
into its current record at lookup time.

This module also converts between the wire ``Body`` of a notice and the domain
``Notice`` (:func:`notice_from_body`), which is what the receive-side validator and the
indexing hook use, and what the submit path checks before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from exchange_node.domain.documents import (
    FRAUD_KINDS,
    STATUS_KINDS,
    Detection,
    DocumentKey,
    DocumentRecord,
    Notice,
    NoticeKind,
    check_notice,
    fold_history,
)
from exchange_node.domain.mrz import parse_mrz
from exchange_node.errors import NotFoundError, ValidationError
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.store.records import NoticeRow
from exchange_node.store.sqlite import SqliteStore

DOCUMENT_KINDS = frozenset({"status_notice", "fraud_notice", "correction"})
"""Body kinds that carry travel-document notices."""

MAX_REMARKS = 1000

_STATUS_TO_WIRE = {
    NoticeKind.STOLEN: notice_pb2.DOCUMENT_STATUS_STOLEN,
    NoticeKind.LOST: notice_pb2.DOCUMENT_STATUS_LOST,
    NoticeKind.REVOKED: notice_pb2.DOCUMENT_STATUS_REVOKED,
    NoticeKind.INVALIDATED: notice_pb2.DOCUMENT_STATUS_INVALIDATED,
    NoticeKind.STOLEN_BLANK: notice_pb2.DOCUMENT_STATUS_STOLEN_BLANK,
}
_FRAUD_TO_WIRE = {
    NoticeKind.COUNTERFEIT: notice_pb2.FRAUD_TYPE_COUNTERFEIT,
    NoticeKind.FORGED: notice_pb2.FRAUD_TYPE_FORGED,
    NoticeKind.PSEUDO: notice_pb2.FRAUD_TYPE_PSEUDO,
    NoticeKind.FRAUDULENTLY_OBTAINED: notice_pb2.FRAUD_TYPE_FRAUDULENTLY_OBTAINED,
    NoticeKind.IMPOSTOR: notice_pb2.FRAUD_TYPE_IMPOSTOR,
}
_STATUS_FROM_WIRE = {v: k for k, v in _STATUS_TO_WIRE.items()}
_FRAUD_FROM_WIRE = {v: k for k, v in _FRAUD_TO_WIRE.items()}


@dataclass(frozen=True, slots=True)
class IndexedNotice:
    """A notice as the index keeps it: the domain notice plus what officers read.

    ``message_id`` is the envelope it arrived in (None for this node's own notices,
    which went out in one envelope per recipient).
    """

    notice: Notice
    effective_at_ms: int | None = None
    remarks: str = ""
    reason: str = ""
    message_id: bytes | None = None


# --- wire <-> domain ------------------------------------------------------------------------


def document_key(ref: notice_pb2.DocumentRef, field: str = "document") -> DocumentKey:
    """The validated key of a wire ``DocumentRef``; its MRZ, if any, must verify and agree.

    Raises ``ValidationError`` (field ``document.*``; ``mrz_mismatch`` when the MRZ
    names another document than the fields).
    """
    key = DocumentKey(ref.issuing_state, ref.document_type, ref.document_number)
    if ref.mrz:
        mrz = parse_mrz(ref.mrz)
        if mrz.issuing_state != key.issuing_state:
            raise ValidationError(
                "mrz_mismatch",
                f"the MRZ names issuing state {mrz.issuing_state}, the document says "
                f"{key.issuing_state}",
                f"{field}.mrz",
            )
        if mrz.document_number != key.number:
            raise ValidationError(
                "mrz_mismatch",
                f"the MRZ holds document number {mrz.document_number}, the document says "
                f"{key.number}",
                f"{field}.mrz",
            )
        if key.document_type and mrz.document_type != key.document_type:
            raise ValidationError(
                "mrz_mismatch",
                f"the MRZ holds document type {mrz.document_type}, the document says "
                f"{key.document_type}",
                f"{field}.mrz",
            )
        if not key.document_type:
            key = DocumentKey(key.issuing_state, mrz.document_type, key.number)
    return key


def _check_remarks(text: str, field: str) -> str:
    if len(text) > MAX_REMARKS:
        raise ValidationError(
            "text_too_long", f"at most {MAX_REMARKS} characters, got {len(text)}", field
        )
    return text


def _status(n: notice_pb2.TravelDocumentStatusNotice) -> tuple[NoticeKind, str]:
    kind = _STATUS_FROM_WIRE.get(n.status)
    if kind is None:
        raise ValidationError("unknown_notice_kind", "the status is unspecified", "kind")
    return kind, n.notice_id.hex()


def notice_from_body(
    body: notice_pb2.Body,
    *,
    sender_node: str,
    sender_country: str,
    issued_at_ms: int,
    now_ms: int,
    max_skew_ms: int,
    find: Callable[[str], IndexedNotice | None],
    superseded_by: Callable[[str], str | None],
    message_id: bytes | None = None,
) -> IndexedNotice:
    """Check a document notice body by every domain rule; return it as indexed.

    ``find(notice_id)`` returns the stored ``IndexedNotice`` with that id or None;
    ``superseded_by(notice_id)`` the id of a stored notice superseding it, or None.
    Raises ``ValidationError``, ``ConflictError`` or ``NotFoundError`` (from
    ``check_notice``) naming the rule and the field.
    """
    kind_name = body.WhichOneof("content")
    supersedes: str | None = None
    reason = ""
    inner: notice_pb2.TravelDocumentStatusNotice | notice_pb2.FraudDetectionNotice | None
    if kind_name == "correction":
        c = body.correction
        supersedes = c.supersedes_notice_id.hex()
        reason = _check_remarks(c.reason, "reason")
        if c.action == notice_pb2.CORRECTION_ACTION_WITHDRAW:
            inner = None
        elif c.action == notice_pb2.CORRECTION_ACTION_REPLACE:
            which = c.WhichOneof("replacement")
            if which is None:
                raise ValidationError(
                    "replacement_required", "a replacing correction needs the new notice", "kind"
                )
            inner = getattr(c, which)
            if inner.notice_id != c.notice_id:
                raise ValidationError(
                    "invalid_notice_id",
                    "the replacement's notice id must equal the correction's",
                    "notice_id",
                )
        else:
            raise ValidationError(
                "unknown_correction_action", "the correction action is unspecified", "kind"
            )
        notice_id = c.notice_id.hex()
    elif kind_name == "status_notice":
        inner = body.status_notice
        notice_id = inner.notice_id.hex()
    elif kind_name == "fraud_notice":
        inner = body.fraud_notice
        notice_id = inner.notice_id.hex()
    else:
        raise ValidationError("not_a_document_notice", f"{kind_name} is not a notice", "kind")
    if len(notice_id) != 32:
        raise ValidationError("invalid_notice_id", "a notice id is 16 bytes", "notice_id")
    target = find(supersedes) if supersedes else None
    detection = None
    effective = None
    remarks = ""
    if inner is None:  # withdrawal: about the document of the notice it withdraws
        kind = NoticeKind.WITHDRAWAL
        if target is None:
            raise NotFoundError(
                "superseded_notice_not_found",
                f"no notice {supersedes} is known here to withdraw",
                "supersedes",
            )
        document = target.notice.document
    elif isinstance(inner, notice_pb2.TravelDocumentStatusNotice):
        kind, _ = _status(inner)
        document = document_key(inner.document)
        effective = inner.effective_at_ms or None
        remarks = _check_remarks(inner.remarks, "remarks")
    else:
        kind = _FRAUD_FROM_WIRE.get(inner.fraud_type)  # type: ignore[assignment]
        if kind is None:
            raise ValidationError("unknown_notice_kind", "the fraud type is unspecified", "kind")
        document = document_key(inner.document)
        detection = Detection(
            inner.detection_place, inner.detected_at_ms, inner.detecting_authority
        )
        remarks = _check_remarks(inner.remarks, "remarks")
    notice = Notice(
        notice_id=notice_id,
        sender_node=sender_node,
        sender_country=sender_country,
        kind=kind,
        document=document,
        issued_at_ms=issued_at_ms,
        supersedes=supersedes,
        detection=detection,
    )
    checked = check_notice(
        notice,
        now_ms=now_ms,
        max_skew_ms=max_skew_ms,
        target=target.notice if target else None,
        target_superseded_by=superseded_by(supersedes) if supersedes else None,
    )
    return IndexedNotice(checked, effective, remarks, reason, message_id)


def body_for(
    kind: NoticeKind,
    *,
    notice_id: bytes,
    document: notice_pb2.DocumentRef | None,
    effective_at_ms: int = 0,
    detection: Detection | None = None,
    remarks: str = "",
    supersedes: bytes | None = None,
    reason: str = "",
) -> notice_pb2.Body:
    """The wire body of a new notice (a correction when ``supersedes`` is given)."""
    inner_status = inner_fraud = None
    if kind in STATUS_KINDS:
        inner_status = notice_pb2.TravelDocumentStatusNotice(
            notice_id=notice_id,
            document=document,
            status=_STATUS_TO_WIRE[kind],
            effective_at_ms=effective_at_ms,
            remarks=remarks,
        )
    elif kind in FRAUD_KINDS:
        assert detection is not None
        inner_fraud = notice_pb2.FraudDetectionNotice(
            notice_id=notice_id,
            document=document,
            fraud_type=_FRAUD_TO_WIRE[kind],
            detected_at_ms=detection.detected_at_ms,
            detection_place=detection.place,
            detecting_authority=detection.authority,
            remarks=remarks,
        )
    if supersedes is None:
        if inner_status is not None:
            return notice_pb2.Body(status_notice=inner_status)
        return notice_pb2.Body(fraud_notice=inner_fraud)
    correction = notice_pb2.NoticeCorrection(
        notice_id=notice_id,
        supersedes_notice_id=supersedes,
        action=notice_pb2.CORRECTION_ACTION_WITHDRAW
        if kind == NoticeKind.WITHDRAWAL
        else notice_pb2.CORRECTION_ACTION_REPLACE,
        reason=reason,
    )
    if inner_status is not None:
        correction.status_notice.CopyFrom(inner_status)
    elif inner_fraud is not None:
        correction.fraud_notice.CopyFrom(inner_fraud)
    return notice_pb2.Body(correction=correction)


def body_from_row(r: NoticeRow, chain: Sequence[str] = ()) -> notice_pb2.Body:
    """The wire body of an indexed notice of this node's, to send it again (catch-up):
    the same notice id, kind, document, detection, times and texts as first sent, and
    ``catch_up.issued_at_ms`` the time it was issued, which receivers order it by. The
    MRZ is not kept in the index, so it is not sent again; the fields it was checked
    against are. ``chain``: for a correction, the ids it supersedes directly or through
    earlier corrections, nearest first (``catch_up.superseded_ids``)."""
    detection = (
        Detection(r.detection_place, r.detected_at_ms or 0, r.detection_auth or "")
        if r.detection_place is not None
        else None
    )
    body = body_for(
        NoticeKind(r.kind),
        notice_id=bytes.fromhex(r.notice_id),
        document=notice_pb2.DocumentRef(
            issuing_state=r.issuing_state,
            document_type=r.document_type,
            document_number=r.number,
        ),
        effective_at_ms=r.effective_at_ms or 0,
        detection=detection,
        remarks=r.remarks,
        supersedes=bytes.fromhex(r.supersedes) if r.supersedes else None,
        reason=r.reason,
    )
    body.catch_up.issued_at_ms = r.issued_at_ms
    body.catch_up.superseded_ids.extend(bytes.fromhex(i) for i in chain)
    return body


# --- the index ------------------------------------------------------------------------------


def from_row(r: NoticeRow) -> IndexedNotice:
    """The index entry of a stored row."""
    detection = (
        Detection(r.detection_place, r.detected_at_ms, r.detection_auth or "")
        if r.detection_place is not None
        else None
    )
    # Rows were validated when they were indexed: skip DocumentKey's checks on the hot
    # lookup path by building the key without re-validating.
    key = object.__new__(DocumentKey)
    object.__setattr__(key, "issuing_state", r.issuing_state)
    object.__setattr__(key, "document_type", r.document_type)
    object.__setattr__(key, "number", r.number)
    notice = Notice(
        notice_id=r.notice_id,
        sender_node=r.sender_node,
        sender_country=r.sender_country,
        kind=NoticeKind(r.kind),
        document=key,
        issued_at_ms=r.issued_at_ms,
        supersedes=r.supersedes,
        detection=detection,
    )
    return IndexedNotice(notice, r.effective_at_ms, r.remarks, r.reason, r.message_id)


def to_row(entry: IndexedNotice) -> NoticeRow:
    """The row that indexes ``entry``."""
    n = entry.notice
    d = n.detection
    return NoticeRow(
        notice_id=n.notice_id,
        sender_node=n.sender_node,
        sender_country=n.sender_country,
        kind=str(n.kind),
        issuing_state=n.document.issuing_state,
        document_type=n.document.document_type,
        number=n.document.number,
        issued_at_ms=n.issued_at_ms,
        supersedes=n.supersedes,
        detection_place=d.place if d else None,
        detected_at_ms=d.detected_at_ms if d else None,
        detection_auth=d.authority if d else None,
        effective_at_ms=entry.effective_at_ms,
        remarks=entry.remarks,
        reason=entry.reason,
        message_id=entry.message_id,
    )


@dataclass(frozen=True, slots=True)
class DocumentAnswer:
    """One lookup's answer: ``records`` is empty when nothing is known about the document,
    and holds one record per document type when notices name different types."""

    issuing_state: str
    number: str
    document_type: str
    records: tuple[tuple[DocumentRecord, tuple[IndexedNotice, ...]], ...]


class DocumentIndex:
    """Reads and writes ``doc_notices`` through the store's connections.

    Reads run on the caller's thread on the store's read connection (fast, indexed);
    writes go through the store's group-commit writer and are durable when they return.
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def get(self, notice_id: str) -> IndexedNotice | None:
        row = self._store.notice(notice_id)
        return from_row(row) if row is not None else None

    def superseded_by(self, notice_id: str) -> str | None:
        return self._store.notice_superseded_by(notice_id)

    async def add(self, entries: Sequence[IndexedNotice], now_ms: int) -> None:
        """Index ``entries`` in a transaction of their own (a notice id already indexed
        is kept as it was). Operations that index as part of a larger change use
        ``tx.index_notices`` inside their own transaction instead."""
        await self._store.index_notices([to_row(e) for e in entries], now_ms)

    def lookup(self, issuing_state: str, number: str, document_type: str = "") -> DocumentAnswer:
        """Everything known about a document. Arguments must already be normalised
        (build a ``DocumentKey`` first)."""
        entries = [from_row(r) for r in self._store.notices_for_document(issuing_state, number)]
        if document_type:
            entries = [e for e in entries if e.notice.document.document_type in ("", document_type)]
            groups = {document_type: entries} if entries else {}
        else:
            types = sorted({e.notice.document.document_type for e in entries} - {""})
            untyped = [e for e in entries if not e.notice.document.document_type]
            if not types:
                groups = {"": untyped} if untyped else {}
            else:
                groups = {
                    t: [e for e in entries if e.notice.document.document_type == t] + untyped
                    for t in types
                }
        records = []
        for group in groups.values():
            records.append((fold_history(e.notice for e in group), tuple(group)))
        return DocumentAnswer(issuing_state, number, document_type, tuple(records))

    def count(self) -> int:
        return self._store.count_notices()


def with_message(entry: IndexedNotice, message_id: bytes) -> IndexedNotice:
    return replace(entry, message_id=message_id)
