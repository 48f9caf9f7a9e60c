"""The retention schedule: what the node purges, when, and what a legal hold keeps.

Per record type (``[retention]`` in the config; ``docs/operations.md`` section 10 gives
each default and why):

- a repatriation case that reached its end (closed, cancelled, consent withdrawn) keeps
  its content for ``case_monitoring_days`` and ``case_after_monitoring_days`` more, then
  is erased (crypto-shredding, :meth:`CaseService.erase`, reason ``retention``);
- document notices are kept until their source withdraws them: a withdrawn chain (the
  notice, its corrections and the withdrawal) leaves the index at the next run (reason
  ``withdrawn_by_source``);
- fraud detections leave the index ``fraud_notice_days`` after the newest notice of
  their chain was issued (reason ``retention``);
- delivery plumbing (inbox rows, de-duplication, receipts sent, idempotency records) is
  purged after ``[protocol] retention_days`` as before (``store.purge_before``);
- receipts and audit entries are kept: they hold no personal data.

A legal hold on a case or on a document (issuing state and number) keeps everything of
it from being purged, by the schedule or by an erasure, until it is released; placing
and releasing one are audited. The job runs on the node's clock (``now_ms``), so tests
drive it by setting the clock and calling :meth:`RetentionService.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import structlog

from exchange_node.audit import leaves
from exchange_node.domain.documents import FRAUD_KINDS, NoticeKind
from exchange_node.domain.repatriation import validate_case_reference
from exchange_node.errors import NotFoundError, ValidationError
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.record_keys import case_record_id
from exchange_node.store.records import HoldRow, NoticeRow, PurgeRow, ReviewDue

if TYPE_CHECKING:
    from exchange_node.services.cases import CaseService
    from exchange_node.services.context import ServiceContext
    from exchange_node.services.protection import RecordProtection
    from exchange_node.store.sqlite import SqliteTransaction

__all__ = ["RetentionReport", "RetentionService", "document_record_id"]

log = structlog.get_logger("exchange_node.retention")

RETENTION = "retention"
"""The approver recorded for what the schedule purges."""

REVIEW_LIST_LIMIT = 1000
"""Records due for review listed at most at once (oldest first; all are counted)."""


def document_record_id(subject_hash: str) -> str:
    """A document's record id: its keyed hash, never its number in clear."""
    return f"document:{subject_hash}"


@dataclass
class RetentionReport:
    """What one run did: record ids purged per type, those kept by a hold."""

    cases: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    kek_rotated: int | None = None
    keks_destroyed: list[int] = field(default_factory=list)


class RetentionService:
    def __init__(
        self,
        node: ServiceContext,
        cases: CaseService,
        protection: RecordProtection,
        case_hash: Callable[[str], str],
        document_hash: Callable[[str, str], str],
    ) -> None:
        self._node = node
        self._store = node.store
        self._cases = cases
        self._protection = protection
        self._case_hash = case_hash
        self._document_hash = document_hash

    # --- the schedule ----------------------------------------------------------------------

    def case_due_at(self, case_ref: str) -> int | None:
        """When a case's content is due for purging: None while it runs."""
        case = self._cases.get(case_ref)
        if case is None or not case.state.is_terminal:
            return None
        cfg = self._node.config.retention
        ended = case.state.timeline[-1].at_ms
        return ended + (cfg.case_monitoring_days + cfg.case_after_monitoring_days) * DAY_MS

    async def run(self) -> RetentionReport:
        """Purge everything due now and not held; rotate and destroy KEKs when due."""
        report = RetentionReport()
        now = self._node.now_ms()
        for ref in self._store.unpurged_cases():
            due = self.case_due_at(ref)
            if due is None or due > now:
                continue
            if self._store.hold(case_record_id(ref)) is not None:
                report.held.append(case_record_id(ref))
                continue
            await self._cases.erase(ref, RETENTION, approver=RETENTION)
            report.cases.append(ref)
        await self._purge_notices(now, report)
        await self._store.purge_before(now - self._node.freshness.max_age_ms)
        if self._protection.kek_due():
            if self._node.config.store.url:
                # Several processes, maybe on several machines, each with its own copy of
                # keys/: a KEK written on one machine would leave the others unable to
                # unwrap. The operator rotates and copies the file (operations guide 15).
                log.warning("kek.rotation_due", detail="run `data kek rotate` (section 15)")
            else:
                report.kek_rotated, _ = await self._protection.rotate_kek(RETENTION)
        report.keks_destroyed = await self._protection.destroy_expired_keks(RETENTION)
        if report.cases or report.notices:
            log.info("retention.purged", cases=len(report.cases), notices=len(report.notices))
        return report

    async def _purge_notices(self, now: int, report: RetentionReport) -> None:
        cutoff = now - self._node.config.retention.fraud_notice_days * DAY_MS
        fraud = sorted(str(k) for k in FRAUD_KINDS)
        for state, number in self._store.documents_with(fraud, cutoff, NoticeKind.WITHDRAWAL):
            subject = self._document_hash(state, number)
            due: list[tuple[list[NoticeRow], str]] = []
            for chain in _chains(self._store.notices_for_document(state, number)):
                head = chain[-1]
                if head.kind == NoticeKind.WITHDRAWAL:
                    due.append((chain, "withdrawn_by_source"))
                elif chain[0].kind in FRAUD_KINDS and head.issued_at_ms <= cutoff:
                    due.append((chain, "retention"))
            if not due:
                continue
            if self._store.hold(document_record_id(subject)) is not None:
                report.held.append(document_record_id(subject))
                continue
            for chain, reason in due:
                ids = [n.notice_id for n in chain]
                await self._store.transaction(
                    partial(_purge_chain, ids=ids, reason=reason, subject=subject, now=now),
                    label="record.purge",
                    background=True,  # a sweep yields to live work
                )
                report.notices += ids

    # --- periodic review -------------------------------------------------------------------

    def reviews_due(self, limit: int | None = None) -> list[ReviewDue]:
        """The records due for their periodic review now, oldest first within each
        type: cases whose content is held, every ``case_review_days``; this node's own
        notices in effect, every ``document_review_days`` (at most ``limit`` of these,
        ``REVIEW_LIST_LIMIT`` unless given; :meth:`reviews_due_count` counts them all)."""
        cfg = self._node.config.retention
        limit = REVIEW_LIST_LIMIT if limit is None else limit
        now = self._node.now_ms()
        return [
            *self._store.cases_due_for_review(now, cfg.case_review_days * DAY_MS),
            *self._store.notices_due_for_review(
                self._node.node_id, now, cfg.document_review_days * DAY_MS, limit=limit
            ),
        ]

    def reviews_due_count(self) -> dict[str, int]:
        """How many records of each type (``case``, ``document_notice``) are due, without
        listing them: what ``status`` and the gauge show."""
        cfg = self._node.config.retention
        now = self._node.now_ms()
        return {
            "case": len(self._store.cases_due_for_review(now, cfg.case_review_days * DAY_MS)),
            "document_notice": self._store.count_notices_due_for_review(
                self._node.node_id, now, cfg.document_review_days * DAY_MS
            ),
        }

    def reviews_due_total(self) -> int:
        """How many records are due in all (``status``, the console's alert)."""
        return sum(self.reviews_due_count().values())

    async def keep(self, record_id: str, reason: str, *, actor: str) -> ReviewDue | None:
        """Keep a record at its review, with a reason (audited ``record.reviewed``): the
        next review is due a period from now. Purging instead is an erasure
        (:meth:`CaseService.erase`) or, for a notice, its withdrawal by this node.
        Raises ``NotFoundError(record_not_under_review)`` for a record this node does not
        review (unknown, purged, a peer's notice, superseded)."""
        if not reason.strip():
            raise ValidationError("reason_required", "say why the record is kept", "reason")
        row = self._under_review(record_id)
        if row is None:
            raise NotFoundError(
                "record_not_under_review",
                f"{record_id} is not a record this node reviews: a case it holds "
                "(case:<ref>) or one of its own notices in effect (notice:<id>)",
                "record",
            )
        now = self._node.now_ms()
        if row.document is not None:
            subject, shown = self._document_hash(*row.document), record_id.removeprefix("notice:")
        else:
            subject, shown = self._case_hash(record_id.removeprefix("case:")), ""

        def work(tx: SqliteTransaction) -> None:
            tx.record_review(record_id, now, actor, reason)
            tx.audit([leaves.record_reviewed(now, actor, row.record_type, shown, subject)])

        await self._store.transaction(work, label="record.review")
        after = self._under_review(record_id)
        return after if after is not None and after.due_at <= self._node.now_ms() else None

    def review_due_at(self, record_id: str) -> int | None:
        """When the record's next periodic review is due (None: not under review)."""
        r = self._under_review(record_id)
        return None if r is None else r.due_at

    def _under_review(self, record_id: str) -> ReviewDue | None:
        """The record if this node reviews it (a case it holds, one of its own notices in
        effect), due or not, with the day its next review is due."""
        cfg = self._node.config.retention
        now = self._node.now_ms()
        if record_id.startswith("case:"):
            period = cfg.case_review_days * DAY_MS
            found = [
                r for r in self._store.cases_due_for_review(now, 0) if r.record_id == record_id
            ]
        elif record_id.startswith("notice:"):
            period = cfg.document_review_days * DAY_MS
            found = self._store.notices_due_for_review(
                self._node.node_id, now, 0, notice_id=record_id.removeprefix("notice:")
            )
        else:
            return None
        return replace(found[0], due_at=found[0].since + period) if found else None

    # --- legal holds -----------------------------------------------------------------------

    def record_of(
        self, case_ref: str | None, document: tuple[str, str] | None
    ) -> tuple[str, str, str]:
        """(record id, record type, subject hash) of a case or a document."""
        if case_ref is not None:
            ref = validate_case_reference(case_ref, "case_ref")
            if self._store.case(ref) is None:
                raise NotFoundError(
                    "case_not_found", f"no case {ref} is known on this node", "case_ref"
                )
            return case_record_id(ref), "case", self._case_hash(ref)
        assert document is not None
        subject = self._document_hash(*document)
        return document_record_id(subject), "document", subject

    async def place_hold(
        self, case_ref: str | None, document: tuple[str, str] | None, reason: str, *, actor: str
    ) -> HoldRow:
        """Hold a case or a document; ``ConflictError(hold_exists)`` if already held."""
        record, kind, subject = self.record_of(case_ref, document)
        now = self._node.now_ms()
        hold = HoldRow(record, reason, actor, now)

        def work(tx: SqliteTransaction) -> HoldRow:
            tx.place_hold(hold)
            tx.audit([leaves.legal_hold(now, actor, "placed", kind, _visible(record), subject)])
            return hold

        return await self._store.transaction(work, label="hold.place")

    async def release_hold(
        self, case_ref: str | None, document: tuple[str, str] | None, *, actor: str
    ) -> HoldRow:
        """Release a hold; ``NotFoundError(hold_not_found)`` if there is none."""
        record, kind, subject = self.record_of(case_ref, document)
        now = self._node.now_ms()

        def work(tx: SqliteTransaction) -> HoldRow:
            held = tx.release_hold(record)
            if held is None:
                raise NotFoundError("hold_not_found", f"{kind} is not under a legal hold", kind)
            tx.audit([leaves.legal_hold(now, actor, "released", kind, _visible(record), subject)])
            return held

        return await self._store.transaction(work, label="hold.release")


def _visible(record_id: str) -> str:
    """What a leaf may name of a held record: nothing; a case or a document is named
    only by its keyed hash (a reference beside the hash would link the hashed reads of
    the same record to it)."""
    return ""


def _chains(notices: Sequence[NoticeRow]) -> list[list[NoticeRow]]:
    """A document's notices as chains: a first notice, then each that superseded the one
    before (a correction, a withdrawal)."""
    by_target = {n.supersedes: n for n in notices if n.supersedes}
    chains = []
    for root in sorted((n for n in notices if not n.supersedes), key=lambda n: n.issued_at_ms):
        chain = [root]
        while (nxt := by_target.get(chain[-1].notice_id)) is not None:
            chain.append(nxt)
        chains.append(chain)
    return chains


def _purge_chain(
    tx: SqliteTransaction, *, ids: list[str], reason: str, subject: str, now: int
) -> None:
    tx.delete_notices(ids)
    for notice_id in ids:
        tx.insert_purge(PurgeRow(f"notice:{notice_id}", "document_notice", reason, RETENTION, now))
    tx.audit(
        [leaves.record_purged(now, RETENTION, "document_notice", n, reason, subject) for n in ids]
    )
