"""Repatriation cases on this node: storage, the local steps, and checks on peers' steps.

A case is the ``cases`` row (participants, encrypted personal data) plus its events in
``case_events`` (store migration 2). The state is never stored: it is the domain table
(``domain.repatriation.apply``) replayed over the events, so every node that holds the
same events holds the same state.

Two ways in, one rule book: both call ``domain.repatriation.check_step`` (who takes
part, in which role, and what the lifecycle allows), so a step refused on one path is
refused on the other with the same code.

- a local officer's step (:meth:`CaseService.open_case`, :meth:`CaseService.add_event`)
  is checked first; a refused step raises the domain's ``ValidationError`` or
  ``ConflictError`` before anything is stored or sent; an allowed one is stored with
  the message ids it goes out under, its leaf, and the envelopes queued to every other
  participant, in one transaction (checked again there against the case as stored);
- a peer's step is checked and stored by :meth:`CaseService.apply`, a content handler of
  the receiving transaction: a refusal becomes REJECTED in the signed receipt, with
  NOT_PARTICIPANT for ``not_participant``, ILLEGAL_TRANSITION for another
  ``ConflictError``, INVALID_CONTENT for a ``ValidationError`` (the domain's code leads
  the detail the node logs), and leaves nothing behind for the next step.

Personal data and notes are encrypted under the case's own data key (``record_keys``,
wrapped by the node's key-encryption key: ``services/protection.py``), bound to the case
reference (and sequence) so a blob cannot be moved to another case. :meth:`CaseService.erase`
destroys the key and the ciphertext (crypto-shredding); the case's steps stay, as they
hold no personal data, and the case says it was purged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from exchange_node.at_rest import AtRest
from exchange_node.audit import leaves
from exchange_node.domain.icao import validate_state_code
from exchange_node.domain.repatriation import (
    CaseEvent,
    CaseState,
    EventType,
    Participant,
    Role,
    apply,
    check_step,
    new_case_reference,
    role_in_case,
    validate_case_reference,
)
from exchange_node.errors import ConflictError, ExchangeError, NotFoundError, ValidationError
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.record_keys import DataKey, case_record_id
from exchange_node.store.records import (
    PURGE_REASONS,
    CaseEventRow,
    CaseRow,
    DeliveryRow,
    Outcome,
    PurgeRow,
)

if TYPE_CHECKING:
    from exchange_node.audit.leaf import AuditEvent
    from exchange_node.delivery.receiver import EnvelopeResult
    from exchange_node.delivery.sender import Submitted
    from exchange_node.protocol.cards import PeerCard
    from exchange_node.protocol.envelope import OpenedEnvelope
    from exchange_node.services.context import ServiceContext
    from exchange_node.services.protection import RecordProtection
    from exchange_node.store.sqlite import SqliteTransaction

__all__ = ["Case", "CaseService", "Participant", "PersonalData", "StepTaken", "StoredEvent"]

log = structlog.get_logger("exchange_node.cases")

MAX_NOTE = 2000
MAX_PERSONAL_TEXT = 200
_DOB = re.compile(r"[0-9]{4}(-[0-9]{2}-[0-9]{2})?")

_ROLE_TO_WIRE = {
    Role.IDENTIFYING_STATE: notice_pb2.CASE_ROLE_IDENTIFYING_STATE,
    Role.ORIGIN_STATE: notice_pb2.CASE_ROLE_ORIGIN_STATE,
    Role.IOM: notice_pb2.CASE_ROLE_IOM,
    Role.OTHER: notice_pb2.CASE_ROLE_OTHER,
}
_ROLE_FROM_WIRE = {v: k for k, v in _ROLE_TO_WIRE.items()}
_PURGE_TO_WIRE = {
    reason: notice_pb2.PurgeReason.Value("PURGE_REASON_" + reason.upper())
    for reason in PURGE_REASONS
}
_PURGE_FROM_WIRE = {v: k for k, v in _PURGE_TO_WIRE.items()}


def event_to_wire(kind: EventType) -> int:
    return notice_pb2.CaseEventType.Value("CASE_EVENT_TYPE_" + kind.value.upper())


def event_from_wire(value: int) -> EventType:
    """Raises ``ValidationError`` for an unspecified or unknown event type."""
    try:
        return EventType(
            notice_pb2.CaseEventType.Name(value).removeprefix("CASE_EVENT_TYPE_").lower()
        )
    except ValueError:
        raise ValidationError(
            "unknown_case_event", f"case event type {value} is not known", "type"
        ) from None


@dataclass(frozen=True, slots=True)
class PersonalData:
    """The minimum personal data participants need; every field optional."""

    full_name: str = ""
    date_of_birth: str = ""
    nationality: str = ""
    sex: str = ""
    languages: str = ""
    special_needs: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a case as this node holds it.

    ``actor`` is the node that performed it; ``performed_by`` the local token name for
    this node's own steps, the sending node id for a peer's. ``message_ids`` maps each
    recipient to the message id the event went out under (own steps only);
    ``received_message_id`` is the envelope a peer's step arrived in.
    """

    sequence: int
    event_id: bytes
    kind: EventType
    actor: str
    actor_role: Role
    at_ms: int
    note: str
    performed_by: str
    message_ids: dict[str, str]
    recorded_at: int
    received_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class StepTaken:
    """A local step as its transaction commits it: handed to a ``then`` hook that writes
    the caller's answer in the same transaction (an idempotent request's)."""

    case_ref: str
    sequence: int
    status: str
    message_ids: dict[str, bytes]


StepHook = Callable[["SqliteTransaction", StepTaken], object]


def _step_taken(ref: str, seq: int, state: CaseState, queued: Sequence[Submitted]) -> StepTaken:
    return StepTaken(ref, seq, str(state.status), {s.peer_id: s.message_id for s in queued})


@dataclass(frozen=True, slots=True)
class Case:
    case_ref: str
    opened_by: str
    participants: tuple[Participant, ...]
    personal: PersonalData | None
    opened_at: int
    state: CaseState
    events: tuple[StoredEvent, ...]
    purged: PurgeRow | None = None

    def role_of(self, node_id: str) -> Role | None:
        return next((p.role for p in self.participants if p.node_id == node_id), None)


def check_personal(p: PersonalData) -> PersonalData:
    """Refuse malformed personal data; raises ``ValidationError`` on ``personal_data.*``."""
    for name in ("full_name", "languages", "special_needs"):
        value = getattr(p, name)
        if len(value) > MAX_PERSONAL_TEXT:
            raise ValidationError(
                "text_too_long",
                f"at most {MAX_PERSONAL_TEXT} characters, got {len(value)}",
                f"personal_data.{name}",
            )
    if p.date_of_birth and not _DOB.fullmatch(p.date_of_birth):
        raise ValidationError(
            "invalid_date_of_birth",
            "give the date of birth as YYYY-MM-DD, or YYYY when only the year is known",
            "personal_data.date_of_birth",
        )
    if p.nationality:
        validate_state_code(p.nationality, "personal_data.nationality")
    if p.sex and p.sex not in ("F", "M", "X"):
        raise ValidationError("invalid_sex", "sex is F, M or X (unspecified)", "personal_data.sex")
    return p


def refusal(exc: ExchangeError) -> OpenError:
    """The receiver's refusal of a peer's step for the domain error ``exc``: the wire
    reason by kind of error, the domain's code first in the detail."""
    if exc.code == "not_participant":
        reason = Reason.NOT_PARTICIPANT
    elif isinstance(exc, ConflictError):
        reason = Reason.ILLEGAL_TRANSITION
    else:
        reason = Reason.INVALID_CONTENT
    return OpenError(reason, f"{exc.code}: {exc.message}")


def _check_note(note: str, field: str = "note") -> str:
    if len(note) > MAX_NOTE:
        raise ValidationError(
            "text_too_long", f"a note is at most {MAX_NOTE} characters, got {len(note)}", field
        )
    return note


class CaseService:
    """Cases of one node. Built by the node; uses its store, data keys, submit and audit.

    ``subject_hash`` maps a case reference to the keyed hash its leaves carry."""

    def __init__(
        self,
        node: ServiceContext,
        protection: RecordProtection,
        subject_hash: Callable[[str], str],
    ) -> None:
        self._node = node
        self._store = node.store
        self._keys = protection
        self._subject_hash = subject_hash

    # --- reading ---------------------------------------------------------------------------

    def get(self, case_ref: str) -> Case | None:
        """The case as stored, its notes and personal data decrypted; None if unknown."""
        row = self._store.case(case_ref)
        if row is None:
            return None
        return self._case(row, self._store.case_events(case_ref), decrypt=True)

    def _get_in(self, tx: SqliteTransaction, case_ref: str) -> Case | None:
        """The case as the transaction sees it, for checking a step (nothing decrypted)."""
        row = tx.case(case_ref)
        return self._case(row, tx.case_events(case_ref), decrypt=False) if row else None

    def _case(self, row: CaseRow, rows: Sequence[CaseEventRow], *, decrypt: bool) -> Case:
        ref = row.case_ref
        participants = tuple(
            Participant(p["node_id"], Role(p["role"])) for p in json.loads(row.participants)
        )
        key = self._keys.key(self._store, case_record_id(ref)) if decrypt else None
        personal = None
        if key is not None and row.personal is not None:
            data = json.loads(key.decrypt(row.personal, _personal_context(ref)))
            personal = PersonalData(**data)
        events = []
        for r in rows:
            ids = json.loads(r.message_ids)
            note = ""
            if key is not None and r.note is not None:
                note = key.decrypt(r.note, _note_context(ref, r.sequence)).decode()
            events.append(
                StoredEvent(
                    sequence=r.sequence,
                    event_id=r.event_id,
                    kind=EventType(r.kind),
                    actor=r.actor,
                    actor_role=Role(r.actor_role),
                    at_ms=r.at_ms,
                    note=note,
                    performed_by=r.performed_by,
                    message_ids={k: v for k, v in ids.items() if k != "_received"},
                    recorded_at=r.recorded_at,
                    received_message_id=ids.get("_received"),
                )
            )
        state = CaseState()
        for e in events:
            state = apply(state, CaseEvent(e.kind, e.actor, e.at_ms, e.sequence), e.actor_role)
        purged = self._store.record_purge(case_record_id(ref)) if decrypt else None
        return Case(
            ref, row.opened_by, participants, personal, row.opened_at, state, tuple(events),
            purged,
        )  # fmt: skip

    def require(self, case_ref: str) -> Case:
        """:meth:`get`, or ``NotFoundError(case_not_found)``."""
        ref = validate_case_reference(case_ref, "case_ref")
        case = self.get(ref)
        if case is None:
            raise NotFoundError(
                "case_not_found", f"no case {ref} is known on this node", "case_ref"
            )
        return case

    async def read(
        self,
        case_ref: str,
        *,
        actor: str,
        purpose: str,
        operation: str = "read",
        operation_id: str = "getCase",
    ) -> Case:
        """:meth:`require`, recorded as one ``case.accessed`` leaf (found or not) with the
        actor and the purpose of the read, which must be one of ``[data_protection]
        purposes``: a read without one is refused (``ValidationError``
        ``purpose_required`` or ``purpose_unknown``) and that refusal recorded as a
        ``request.refused`` leaf. The reference itself stays out of the leaves (a keyed
        hash). A malformed reference raises before anything is recorded (there is no
        case it could name)."""
        ref = validate_case_reference(case_ref, "case_ref")
        now = self._node.now_ms()
        allowed = self._node.config.data_protection.purposes
        if purpose not in allowed:
            code = "purpose_unknown" if purpose else "purpose_required"
            await self._node.record_audit(leaves.request_refused(now, actor, operation_id, code))
            raise ValidationError(
                code,
                "say why the case is read: purpose is one of " + ", ".join(allowed)
                + (f" (got {purpose!r})" if purpose else ""),
                "purpose",
            )  # fmt: skip
        case = self.get(ref)
        await self._node.record_audit(
            leaves.case_accessed(
                now, actor, self._subject_hash(ref), case is not None, purpose, operation
            )
        )
        if case is None:
            raise NotFoundError(
                "case_not_found", f"no case {ref} is known on this node", "case_ref"
            )
        return case

    # --- local steps ------------------------------------------------------------------------

    async def open_case(
        self,
        participants: Sequence[Participant],
        personal: PersonalData | None,
        note: str,
        *,
        actor: str,
        then: StepHook | None = None,
    ) -> tuple[Case, dict[str, bytes]]:
        """Open a case as the identifying state and send OPEN_CASE to the other participants.

        ``participants`` must name this node as IDENTIFYING_STATE (it is added if absent)
        and at least one pinned peer; the list is checked by the domain's rules
        (``check_participants``), as a receiving peer checks it. Returns the case and the
        message id per recipient. Raises ``ValidationError`` (``invalid_participants``,
        ``unknown_case_role``, ``unknown_peer``, personal data and note errors),
        ``PermissionError`` naming a peer whose policy forbids case events.
        """
        node = self._node
        me = node.node_id
        people = list(participants)
        # Problems name participants by their place in the caller's list, not in the
        # list with this node put in front.
        added = not any(p.node_id == me for p in people)
        if added:
            people.insert(0, Participant(me, Role.IDENTIFYING_STATE))
        now = node.now_ms()
        event = CaseEvent(EventType.OPEN_CASE, me, now, 1)
        try:
            state = check_step(CaseState(), people, event)
        except ExchangeError as exc:
            raise _in_callers_list(exc, int(added)) from None
        for i, p in enumerate(people):
            if p.node_id == me:
                continue
            if p.node_id not in node.directory.peers:
                raise ValidationError(
                    "unknown_peer",
                    f"{p.node_id} is not a pinned peer of this node",
                    f"participants[{i - added}].node_id",
                )
            if "case_event" not in node.directory.policy(p.node_id):
                raise PermissionError(p.node_id)
        others = [p.node_id for p in people if p.node_id != me]
        if personal is not None:
            check_personal(personal)
        _check_note(note)
        year = dt.datetime.fromtimestamp(now / 1000, dt.UTC).year
        for _ in range(5):
            ref = new_case_reference(node.config.node.country, year, secrets.token_bytes(5))
            if self.get(ref) is None:
                break
        event_id = secrets.token_bytes(16)
        wire = notice_pb2.CaseEvent(
            event_id=event_id,
            case_ref=ref,
            type=event_to_wire(EventType.OPEN_CASE),
            sequence=1,
            occurred_at_ms=now,
            participants=[
                notice_pb2.CaseParticipant(node_id=p.node_id, role=_ROLE_TO_WIRE[p.role])
                for p in people
            ],
            note=note,
        )
        if personal is not None:
            wire.personal_data.CopyFrom(notice_pb2.PersonalData(**_personal_dict(personal)))
        leaf = leaves.case_transition(
            now, actor, "", ref, str(EventType.OPEN_CASE), str(CaseState().status),
            str(state.status), 1,
        )  # fmt: skip

        def store(tx: SqliteTransaction, queued: Sequence[Submitted]) -> None:
            # The case with its data key, its first event with the message ids it went
            # out under, its leaf and the caller's answer: in the transaction that queues
            # the envelopes.
            key = self._keys.new_key(tx, case_record_id(ref), now)
            first = self._event_row(
                key, ref, 1, event_id, EventType.OPEN_CASE, me, Role.IDENTIFYING_STATE, now,
                note, actor, now, sent=queued,
            )  # fmt: skip
            tx.insert_case(self._case_row(key, ref, me, people, personal, now), first)
            tx.audit([leaf])
            if then is not None:
                then(tx, _step_taken(ref, 1, state, queued))

        submitted = await node.submit(
            notice_pb2.Body(case_event=wire), others, actor=actor, also=store, label="case.open"
        )
        return self.require(ref), {s.peer_id: s.message_id for s in submitted}

    async def add_event(
        self,
        case_ref: str,
        kind: EventType,
        note: str,
        *,
        actor: str,
        then: StepHook | None = None,
    ) -> tuple[Case, dict[str, bytes]]:
        """Perform one step as this node: check it against the table, store it, send it
        to every other participant. Raises ``NotFoundError`` (``case_not_found``), the
        domain's ``ConflictError`` (``illegal_transition``, ``consent_required``,
        ``role_not_permitted``; ``check_step``) and ``PermissionError`` naming a peer
        whose policy forbids case events; nothing is stored or sent then."""
        _check_note(note)
        ref = validate_case_reference(case_ref, "case_ref")
        case = self.require(ref)
        if case.purged is not None:
            raise _purged_error(ref)
        node = self._node
        me = node.node_id
        now = node.now_ms()
        seq = case.state.version + 1
        event = CaseEvent(kind, me, now, seq)
        # Checked here to refuse before sealing, and again in the transaction against
        # the case as it is then: a step recorded meanwhile makes this one refused.
        check_step(case.state, case.participants, event)
        role = role_in_case(case.participants, me)
        others = [p.node_id for p in case.participants if p.node_id != me]
        for peer in others:
            if peer in node.directory.peers and "case_event" not in node.directory.policy(peer):
                raise PermissionError(peer)
        event_id = secrets.token_bytes(16)
        wire = notice_pb2.CaseEvent(
            event_id=event_id,
            case_ref=ref,
            type=event_to_wire(kind),
            sequence=seq,
            occurred_at_ms=now,
            note=note,
        )

        def store(tx: SqliteTransaction, queued: Sequence[Submitted]) -> None:
            current = self._get_in(tx, ref)
            if current is None or current.state.version != seq - 1:
                raise _case_changed(ref)
            new_state = check_step(current.state, current.participants, event)
            key = self._keys.key(tx, case_record_id(ref))
            if key is None:
                raise _purged_error(ref)
            tx.insert_case_event(
                self._event_row(key, ref, seq, event_id, kind, me, role, now, note, actor, now,
                                sent=queued)
            )  # fmt: skip
            tx.audit([
                leaves.case_transition(now, actor, "", ref, str(kind),
                                       str(current.state.status), str(new_state.status), seq)
            ])  # fmt: skip
            if then is not None:
                then(tx, _step_taken(ref, seq, new_state, queued))

        reachable = [p for p in others if p in node.directory.peers]
        submitted = await node.submit(
            notice_pb2.Body(case_event=wire), reachable, actor=actor, also=store,
            label="case.event",
        )  # fmt: skip
        return self.require(ref), {s.peer_id: s.message_id for s in submitted}

    # --- peers' steps -----------------------------------------------------------------------

    def apply(
        self, tx: SqliteTransaction, card: PeerCard, opened: OpenedEnvelope, kind: str, now: int
    ) -> None:
        """Content handler of the receiving transaction: check a peer's case step against
        the case as the transaction sees it (``check_step``, as for this node's own
        steps; see :func:`refusal` for the reason and detail) and store it with its
        leaf. A repeat of a stored event (same event id) is accepted and changes nothing.
        A refusal raises ``OpenError``; the transaction then keeps nothing of the step,
        so the next step of the batch is checked against what is truly stored. A
        participant's ``purge_notice`` is obeyed here too (:meth:`_apply_purge`)."""
        if kind == "purge_notice":
            return self._apply_purge(tx, card, opened, now)
        if kind != "case_event":
            return
        ev = opened.body.case_event
        sender = card.node_id
        try:
            ref = validate_case_reference(ev.case_ref)
            etype = event_from_wire(ev.type)
            _check_note(ev.note)
            at = int(ev.occurred_at_ms)
        except ValidationError as exc:
            raise refusal(exc) from None
        case = self._get_in(tx, ref)
        event = CaseEvent(etype, sender, at, ev.sequence)
        try:
            if case is None:
                if etype != EventType.OPEN_CASE:
                    raise OpenError(
                        Reason.ILLEGAL_TRANSITION,
                        f"case_not_found: case {ref} has not been opened on this node",
                    )
                people = _participants_from_wire(ev.participants)
                personal = (
                    check_personal(_personal_from_wire(ev.personal_data))
                    if ev.HasField("personal_data")
                    else None
                )
                state = check_step(CaseState(), people, event)
                # Every participant's node holds the case; no other node does.
                role_in_case(people, self._node.node_id)
                key = self._keys.new_key(tx, case_record_id(ref), now)
                tx.insert_case(
                    self._case_row(key, ref, sender, people, personal, at),
                    self._event_row(key, ref, 1, ev.event_id, etype, sender,
                                    Role.IDENTIFYING_STATE, at, ev.note, sender, now,
                                    received=opened.message_id),
                )  # fmt: skip
                from_status = CaseState().status
            else:
                stored = next((e for e in case.events if e.sequence == ev.sequence), None)
                if stored is not None and stored.event_id == ev.event_id:
                    return  # a repeat of a step already stored
                state = check_step(case.state, case.participants, event)
                role = role_in_case(case.participants, sender)
                # A case erased here keeps its steps but no content: a later step is
                # stored without its note (there is no key to encrypt it under).
                key = self._keys.key(tx, case_record_id(ref))
                tx.insert_case_event(
                    self._event_row(key, ref, ev.sequence, ev.event_id, etype, sender, role,
                                    at, ev.note, sender, now, received=opened.message_id)
                )  # fmt: skip
                from_status = case.state.status
        except ExchangeError as exc:
            raise refusal(exc) from None
        tx.audit([
            leaves.case_transition(now, sender, sender, ref, str(etype), str(from_status),
                                   str(state.status), ev.sequence or 1)
        ])  # fmt: skip

    # --- erasure ---------------------------------------------------------------------------

    async def erase(self, case_ref: str, reason: str, *, approver: str) -> PurgeRow:
        """Destroy a case's personal content: its data key, its personal data and notes,
        the clear bodies of the envelopes it arrived in (inbox) and the payloads of its
        envelopes not yet delivered (dead, ``record_purged``), with a ``record.purged``
        leaf, in one transaction; then the write-ahead log is checkpointed so no old
        page image keeps a copy. The steps stay (they hold no personal data).

        Unless the schedule purges it (``retention``: each node keeps its own), a
        ``purge_notice`` goes to every pinned peer this node sent the case's steps to,
        queued in the same transaction; their receipts are the confirmations
        (:meth:`confirmations`).

        Raises ``ValidationError(invalid_purge_reason)``, ``NotFoundError(case_not_found)``,
        ``ConflictError(record_purged)`` if already erased, ``ConflictError(record_on_hold)``
        under a legal hold."""
        ref = validate_case_reference(case_ref, "case_ref")
        if reason not in PURGE_REASONS:
            raise ValidationError(
                "invalid_purge_reason",
                f"reason must be one of {', '.join(PURGE_REASONS)}, got {reason!r}",
                "reason",
            )
        node = self._node
        now = node.now_ms()
        # Named by its keyed hash only, as its reads are: a reference beside the hash
        # would let anyone holding the log link every hashed case.accessed entry to it.
        leaf = leaves.record_purged(now, approver, "case", "", reason, self._subject_hash(ref))

        def work(tx: SqliteTransaction, queued: Sequence[Submitted]) -> PurgeRow:
            notices = {
                q.peer_id: q.message_id.hex() for q in sorted(queued, key=lambda q: q.peer_id)
            }
            purge = PurgeRow(
                case_record_id(ref), "case", reason, approver, now, json.dumps(notices)
            )
            self._shred(tx, ref, purge, leaf)
            return purge

        recipients = self._shared_with(ref) if reason != "retention" else []
        if recipients:
            body = notice_pb2.Body(
                purge_notice=notice_pb2.PurgeNotice(
                    purge_id=secrets.token_bytes(16),
                    case_ref=ref,
                    reason=_PURGE_TO_WIRE[reason],
                    purged_at_ms=now,
                )
            )
            kept: list[PurgeRow] = []
            await node.submit(
                body, recipients, actor=approver, label="record.purge",
                also=lambda tx, queued: kept.append(work(tx, queued)),
            )  # fmt: skip
            purge = kept[-1]
        else:
            purge = await self._store.transaction(lambda tx: work(tx, ()), label="record.purge")
        await self._flush_erased_pages()
        log.info("record.purged", record_type="case", reason=reason, notified=len(recipients))
        return purge

    async def _flush_erased_pages(self, tries: int = 10) -> bool:
        """Checkpoint the write-ahead log so no old page image of an erased record stays
        on disk. A reader holding an older snapshot (an export, a verification) makes
        the checkpoint busy: it is tried again, and if it stays busy the operator is told
        (the next checkpoint, at the latest the node's periodic one, completes it)."""
        for attempt in range(tries):
            if await self._store.checkpoint():
                return True
            await asyncio.sleep(0.05 * (attempt + 1))
        log.warning(
            "record.checkpoint_busy",
            detail="erased pages stay in the write-ahead log until the next checkpoint"
            " completes; a long reader (export, verify, backup) holds it",
        )
        return False

    def _shared_with(self, ref: str) -> list[str]:
        """The pinned peers this node sent steps of the case to."""
        peers = set()
        for e in self._store.case_events(ref):
            peers |= {p for p in json.loads(e.message_ids) if p != "_received"}
        return sorted(p for p in peers if p in self._node.directory.peers)

    def _shred(self, tx: SqliteTransaction, ref: str, purge: PurgeRow, leaf: AuditEvent) -> None:
        """The erasure itself, in the caller's transaction (see :meth:`erase`)."""
        if tx.case(ref) is None:
            raise NotFoundError(
                "case_not_found", f"no case {ref} is known on this node", "case_ref"
            )
        if tx.hold(purge.record_id) is not None:
            raise ConflictError(
                "record_on_hold",
                f"case {ref} is under a legal hold; release the hold first "
                "(`exchange-node data hold release`)",
                "case_ref",
            )
        tx.insert_purge(purge)
        received, sent = [], []
        for e in tx.case_events(ref):
            for peer, mid in json.loads(e.message_ids).items():
                if peer == "_received":
                    received.append((e.actor, bytes.fromhex(mid)))
                else:
                    sent.append((peer, bytes.fromhex(mid)))
        tx.shred_case(ref, purge.record_id)
        tx.drop_inbox_messages(received)
        tx.abandon_undelivered(sent)
        tx.audit([leaf])

    def confirmations(self, purge: PurgeRow) -> list[tuple[str, str, DeliveryRow | None]]:
        """Per peer a purge notice went to: (peer, message id hex, its delivery row, None
        if unknown). ACCEPTED or DUPLICATE in the peer's receipt: the peer confirmed."""
        out = []
        for peer, mid in sorted(json.loads(purge.notices).items()):
            rows = [r for r in self._store.message_status(bytes.fromhex(mid)) if r.peer_id == peer]
            out.append((peer, mid, rows[0] if rows else None))
        return out

    async def on_accepted(self, results: Sequence[EnvelopeResult]) -> None:
        """After the receiving commit: a purge obeyed leaves no page image of the erased
        content in the write-ahead log."""
        if any(r.kind == "purge_notice" for r in results):
            await self._flush_erased_pages()

    def unconfirmed_purges(self) -> int:
        """Purge notices this node sent that their recipient has not confirmed yet."""
        count = 0
        for purge in self._store.purges_with_notices():
            for _, _, row in self.confirmations(purge):
                if row is None or row.outcome in (None, Outcome.REJECTED):
                    count += 1
        return count

    def _apply_purge(
        self, tx: SqliteTransaction, card: PeerCard, opened: OpenedEnvelope, now: int
    ) -> None:
        """A participant's purge notice: destroy this node's copy in the receiving
        transaction. Nothing held (unknown case, already purged): accepted as it is. From
        a node outside the case: NOT_PARTICIPANT; under a legal hold here: POLICY_DENIED
        (``record_on_hold``), nothing destroyed."""
        pn = opened.body.purge_notice
        sender = card.node_id
        try:
            ref = validate_case_reference(pn.case_ref)
        except ValidationError as exc:
            raise refusal(exc) from None
        reason = _PURGE_FROM_WIRE.get(pn.reason)
        if reason is None:
            raise OpenError(Reason.INVALID_CONTENT, f"unknown purge reason {pn.reason}")
        case = self._get_in(tx, ref)
        if case is None or tx.record_purge(case_record_id(ref)) is not None:
            return
        if case.role_of(sender) is None:
            raise OpenError(
                Reason.NOT_PARTICIPANT, f"not_participant: {sender} is not in case {ref}"
            )
        if tx.hold(case_record_id(ref)) is not None:
            raise OpenError(
                Reason.POLICY_DENIED, f"record_on_hold: case {ref} is under a legal hold here"
            )
        leaf = leaves.record_purged(
            now, sender, "case", "", reason, self._subject_hash(ref), peer=sender
        )
        self._shred(tx, ref, PurgeRow(case_record_id(ref), "case", reason, sender, now), leaf)

    async def adopt_record_keys(self, at_rest: AtRest, chunk: int = 200) -> int:
        """The data step of store migration 7: give every case stored under the node-wide
        storage key a data key of its own and re-encrypt its personal data and notes
        under it, ``chunk`` cases per transaction (a crash leaves each case converted or
        not, and the next start carries on). Returns how many cases were converted."""
        done = 0
        while refs := self._store.cases_without_key(chunk):

            def work(tx: SqliteTransaction, refs: list[str] = refs) -> None:
                now = self._node.now_ms()
                for ref in refs:
                    row = tx.case(ref)
                    assert row is not None
                    key = self._keys.new_key(tx, case_record_id(ref), now)
                    personal = None
                    if row.personal is not None:
                        ctx = _personal_context(ref)
                        personal = key.encrypt(at_rest.decrypt(row.personal, ctx), ctx)
                    notes = {}
                    for e in tx.case_events(ref):
                        if e.note is not None:
                            ctx = _note_context(ref, e.sequence)
                            notes[e.sequence] = key.encrypt(at_rest.decrypt(e.note, ctx), ctx)
                    tx.set_case_content(ref, personal, notes)

            await self._store.transaction(work, label="case.adopt_keys")
            done += len(refs)
        if done:
            await self._flush_erased_pages()
            log.info("cases.adopted_record_keys", cases=done)
        return done

    # --- rows ------------------------------------------------------------------------------

    def _case_row(
        self,
        key: DataKey,
        ref: str,
        opened_by: str,
        people: Sequence[Participant],
        personal: PersonalData | None,
        opened_at: int,
    ) -> CaseRow:
        participants = json.dumps([{"node_id": p.node_id, "role": str(p.role)} for p in people])
        blob = (
            key.encrypt(json.dumps(_personal_dict(personal)).encode(), _personal_context(ref))
            if personal is not None
            else None
        )
        return CaseRow(ref, opened_by, participants, blob, opened_at)

    def _event_row(
        self,
        key: DataKey | None,
        ref: str,
        seq: int,
        event_id: bytes,
        kind: EventType,
        actor: str,
        role: Role,
        at_ms: int,
        note: str,
        performed_by: str,
        now: int,
        *,
        sent: Sequence[Submitted] = (),
        received: bytes | None = None,
    ) -> CaseEventRow:
        blob = key.encrypt(note.encode(), _note_context(ref, seq)) if note and key else None
        if received:
            ids = {"_received": received.hex()}
        else:
            ids = {i.peer_id: i.message_id.hex() for i in sorted(sent, key=lambda i: i.peer_id)}
        return CaseEventRow(
            ref, seq, event_id, str(kind), actor, str(role), at_ms, blob, performed_by,
            json.dumps(ids), now,
        )  # fmt: skip


def _purged_error(ref: str) -> ConflictError:
    return ConflictError(
        "case_purged",
        f"case {ref} was erased on this node; its steps are kept but no new step is taken",
        "case_ref",
    )


def _case_changed(ref: str) -> ConflictError:
    return ConflictError(
        "case_changed",
        f"another step was recorded on case {ref} at the same moment; read the case again "
        "and retry",
        "case_ref",
    )


def _personal_context(ref: str) -> bytes:
    return b"case-personal\x00" + ref.encode()


def _note_context(ref: str, seq: int) -> bytes:
    return b"case-note\x00" + ref.encode() + b"\x00" + str(seq).encode()


def _personal_dict(p: PersonalData) -> dict[str, str]:
    return {
        "full_name": p.full_name,
        "date_of_birth": p.date_of_birth,
        "nationality": p.nationality,
        "sex": p.sex,
        "languages": p.languages,
        "special_needs": p.special_needs,
    }


def _in_callers_list(exc: ExchangeError, shift: int) -> ExchangeError:
    """``exc`` with a ``participants[i]`` field moved back by ``shift`` places."""
    m = re.fullmatch(r"participants\[(\d+)\](.*)", exc.field or "")
    if not shift or m is None:
        return exc
    return type(exc)(exc.code, exc.message, f"participants[{int(m.group(1)) - shift}]{m.group(2)}")


def _participants_from_wire(
    participants: Sequence[notice_pb2.CaseParticipant],
) -> list[Participant]:
    """Raises ``ValidationError("unknown_case_role", ..., "participants[i].role")`` for a
    participant without a role (the wire enum unspecified or unknown)."""
    people = []
    for i, p in enumerate(participants):
        role = _ROLE_FROM_WIRE.get(p.role)
        if role is None:
            raise ValidationError(
                "unknown_case_role",
                f"participant {p.node_id} has no case role (wire value {p.role})",
                f"participants[{i}].role",
            )
        people.append(Participant(p.node_id, role))
    return people


def _personal_from_wire(p: notice_pb2.PersonalData) -> PersonalData:
    return PersonalData(
        full_name=p.full_name,
        date_of_birth=p.date_of_birth,
        nationality=p.nationality,
        sex=p.sex,
        languages=p.languages,
        special_needs=p.special_needs,
    )
