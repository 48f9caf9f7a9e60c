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

Personal data and notes are encrypted at rest with the node's storage key, bound to the
case reference (and sequence) so a blob cannot be moved to another case.
"""

from __future__ import annotations

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
from exchange_node.store.records import CaseEventRow, CaseRow

if TYPE_CHECKING:
    from exchange_node.delivery.sender import Submitted
    from exchange_node.protocol.cards import PeerCard
    from exchange_node.protocol.envelope import OpenedEnvelope
    from exchange_node.services.context import ServiceContext
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
    """Cases of one node. Built by the node; uses its store, at-rest key, submit and audit."""

    def __init__(self, node: ServiceContext) -> None:
        self._node = node
        self._store = node.store
        self._at_rest: AtRest = node.at_rest

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
        personal = None
        if decrypt and row.personal is not None:
            data = json.loads(self._at_rest.decrypt(row.personal, _personal_context(ref)))
            personal = PersonalData(**data)
        events = []
        for r in rows:
            ids = json.loads(r.message_ids)
            note = ""
            if decrypt and r.note is not None:
                note = self._at_rest.decrypt(r.note, _note_context(ref, r.sequence)).decode()
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
        return Case(ref, row.opened_by, participants, personal, row.opened_at, state, tuple(events))

    def require(self, case_ref: str) -> Case:
        """:meth:`get`, or ``NotFoundError(case_not_found)``."""
        ref = validate_case_reference(case_ref, "case_ref")
        case = self.get(ref)
        if case is None:
            raise NotFoundError(
                "case_not_found", f"no case {ref} is known on this node", "case_ref"
            )
        return case

    async def read(self, case_ref: str, *, actor: str, subject_hash: Callable[[str], str]) -> Case:
        """:meth:`require`, recorded as one ``case.accessed`` leaf (found or not).

        ``subject_hash`` maps the canonical reference to the keyed hash the leaf carries;
        the reference itself stays out of the leaf. A malformed reference raises before
        anything is recorded (there is no case it could name).
        """
        ref = validate_case_reference(case_ref, "case_ref")
        case = self.get(ref)
        await self._node.record_audit(
            leaves.case_accessed(self._node.now_ms(), actor, subject_hash(ref), case is not None)
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
        case_row = self._case_row(ref, me, people, personal, now)
        leaf = leaves.case_transition(
            now, actor, "", ref, str(EventType.OPEN_CASE), str(CaseState().status),
            str(state.status), 1,
        )  # fmt: skip

        def store(tx: SqliteTransaction, queued: Sequence[Submitted]) -> None:
            # The case, its first event with the message ids it went out under, its
            # leaf and the caller's answer: in the transaction that queues the envelopes.
            first = self._event_row(
                ref, 1, event_id, EventType.OPEN_CASE, me, Role.IDENTIFYING_STATE, now, note,
                actor, now, sent=queued,
            )  # fmt: skip
            tx.insert_case(case_row, first)
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
            tx.insert_case_event(
                self._event_row(ref, seq, event_id, kind, me, role, now, note, actor, now,
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
        so the next step of the batch is checked against what is truly stored."""
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
                tx.insert_case(
                    self._case_row(ref, sender, people, personal, at),
                    self._event_row(ref, 1, ev.event_id, etype, sender, Role.IDENTIFYING_STATE,
                                    at, ev.note, sender, now, received=opened.message_id),
                )  # fmt: skip
                from_status = CaseState().status
            else:
                stored = next((e for e in case.events if e.sequence == ev.sequence), None)
                if stored is not None and stored.event_id == ev.event_id:
                    return  # a repeat of a step already stored
                state = check_step(case.state, case.participants, event)
                role = role_in_case(case.participants, sender)
                tx.insert_case_event(
                    self._event_row(ref, ev.sequence, ev.event_id, etype, sender, role, at,
                                    ev.note, sender, now, received=opened.message_id)
                )  # fmt: skip
                from_status = case.state.status
        except ExchangeError as exc:
            raise refusal(exc) from None
        tx.audit([
            leaves.case_transition(now, sender, sender, ref, str(etype), str(from_status),
                                   str(state.status), ev.sequence or 1)
        ])  # fmt: skip

    # --- rows ------------------------------------------------------------------------------

    def _case_row(
        self,
        ref: str,
        opened_by: str,
        people: Sequence[Participant],
        personal: PersonalData | None,
        opened_at: int,
    ) -> CaseRow:
        participants = json.dumps([{"node_id": p.node_id, "role": str(p.role)} for p in people])
        blob = (
            self._at_rest.encrypt(
                json.dumps(_personal_dict(personal)).encode(), _personal_context(ref)
            )
            if personal is not None
            else None
        )
        return CaseRow(ref, opened_by, participants, blob, opened_at)

    def _event_row(
        self,
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
        blob = self._at_rest.encrypt(note.encode(), _note_context(ref, seq)) if note else None
        if received:
            ids = {"_received": received.hex()}
        else:
            ids = {i.peer_id: i.message_id.hex() for i in sorted(sent, key=lambda i: i.peer_id)}
        return CaseEventRow(
            ref, seq, event_id, str(kind), actor, str(role), at_ms, blob, performed_by,
            json.dumps(ids), now,
        )  # fmt: skip


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
