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
  ``ConflictError`` before anything is stored or sent; an allowed one is stored, then
  sent to every other participant;
- a peer's step is checked by :meth:`CaseService.validate` (a receiver validator: a
  refusal becomes REJECTED in the signed receipt, with NOT_PARTICIPANT for
  ``not_participant``, ILLEGAL_TRANSITION for another ``ConflictError``, INVALID_CONTENT
  for a ``ValidationError``; the domain's code leads the detail the node logs) and
  stored by :meth:`CaseService.on_accepted` once the envelope is durably in the inbox.

Personal data and notes are encrypted at rest with the node's storage key, bound to the
case reference (and sequence) so a blob cannot be moved to another case.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from exchange_node.at_rest import AtRest
from exchange_node.audit.leaf import AuditEvent, LeafKind
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

if TYPE_CHECKING:
    from exchange_node.delivery.receiver import EnvelopeResult
    from exchange_node.node import Node
    from exchange_node.protocol.cards import PeerCard
    from exchange_node.protocol.envelope import OpenedEnvelope
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


def _step_hook(then: StepHook | None, ref: str, seq: int, state: CaseState):
    """``then`` as a ``Node.submit`` hook: called with the step and its message ids."""
    if then is None:
        return None
    return lambda tx, submitted: then(
        tx, StepTaken(ref, seq, str(state.status), {s.peer_id: s.message_id for s in submitted})
    )


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

    def __init__(self, node: Node) -> None:
        self._node = node
        self._store = node.store
        self._at_rest: AtRest = node.at_rest
        self._locks: dict[str, asyncio.Lock] = {}
        # Steps from peers checked by validate() but not yet stored by on_accepted():
        # a batch may carry several steps of one case, each checked against the last.
        self._provisional: dict[str, Case] = {}

    # --- reading ---------------------------------------------------------------------------

    def get(self, case_ref: str) -> Case | None:
        rows = self._store._read(
            "SELECT case_ref, opened_by, participants, personal, opened_at FROM cases "
            "WHERE case_ref = ?",
            (case_ref,),
        )
        if not rows:
            return None
        ref, opened_by, participants_json, personal_blob, opened_at = rows[0]
        participants = tuple(
            Participant(p["node_id"], Role(p["role"])) for p in json.loads(participants_json)
        )
        personal = None
        if personal_blob is not None:
            data = json.loads(self._at_rest.decrypt(personal_blob, _personal_context(ref)))
            personal = PersonalData(**data)
        events = tuple(
            StoredEvent(
                sequence=r[0],
                event_id=r[1],
                kind=EventType(r[2]),
                actor=r[3],
                actor_role=Role(r[4]),
                at_ms=r[5],
                note=self._at_rest.decrypt(r[6], _note_context(ref, r[0])).decode()
                if r[6] is not None
                else "",
                performed_by=r[7],
                message_ids={k: v for k, v in json.loads(r[8]).items() if k != "_received"},
                recorded_at=r[9],
                received_message_id=json.loads(r[8]).get("_received"),
            )
            for r in self._store._read(
                "SELECT sequence, event_id, kind, actor, actor_role, at_ms, note, performed_by, "
                "message_ids, recorded_at FROM case_events WHERE case_ref = ? ORDER BY sequence",
                (ref,),
            )
        )
        state = CaseState()
        for e in events:
            state = apply(state, CaseEvent(e.kind, e.actor, e.at_ms, e.sequence), e.actor_role)
        return Case(ref, opened_by, participants, personal, opened_at, state, events)

    def require(self, case_ref: str) -> Case:
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
            AuditEvent(
                time=self._node.now_ms(),
                kind=LeafKind.CASE_ACCESSED,
                actor=actor,
                subject_hash=subject_hash(ref),
                attrs={"found": "true" if case is not None else "false"},
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
        if not any(p.node_id == me for p in people):
            people.insert(0, Participant(me, Role.IDENTIFYING_STATE))
        now = node.now_ms()
        event = CaseEvent(EventType.OPEN_CASE, me, now, 1)
        state = check_step(CaseState(), people, event)
        for i, p in enumerate(people):
            if p.node_id == me:
                continue
            if p.node_id not in node.keyring.peers:
                raise ValidationError(
                    "unknown_peer",
                    f"{p.node_id} is not a pinned peer of this node",
                    f"participants[{i}].node_id",
                )
            if "case_event" not in node.policy(p.node_id):
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
        await self._store_open(ref, me, people, personal, now, event_id, note, actor, now)
        submitted = await node.submit(
            notice_pb2.Body(case_event=wire), others, actor=actor,
            then=_step_hook(then, ref, 1, state),
        )  # fmt: skip
        ids = {s.peer_id: s.message_id for s in submitted}
        await self._set_message_ids(ref, 1, ids)
        await self._audit(ref, EventType.OPEN_CASE, actor, "", CaseState().status, state, 1, now)
        return self.require(ref), ids

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
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            case = self.require(ref)
            node = self._node
            now = node.now_ms()
            seq = case.state.version + 1
            new_state = check_step(
                case.state, case.participants, CaseEvent(kind, node.node_id, now, seq)
            )
            role = role_in_case(case.participants, node.node_id)
            others = [p.node_id for p in case.participants if p.node_id != node.node_id]
            for peer in others:
                if peer in node.keyring.peers and "case_event" not in node.policy(peer):
                    raise PermissionError(peer)
            event_id = secrets.token_bytes(16)
            await self._store_event(
                ref, seq, event_id, kind, node.node_id, role, now, note, actor, now
            )
            wire = notice_pb2.CaseEvent(
                event_id=event_id,
                case_ref=ref,
                type=event_to_wire(kind),
                sequence=seq,
                occurred_at_ms=now,
                note=note,
            )
            reachable = [p for p in others if p in node.keyring.peers]
            submitted = await node.submit(
                notice_pb2.Body(case_event=wire), reachable, actor=actor,
                then=_step_hook(then, ref, seq, new_state),
            )  # fmt: skip
            ids = {s.peer_id: s.message_id for s in submitted}
            await self._set_message_ids(ref, seq, ids)
            await self._audit(ref, kind, actor, "", case.state.status, new_state, seq, now)
            return self.require(ref), ids

    # --- peers' steps -----------------------------------------------------------------------

    def validate(self, card: PeerCard, opened: OpenedEnvelope, kind: str) -> None:
        """Receiver validator: refuse a peer's case event the domain's rules do not allow
        (``check_step``, as for this node's own steps; see :func:`refusal` for the reason
        and detail), or one for a case this node does not take part in. Repeats of a
        stored event pass (the store answers DUPLICATE)."""
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
        case = self._provisional.get(ref) or self.get(ref)
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
                base = Case(ref, sender, tuple(people), personal, at, CaseState(), ())
            else:
                if etype == EventType.OPEN_CASE:
                    first = case.events[0] if case.events else None
                    if first is not None and first.event_id == ev.event_id:
                        return
                else:
                    stored = next((e for e in case.events if e.sequence == ev.sequence), None)
                    if stored is not None and stored.event_id == ev.event_id:
                        return
                base = case
                state = check_step(case.state, case.participants, event)
        except ExchangeError as exc:
            raise refusal(exc) from None
        self._provisional[ref] = Case(
            ref, base.opened_by, base.participants, base.personal, base.opened_at, state, ()
        )

    async def on_accepted(self, results: Sequence[EnvelopeResult]) -> None:
        """Store the case events among envelopes now durably accepted."""
        try:
            for r in results:
                if r.kind != "case_event" or r.opened is None:
                    continue
                try:
                    await self._accept_event(r.opened)
                except (ExchangeError, sqlite3.Error) as exc:
                    # The validator passed it moments ago; only a race can get here.
                    log.error(
                        "case.store_failed",
                        peer=r.opened.sender,
                        message_id=r.message_id.hex(),
                        error=str(exc),
                    )
        finally:
            self._provisional.clear()

    async def _accept_event(self, opened: OpenedEnvelope) -> None:
        ev = opened.body.case_event
        sender = opened.sender
        ref = validate_case_reference(ev.case_ref)
        etype = event_from_wire(ev.type)
        now = self._node.now_ms()
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            case = self.get(ref)
            if etype == EventType.OPEN_CASE:
                if case is not None:
                    return  # a repeat
                people = _participants_from_wire(ev.participants)
                personal = (
                    _personal_from_wire(ev.personal_data) if ev.HasField("personal_data") else None
                )
                state = check_step(
                    CaseState(), people, CaseEvent(etype, sender, ev.occurred_at_ms, 1)
                )
                await self._store_open(
                    ref, sender, people, personal, ev.occurred_at_ms, ev.event_id, ev.note,
                    sender, now, opened.message_id,
                )  # fmt: skip
                await self._audit(ref, etype, sender, sender, CaseState().status, state, 1, now)
                return
            if case is None or any(e.sequence == ev.sequence for e in case.events):
                return
            state = check_step(
                case.state,
                case.participants,
                CaseEvent(etype, sender, ev.occurred_at_ms, ev.sequence),
            )
            role = role_in_case(case.participants, sender)
            await self._store_event(
                ref, ev.sequence, ev.event_id, etype, sender, role, ev.occurred_at_ms, ev.note,
                sender, now, opened.message_id,
            )  # fmt: skip
            await self._audit(
                ref, etype, sender, sender, case.state.status, state, ev.sequence, now
            )

    # --- storage ----------------------------------------------------------------------------

    async def _store_open(
        self,
        ref: str,
        opened_by: str,
        people: Sequence[Participant],
        personal: PersonalData | None,
        opened_at: int,
        event_id: bytes,
        note: str,
        performed_by: str,
        now: int,
        received_message_id: bytes | None = None,
    ) -> None:
        participants = json.dumps([{"node_id": p.node_id, "role": str(p.role)} for p in people])
        blob = (
            self._at_rest.encrypt(
                json.dumps(_personal_dict(personal)).encode(), _personal_context(ref)
            )
            if personal is not None
            else None
        )
        event_row = self._event_row(
            ref, 1, event_id, EventType.OPEN_CASE, opened_by, Role.IDENTIFYING_STATE,
            opened_at, note, performed_by, now, received_message_id,
        )  # fmt: skip

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cases (case_ref, opened_by, participants, personal, opened_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (ref, opened_by, participants, blob, opened_at),
            )
            conn.execute(_INSERT_EVENT, event_row)

        await self._store._write(job)

    async def _store_event(
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
        received_message_id: bytes | None = None,
    ) -> None:
        row = self._event_row(
            ref, seq, event_id, kind, actor, role, at_ms, note, performed_by, now,
            received_message_id,
        )  # fmt: skip

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_EVENT, row)
            except sqlite3.IntegrityError:
                raise ConflictError(
                    "case_changed",
                    f"another step was recorded on case {ref} at the same moment; read the "
                    "case again and retry",
                    "case_ref",
                ) from None

        await self._store._write(job)

    def _event_row(
        self, ref, seq, event_id, kind, actor, role, at_ms, note, performed_by, now, received
    ) -> tuple:
        blob = self._at_rest.encrypt(note.encode(), _note_context(ref, seq)) if note else None
        ids = {"_received": received.hex()} if received else {}
        return (
            ref, seq, event_id, str(kind), actor, str(role), at_ms, blob, performed_by,
            json.dumps(ids), now,
        )  # fmt: skip

    async def _set_message_ids(self, ref: str, seq: int, ids: dict[str, bytes]) -> None:
        text = json.dumps({peer: mid.hex() for peer, mid in sorted(ids.items())})

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE case_events SET message_ids = ? WHERE case_ref = ? AND sequence = ?",
                (text, ref, seq),
            )

        await self._store._write(job)

    async def _audit(
        self, ref, kind: EventType, actor: str, peer: str, from_status, state: CaseState, seq, now
    ) -> None:
        await self._node.record_audit(
            AuditEvent(
                time=now,
                kind=LeafKind.CASE_TRANSITION,
                actor=actor,
                peer=peer,
                attrs={
                    "case": ref,
                    "event": str(kind),
                    "from": str(from_status),
                    "to": str(state.status),
                    "seq": str(seq),
                },
            )
        )


_INSERT_EVENT = (
    "INSERT INTO case_events (case_ref, sequence, event_id, kind, actor, actor_role, at_ms, "
    "note, performed_by, message_ids, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
