"""Travel document notices: who may say what about a document, and what its record shows.

Two families of notice (docs/protocol.md 16.1 and 16.2):

- **status notices** (STOLEN, LOST, REVOKED, INVALIDATED, STOLEN_BLANK) state a fact only
  the issuing state knows, so only a node whose country is the document's issuing state
  may send them. International bodies (node country UNO, XOM, EUE, ...) never may;
- **fraud detections** (COUNTERFEIT, FORGED, PSEUDO, FRAUDULENTLY_OBTAINED, IMPOSTOR) are
  observations at a border, so any node may send them, with where and when.

Notices are immutable. A correction is a new notice that ``supersedes`` an earlier one; a
WITHDRAWAL supersedes one and states nothing itself. Only the original sender may do
either, for the same document, once per notice (correct the correction, not the original).
``fold_history`` turns all the notices about one document into its current record; it is
deterministic whatever order the notices arrive in.

All functions are pure; the current time comes in as ``now_ms``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from exchange_node.domain.icao import (
    is_state,
    validate_document_number,
    validate_document_type,
    validate_state_code,
)
from exchange_node.domain.mrz import Mrz
from exchange_node.errors import ConflictError, NotFoundError, ValidationError

__all__ = [
    "FRAUD_KINDS",
    "MAX_AUTHORITY_LENGTH",
    "MAX_PLACE_LENGTH",
    "STATUS_KINDS",
    "Detection",
    "DocumentKey",
    "DocumentRecord",
    "HistoryEntry",
    "Notice",
    "NoticeKind",
    "check_detection",
    "check_notice",
    "check_notice_authority",
    "check_supersession",
    "fold_history",
]


class NoticeKind(StrEnum):
    STOLEN = "STOLEN"
    LOST = "LOST"
    REVOKED = "REVOKED"
    INVALIDATED = "INVALIDATED"
    STOLEN_BLANK = "STOLEN_BLANK"
    COUNTERFEIT = "COUNTERFEIT"
    FORGED = "FORGED"
    PSEUDO = "PSEUDO"
    FRAUDULENTLY_OBTAINED = "FRAUDULENTLY_OBTAINED"
    IMPOSTOR = "IMPOSTOR"
    WITHDRAWAL = "WITHDRAWAL"


STATUS_KINDS = frozenset(
    {
        NoticeKind.STOLEN,
        NoticeKind.LOST,
        NoticeKind.REVOKED,
        NoticeKind.INVALIDATED,
        NoticeKind.STOLEN_BLANK,
    }
)
FRAUD_KINDS = frozenset(
    {
        NoticeKind.COUNTERFEIT,
        NoticeKind.FORGED,
        NoticeKind.PSEUDO,
        NoticeKind.FRAUDULENTLY_OBTAINED,
        NoticeKind.IMPOSTOR,
    }
)

MAX_PLACE_LENGTH = 100
MAX_AUTHORITY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class DocumentKey:
    """A travel document as Doc 9303 identifies it; normalised and validated on creation.

    ``issuing_state`` is an ICAO code (``D<<`` becomes ``D``), ``document_type`` a type
    code or ``""`` when unknown, ``number`` the logical document number (1 to 22 A-Z/0-9).
    Construction raises ``ValidationError`` with fields ``document.issuing_state``,
    ``document.document_type`` or ``document.document_number``.
    """

    issuing_state: str
    document_type: str
    number: str

    def __post_init__(self) -> None:
        state = validate_state_code(self.issuing_state, "document.issuing_state")
        doc_type = self.document_type.strip() if isinstance(self.document_type, str) else None
        if doc_type != "":
            doc_type = validate_document_type(self.document_type, "document.document_type")
        number = validate_document_number(self.number, "document.document_number")
        object.__setattr__(self, "issuing_state", state)
        object.__setattr__(self, "document_type", doc_type)
        object.__setattr__(self, "number", number)

    @classmethod
    def from_mrz(cls, mrz: Mrz) -> DocumentKey:
        return cls(mrz.issuing_state, mrz.document_type, mrz.document_number)

    def same_document(self, other: DocumentKey) -> bool:
        """Same issuing state and number, and the same type unless either type is unknown."""
        return (
            self.issuing_state == other.issuing_state
            and self.number == other.number
            and (
                self.document_type == other.document_type
                or not self.document_type
                or not other.document_type
            )
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """Where and when a fraud was detected, and by whom.

    ``place``: a UN/LOCODE (``JPNRT``), an IATA code (``NRT``) or a port name, 1 to 100
    characters. ``detected_at_ms``: Unix milliseconds. ``authority``: the detecting
    authority, at most 200 characters, may be empty.
    """

    place: str
    detected_at_ms: int
    authority: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice about one document, as sent by one node.

    ``notice_id`` is opaque and unique; ``sender_node`` the sending node's id and
    ``sender_country`` the ICAO code on its pinned node card; ``issued_at_ms`` when the
    sender made the notice (Unix ms), which orders notices; ``supersedes`` the id of the
    notice this one corrects or withdraws; ``detection`` is required for fraud kinds and
    absent otherwise.
    """

    notice_id: str
    sender_node: str
    sender_country: str
    kind: NoticeKind
    document: DocumentKey
    issued_at_ms: int
    supersedes: str | None = None
    detection: Detection | None = None


# Checks on one new notice ------------------------------------------------------------------


def check_notice_authority(
    notice_kind: NoticeKind, sender_country: str, document_key: DocumentKey
) -> None:
    """Refuse a notice its sender has no authority to make.

    Status kinds need the sender's country to be a state and to be the document's issuing
    state; fraud kinds and withdrawals are open to any node (a withdrawal is checked
    against its original by ``check_supersession``).

    Raises ``ValidationError("invalid_state_code", ..., "sender.country")``,
    ``ValidationError("unknown_notice_kind", ..., "kind")`` or
    ``ValidationError("not_issuing_state", ..., "kind")``.
    """
    sender = validate_state_code(sender_country, "sender.country")
    kind = _kind(notice_kind)
    if kind not in STATUS_KINDS:
        return
    if not is_state(sender):
        raise ValidationError(
            "not_issuing_state",
            f"a {kind} notice states a fact only the issuing state knows; a node of {sender} "
            "(an international body or special code) may only send fraud detections",
            "kind",
        )
    if sender != document_key.issuing_state:
        raise ValidationError(
            "not_issuing_state",
            f"only the issuing state ({document_key.issuing_state}) may report this document "
            f"{kind}; this node's country is {sender}. Send a fraud detection instead, or ask "
            f"{document_key.issuing_state} to report it",
            "kind",
        )


def check_detection(
    notice_kind: NoticeKind, detection: Detection | None, *, now_ms: int, max_skew_ms: int
) -> Detection | None:
    """Return the detection normalised (white space collapsed), or refuse it.

    Fraud kinds require one; other kinds must not carry one. The detection time may be at
    most ``max_skew_ms`` after ``now_ms`` (clocks differ; the future does not).

    Raises ``ValidationError`` with code ``detection_required``,
    ``detection_not_applicable``, ``invalid_detection_place``,
    ``invalid_detecting_authority``, ``invalid_detection_time`` or ``detection_in_future``.
    """
    kind = _kind(notice_kind)
    if kind not in FRAUD_KINDS:
        if detection is not None:
            raise ValidationError(
                "detection_not_applicable",
                f"a {kind} notice carries no place and time of detection; only fraud detections do",
                "detection",
            )
        return None
    if detection is None:
        raise ValidationError(
            "detection_required",
            f"a {kind} detection needs the place and time it was detected",
            "detection",
        )
    place = _clean_text(detection.place, "detection.place", "invalid_detection_place")
    if not 1 <= len(place) <= MAX_PLACE_LENGTH:
        raise ValidationError(
            "invalid_detection_place",
            f"the place of detection must be 1 to {MAX_PLACE_LENGTH} characters (a "
            f"UN/LOCODE such as JPNRT, an IATA code or a port name); got {len(place)}",
            "detection.place",
        )
    authority = _clean_text(
        detection.authority, "detection.authority", "invalid_detecting_authority"
    )
    if len(authority) > MAX_AUTHORITY_LENGTH:
        raise ValidationError(
            "invalid_detecting_authority",
            f"the detecting authority must be at most {MAX_AUTHORITY_LENGTH} characters; "
            f"got {len(authority)}",
            "detection.authority",
        )
    at = detection.detected_at_ms
    if type(at) is not int or at < 0:
        raise ValidationError(
            "invalid_detection_time",
            f"the time of detection must be Unix milliseconds, got {at!r}",
            "detection.detected_at_ms",
        )
    if at > now_ms + max_skew_ms:
        raise ValidationError(
            "detection_in_future",
            f"the time of detection is {at - now_ms} ms in the future; at most "
            f"{max_skew_ms} ms of clock difference is allowed",
            "detection.detected_at_ms",
        )
    return Detection(place=place, detected_at_ms=at, authority=authority)


def already_superseded(target_id: str, by: str) -> ConflictError:
    """The refusal of a second correction or withdrawal of one notice."""
    return ConflictError(
        "already_superseded",
        f"notice {target_id} was already superseded by {by}; correct or withdraw {by} instead",
        "supersedes",
    )


def check_supersession(notice: Notice, target: Notice, *, target_superseded_by: str | None) -> None:
    """Refuse a correction or withdrawal that may not supersede ``target``.

    ``target`` is the notice whose id is ``notice.supersedes``; ``target_superseded_by``
    the id of a notice that already superseded it, if any.

    Raises ``ConflictError`` with code ``not_original_sender``,
    ``cannot_supersede_withdrawal``, ``already_superseded``, ``supersedes_other_document``
    or ``correction_changes_family``.
    """
    if notice.sender_node != target.sender_node:
        raise ConflictError(
            "not_original_sender",
            f"notice {target.notice_id} was sent by {target.sender_node}; only that node may "
            "correct or withdraw it",
            "supersedes",
        )
    if target.kind == NoticeKind.WITHDRAWAL:
        raise ConflictError(
            "cannot_supersede_withdrawal",
            f"notice {target.notice_id} is a withdrawal and cannot be corrected; send a new "
            "notice instead",
            "supersedes",
        )
    if target_superseded_by is not None:
        raise already_superseded(target.notice_id, target_superseded_by)
    if not notice.document.same_document(target.document):
        raise ConflictError(
            "supersedes_other_document",
            f"notice {target.notice_id} is about another document; withdraw it and send a "
            "new notice about the right one",
            "document",
        )
    if notice.kind != NoticeKind.WITHDRAWAL and _family(notice.kind) != _family(target.kind):
        raise ConflictError(
            "correction_changes_family",
            f"a {target.kind} notice can only be corrected by another "
            f"{_family(target.kind)} notice, not by {notice.kind}; withdraw it and send a "
            "new notice instead",
            "kind",
        )


def check_notice(
    notice: Notice,
    *,
    now_ms: int,
    max_skew_ms: int,
    target: Notice | None = None,
    target_superseded_by: str | None = None,
) -> Notice:
    """Run every rule on a new notice; return it normalised (sender country, detection).

    ``target`` is the stored notice that ``notice.supersedes`` names (None if unknown).

    Raises ``ValidationError`` (``invalid_notice_id``, ``invalid_sender``,
    ``invalid_notice_time``, ``notice_in_future``, ``supersedes_required``,
    ``supersedes_itself`` and those of ``check_notice_authority`` and
    ``check_detection``), ``NotFoundError("superseded_notice_not_found", ...,
    "supersedes")`` and the ``ConflictError`` of ``check_supersession``.
    """
    if not isinstance(notice.notice_id, str) or not notice.notice_id:
        raise ValidationError("invalid_notice_id", "the notice id is empty", "notice_id")
    if not isinstance(notice.sender_node, str) or not notice.sender_node:
        raise ValidationError("invalid_sender", "the sender node id is empty", "sender.node")
    at = notice.issued_at_ms
    if type(at) is not int or at < 0:
        raise ValidationError(
            "invalid_notice_time",
            f"the notice time must be Unix milliseconds, got {at!r}",
            "issued_at_ms",
        )
    if at > now_ms + max_skew_ms:
        raise ValidationError(
            "notice_in_future",
            f"the notice is dated {at - now_ms} ms in the future; at most {max_skew_ms} ms "
            "of clock difference is allowed",
            "issued_at_ms",
        )
    kind = _kind(notice.kind)
    if kind == NoticeKind.WITHDRAWAL and not notice.supersedes:
        raise ValidationError(
            "supersedes_required", "a withdrawal must name the notice it withdraws", "supersedes"
        )
    if notice.supersedes is not None and notice.supersedes == notice.notice_id:
        raise ValidationError("supersedes_itself", "a notice cannot supersede itself", "supersedes")
    check_notice_authority(kind, notice.sender_country, notice.document)
    detection = check_detection(kind, notice.detection, now_ms=now_ms, max_skew_ms=max_skew_ms)
    if notice.supersedes:
        if target is None or target.notice_id != notice.supersedes:
            raise NotFoundError(
                "superseded_notice_not_found",
                f"no notice {notice.supersedes} is known here to correct or withdraw",
                "supersedes",
            )
        check_supersession(notice, target, target_superseded_by=target_superseded_by)
    return replace(
        notice,
        kind=kind,
        sender_country=validate_state_code(notice.sender_country, "sender.country"),
        detection=detection,
    )


def _kind(value: NoticeKind | str) -> NoticeKind:
    try:
        return NoticeKind(value)
    except ValueError:
        raise ValidationError(
            "unknown_notice_kind",
            f"{value!r} is not a notice kind; expected one of "
            f"{', '.join(k.value for k in NoticeKind)}",
            "kind",
        ) from None


def _family(kind: NoticeKind) -> str:
    return "status" if kind in STATUS_KINDS else "fraud detection"


def _clean_text(value: str, field: str, code: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(code, f"expected text, got {type(value).__name__}", field)
    # isprintable() is a fast C check that is True for nearly all real text; only
    # text it flags gets the per-character look.
    if not value.isprintable() and any(
        unicodedata.category(c) == "Cc" and c not in " \t\n" for c in value
    ):
        raise ValidationError(code, "the text contains control characters", field)
    return " ".join(value.split())


# The record of one document ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A notice in a document's history.

    ``in_effect``: the notice counts towards the current record (not superseded, not a
    withdrawal, not set aside). ``superseded_by``: the notice that corrected or withdrew
    it; ``withdrawn``: that notice was a withdrawal. ``anomaly``: the rule a stored notice
    breaks (the store should never hold one; the fold says so rather than guess), else None.
    """

    notice: Notice
    in_effect: bool
    superseded_by: str | None = None
    withdrawn: bool = False
    anomaly: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """What the network knows about one document.

    ``status``: the notice that sets the current status (the latest status notice in
    effect), None if there is none; ``fraud``: fraud detections in effect, oldest first;
    ``history``: every notice, oldest first, nothing removed.
    """

    document: DocumentKey
    status: Notice | None
    fraud: tuple[Notice, ...]
    history: tuple[HistoryEntry, ...]

    @property
    def current_status(self) -> NoticeKind | None:
        return self.status.kind if self.status else None


def _order(notice: Notice) -> tuple[int, str, str, str]:
    return (notice.issued_at_ms, notice.notice_id, notice.sender_node, notice.kind)


def fold_history(notices: Iterable[Notice]) -> DocumentRecord:
    """Fold every notice about one document into its record.

    The result does not depend on the order of ``notices``: they are ordered by
    ``(issued_at_ms, notice_id)``. A supersession takes effect only if it is valid (same
    sender, same document, target known, not a withdrawal, not already superseded by an
    earlier notice); otherwise the superseding notice is marked with an anomaly and, if it
    is a correction, still counts on its own, so that a broken chain never hides a flag. A
    status notice whose sender is not the issuing state is marked and ignored. A superseded
    notice stays superseded even if its correction is withdrawn later. Notices with an id
    already seen are marked ``duplicate_notice_id``.

    Raises ``ValueError`` if ``notices`` is empty or about more than one document.
    """
    ordered = sorted(notices, key=_order)
    if not ordered:
        raise ValueError("fold_history needs at least one notice")
    # The most specific key names the record: one with the document type, if any has it.
    document = next((n.document for n in ordered if n.document.document_type), ordered[0].document)
    if not all(n.document.same_document(document) for n in ordered):
        raise ValueError("fold_history was given notices about different documents")

    by_id: dict[str, Notice] = {}
    anomaly: dict[int, str] = {}
    set_aside: set[int] = set()  # notices that do not count at all
    for index, notice in enumerate(ordered):
        if notice.notice_id in by_id:
            anomaly[index] = "duplicate_notice_id"
            set_aside.add(index)
        else:
            by_id[notice.notice_id] = notice

    superseded_by: dict[str, Notice] = {}
    for index, notice in enumerate(ordered):
        if index in set_aside:
            continue
        if notice.kind in STATUS_KINDS and not _issuing_state_sender(notice):
            anomaly[index] = "not_issuing_state"
            set_aside.add(index)
            continue
        if notice.supersedes is None:
            if notice.kind == NoticeKind.WITHDRAWAL:
                anomaly[index] = "supersedes_required"
            continue
        target = by_id.get(notice.supersedes)
        if target is None:
            anomaly[index] = "superseded_notice_not_found"
            continue
        if target.notice_id == notice.notice_id:
            anomaly[index] = "supersedes_itself"
            continue
        earlier = superseded_by.get(target.notice_id)
        try:
            check_supersession(
                notice, target, target_superseded_by=earlier.notice_id if earlier else None
            )
        except ConflictError as exc:
            anomaly[index] = exc.code
            continue
        superseded_by[target.notice_id] = notice

    history = []
    for index, notice in enumerate(ordered):
        successor = None if index in set_aside else superseded_by.get(notice.notice_id)
        history.append(
            HistoryEntry(
                notice=notice,
                in_effect=(
                    index not in set_aside
                    and successor is None
                    and notice.kind != NoticeKind.WITHDRAWAL
                ),
                superseded_by=successor.notice_id if successor else None,
                withdrawn=successor is not None and successor.kind == NoticeKind.WITHDRAWAL,
                anomaly=anomaly.get(index),
            )
        )
    effective = [entry.notice for entry in history if entry.in_effect]
    statuses = [n for n in effective if n.kind in STATUS_KINDS]
    return DocumentRecord(
        document=document,
        status=statuses[-1] if statuses else None,
        fraud=tuple(n for n in effective if n.kind in FRAUD_KINDS),
        history=tuple(history),
    )


def _issuing_state_sender(notice: Notice) -> bool:
    try:
        check_notice_authority(notice.kind, notice.sender_country, notice.document)
    except ValidationError:
        return False
    return True
