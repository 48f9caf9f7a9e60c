"""Travel-document notices: submitting this node's, checking and indexing peers'.

Submission (:meth:`NoticeService.submit`) runs every domain rule with this node's
country as the sender's, indexes the notice and queues it with ``node.submit``: durable
when it returns, delivered in the background. The country is the one on this node's
own card, which is what every receiver judges the notice by (``config.node.country``
can be edited after the card was made; the card cannot).

Receipt: :meth:`NoticeService.apply` is a content handler of the receiving transaction;
a notice that breaks a rule (a status notice not from the issuing state, a bad MRZ, a
correction by someone else...) is REJECTED with INVALID_CONTENT in the signed receipt,
an accepted one is indexed in the same transaction that stores it.
:meth:`NoticeService.on_accepted` wakes the inbox long-pollers after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from exchange_node.delivery.outbox import (
    RecipientNotAllowed,
    UnknownRecipient,
    choose_recipients,
)
from exchange_node.domain.documents import (
    Detection,
    NoticeKind,
    already_superseded,
    check_detection,
)
from exchange_node.errors import ExchangeError
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.protocol.ids import time_ordered_id
from exchange_node.services.documents import (
    DOCUMENT_KINDS,
    DocumentIndex,
    IndexedNotice,
    body_for,
    from_row,
    notice_from_body,
    to_row,
)

if TYPE_CHECKING:
    from exchange_node.delivery.receiver import EnvelopeResult
    from exchange_node.delivery.sender import Submitted
    from exchange_node.protocol.cards import PeerCard
    from exchange_node.protocol.envelope import OpenedEnvelope
    from exchange_node.services.context import ServiceContext
    from exchange_node.store.sqlite import SqliteTransaction

log = structlog.get_logger("exchange_node.notices")


class InboxSignal:
    """Wakes every long-poller when something new is in the inbox."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True if woken before ``timeout`` seconds passed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


Answer = Callable[["SqliteTransaction", list[tuple[IndexedNotice, list["Submitted"]]]], object]
"""Run inside a submission's transaction with what it submitted (``NoticeService.submit``)."""


class BatchItemRefused(Exception):
    """Draft ``index`` of a batch was refused with ``error``; nothing was stored."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"notice {index}: {error}")
        self.index = index
        self.error = error


@dataclass(frozen=True, slots=True)
class NoticeDraft:
    """A notice as an officer's system asks for it (already typed by the API layer)."""

    kind: NoticeKind
    document: notice_pb2.DocumentRef | None
    effective_at_ms: int = 0
    detection: Detection | None = None
    remarks: str = ""
    supersedes: bytes | None = None
    reason: str = ""


class NoticeService:
    def __init__(self, node: ServiceContext, index: DocumentIndex) -> None:
        self._node = node
        self.index = index
        self.inbox_signal = InboxSignal()

    @property
    def _max_skew_ms(self) -> int:
        return self._node.freshness.max_skew_ms

    def check(
        self,
        draft: NoticeDraft,
        notice_id: bytes,
        now: int,
        *,
        superseded_by: Callable[[str], str | None] | None = None,
    ) -> tuple[notice_pb2.Body, IndexedNotice]:
        """The wire body of ``draft`` and its index entry; raises the domain's errors.
        ``superseded_by`` defaults to the index's (a batch's also sees its own
        notices)."""
        # The domain's own check first: the wire body cannot even be built without it.
        detection = check_detection(
            draft.kind, draft.detection, now_ms=now, max_skew_ms=self._max_skew_ms
        )
        body = body_for(
            draft.kind,
            notice_id=notice_id,
            document=draft.document,
            effective_at_ms=draft.effective_at_ms,
            detection=detection,
            remarks=draft.remarks,
            supersedes=draft.supersedes,
            reason=draft.reason,
        )
        return body, self._entry(body, now, superseded_by)

    def _entry(
        self,
        body: notice_pb2.Body,
        now: int,
        superseded_by: Callable[[str], str | None] | None = None,
    ) -> IndexedNotice:
        """The index entry of this node's own ``body``, by the rules a peer applies."""
        node = self._node
        return notice_from_body(
            body,
            sender_node=node.node_id,
            sender_country=node.keys.card.country,
            issued_at_ms=now,
            now_ms=now,
            max_skew_ms=self._max_skew_ms,
            find=self.index.get,
            superseded_by=superseded_by or self.index.superseded_by,
        )

    async def submit(
        self,
        draft: NoticeDraft,
        recipients: Sequence[str] | None,
        *,
        actor: str,
        then: Answer | None = None,
    ) -> tuple[IndexedNotice, list[Submitted]]:
        """Check, index and queue a notice. Raises the domain's ``ExchangeError``s,
        ``UnknownRecipient`` / ``RecipientNotAllowed`` (from ``choose_recipients``) for
        a recipient not pinned or whose policy forbids the kind (nothing is indexed or
        queued then). ``then`` runs in the submission's transaction with what was
        submitted (see :meth:`submit_many`)."""
        try:
            (result,) = await self.submit_many(
                [(draft, recipients)], actor=actor, then=then, label="notice.submit"
            )
        except BatchItemRefused as exc:
            raise exc.error from None
        return result

    async def submit_body(
        self, body: notice_pb2.Body, recipients: Sequence[str] | None, *, actor: str
    ) -> tuple[IndexedNotice, list[Submitted]]:
        """:meth:`submit` for a notice already in its wire form (``exchange-node send``
        reads one from a file); the same rules, errors and transaction."""
        now = self._node.now_ms()
        entry = self._entry(body, now)
        # An unknown or refused recipient is refused by the outbox before anything is
        # sealed or written.
        try:
            [(entry, submitted)] = await self._queue(
                [(body, recipients, entry)], now, actor=actor, then=None, label="notice.submit"
            )
        except BatchItemRefused as exc:
            raise exc.error from None
        return entry, submitted

    async def submit_many(
        self,
        drafts: Sequence[tuple[NoticeDraft, Sequence[str] | None]],
        *,
        actor: str,
        then: Answer | None = None,
        label: str = "notice.batch",
    ) -> list[tuple[IndexedNotice, list[Submitted]]]:
        """Check every (draft, recipients) first, then index and queue them all in ONE
        transaction: all of them or none. Two drafts may not supersede the same notice.

        Raises :class:`BatchItemRefused` with the index of the first refused draft and
        its error (as :meth:`submit` raises it); nothing is indexed or queued then.
        ``then(tx, results)`` runs last in the transaction with, per draft, its index
        entry and copies: what a caller keeps with the submission (its answer to an
        idempotent request); it may be run again after a rollback.
        """
        node = self._node
        now = node.now_ms()
        superseding: dict[str, str] = {}
        prepared: list[tuple[notice_pb2.Body, Sequence[str] | None, IndexedNotice]] = []

        def superseded_by(notice_id: str) -> str | None:
            # Two notices of one batch cannot both supersede the same notice.
            return superseding.get(notice_id) or self.index.superseded_by(notice_id)

        for i, (draft, recipients) in enumerate(drafts):
            try:
                body, entry = self.check(
                    draft, time_ordered_id(now), now, superseded_by=superseded_by
                )
                # Refuse before indexing: a notice is indexed only if it is sent.
                choose_recipients(
                    body.WhichOneof("content") or "",
                    recipients,
                    node.directory.peers,
                    node.directory.policy,
                )
            except (ExchangeError, UnknownRecipient, RecipientNotAllowed) as exc:
                raise BatchItemRefused(i, exc) from None
            if entry.notice.supersedes:
                superseding.setdefault(entry.notice.supersedes, entry.notice.notice_id)
            prepared.append((body, recipients, entry))
        return await self._queue(prepared, now, actor=actor, then=then, label=label)

    async def _queue(
        self,
        prepared: Sequence[tuple[notice_pb2.Body, Sequence[str] | None, IndexedNotice]],
        now: int,
        *,
        actor: str,
        then: Answer | None,
        label: str,
    ) -> list[tuple[IndexedNotice, list[Submitted]]]:
        entries = [entry for _, _, entry in prepared]
        rows = [to_row(entry) for entry in entries]

        def index_and_answer(tx: SqliteTransaction, queued: list[list[Submitted]]) -> None:
            # The index was read when the notices were checked; a correction of the same
            # notice committed since (another request) is refused here, at commit.
            for i, entry in enumerate(entries):
                target = entry.notice.supersedes
                by = tx.notice_superseded_by(target) if target else None
                if by is not None:
                    raise BatchItemRefused(i, already_superseded(target, by))
            # Indexed in the same transaction that queues them: a notice lookups show is
            # a notice that is sent, and the other way round.
            tx.index_notices(rows, now)
            for entry, copies in zip(entries, queued, strict=True):
                tx.record_disclosures(
                    f"notice:{entry.notice.notice_id}",
                    [(c.peer_id, c.message_id) for c in copies],
                    now,
                )
            if then is not None:
                then(tx, list(zip(entries, queued, strict=True)))

        queued = await self._node.submit_many(
            [(body, recipients) for body, recipients, _ in prepared],
            actor=actor,
            also=index_and_answer,
            label=label,
        )
        return list(zip(entries, queued, strict=True))

    # --- receiving -------------------------------------------------------------------------

    def apply(
        self, tx: SqliteTransaction, card: PeerCard, opened: OpenedEnvelope, kind: str, now: int
    ) -> None:
        """Content handler of the receiving transaction: check a peer's notice against
        the index as this transaction sees it (so a correction may follow the notice it
        corrects in the same batch) and index it. A notice that breaks a rule (a status
        notice not from the issuing state, a bad MRZ, a correction by someone else...)
        raises ``OpenError(INVALID_CONTENT)`` with the domain's code first."""
        if kind not in DOCUMENT_KINDS:
            return

        def find(notice_id: str) -> IndexedNotice | None:
            row = tx.notice(notice_id)
            return from_row(row) if row is not None else None

        body = opened.body
        issued_at = opened.header.created_at_ms
        if body.HasField("catch_up"):
            # A notice the sender issued earlier, sent again by its catch-up: ordered by
            # when it was issued. One already held is accepted and left as it is (the
            # index keeps the first row of a notice id); a correction whose superseded
            # notice is not held here (it was superseded before this node caught up)
            # stands on its own.
            issued_at = body.catch_up.issued_at_ms
            if tx.notice(_notice_id_hex(body)) is not None:
                return
            body = _standing_alone(body, find, tx.notice_superseded_by)
        try:
            entry = notice_from_body(
                body,
                sender_node=card.node_id,
                sender_country=card.country,
                issued_at_ms=issued_at,
                now_ms=now,
                max_skew_ms=self._max_skew_ms,
                find=find,
                superseded_by=tx.notice_superseded_by,
                message_id=opened.message_id,
            )
        except ExchangeError as exc:
            raise OpenError(Reason.INVALID_CONTENT, f"{exc.code}: {exc.message}") from None
        if body is not opened.body and opened.body.WhichOneof("content") == "correction":
            entry = replace(entry, reason=opened.body.correction.reason)
        tx.index_notices([to_row(entry)], now)

    def on_accepted(self, results: Sequence[EnvelopeResult]) -> None:
        """After the commit: wake the inbox long-pollers."""
        if results:
            self.inbox_signal.notify()


def _notice_id_hex(body: notice_pb2.Body) -> str:
    """The notice id a document notice body carries (hex)."""
    kind = body.WhichOneof("content")
    return getattr(body, kind or "status_notice").notice_id.hex()


def _standing_alone(
    body: notice_pb2.Body,
    find: Callable[[str], IndexedNotice | None],
    superseded_by: Callable[[str], str | None],
) -> notice_pb2.Body:
    """A caught-up replacing correction whose superseded notice is unknown here: as a
    correction of the nearest earlier notice of its chain held here and still in effect
    (``catch_up.superseded_ids``), else as the notice it replaces with (same id)."""
    if body.WhichOneof("content") != "correction":
        return body
    c = body.correction
    which = c.WhichOneof("replacement")
    if which is None or find(c.supersedes_notice_id.hex()) is not None:
        return body
    for earlier in body.catch_up.superseded_ids[1:]:
        if find(earlier.hex()) is None:
            continue
        if superseded_by(earlier.hex()) is None:
            nearer = notice_pb2.Body()
            nearer.CopyFrom(body)
            nearer.correction.supersedes_notice_id = earlier
            return nearer
        break
    alone = notice_pb2.Body()
    getattr(alone, which).CopyFrom(getattr(c, which))
    return alone
