"""The repatriation case lifecycle: one table-driven state machine, shared by every node.

Rules this file keeps (after h11's ``_state.py``):

1. Everything that decides whether a case event is allowed lives here, in ``RULES``: for
   each event, the roles that may perform it, the states it moves from and to, and whether
   it needs recorded consent. No other module checks a case transition.
2. An allowed event is one table lookup; a refused one fails with a ``ConflictError`` whose
   message says what the case is, why the step is refused and, where one exists, what to
   do instead.
3. The machine is pure: ``apply`` takes a ``CaseState`` and returns a new one; time comes
   in with the event. Every participant's node applies the same events in the same order
   (``CaseEvent.sequence``) and so reaches the same state.

Who takes part in a case is the other half of the rule book: ``check_participants`` (the
list an ``open_case`` carries), ``role_in_case`` (a node's role, or ``not_participant``)
and ``check_step``, which every path that accepts a step calls: the local officer's step
before it is stored or sent, and a peer's step before its receipt says ACCEPTED.

Consent is the victim's: travel steps need it recorded, and once it is withdrawn the case
stops for good (``CONSENT_WITHDRAWN`` is terminal). Suspension pauses a case and remembers
where; ``resume`` returns there. ``cancel`` ends a case from any open state.

Case references are pseudonymous: ``<state>-<YYYY>-<8 base32 characters>``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from exchange_node.domain.icao import validate_state_code
from exchange_node.errors import ConflictError, ValidationError

__all__ = [
    "OPEN_STATES",
    "RESUME_TARGET",
    "RULES",
    "RUNNING_STATES",
    "TERMINAL",
    "CaseEvent",
    "CaseState",
    "CaseStatus",
    "EventType",
    "Participant",
    "Role",
    "Rule",
    "TableRow",
    "TimelineEntry",
    "allowed_events",
    "apply",
    "check_participants",
    "check_step",
    "new_case_reference",
    "render_spec_markdown",
    "render_table_markdown",
    "replay",
    "role_in_case",
    "transition_table",
    "validate_case_reference",
]


class CaseStatus(StrEnum):
    NOT_OPENED = "NOT_OPENED"  # before open_case; no case exists yet
    REFERRED = "REFERRED"
    CONSENT_RECORDED = "CONSENT_RECORDED"
    ASSESSED = "ASSESSED"  # joint risk and family assessment done
    ACCEPTED_BY_ORIGIN = "ACCEPTED_BY_ORIGIN"
    TRAVEL_DOCUMENT_REQUESTED = "TRAVEL_DOCUMENT_REQUESTED"
    TRAVEL_DOCUMENT_ISSUED = "TRAVEL_DOCUMENT_ISSUED"
    TRAVEL_PLANNED = "TRAVEL_PLANNED"
    IN_TRANSIT = "IN_TRANSIT"
    RECEIVED_ON_ARRIVAL = "RECEIVED_ON_ARRIVAL"
    REINTEGRATION = "REINTEGRATION"
    MONITORING = "MONITORING"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    CANCELLED = "CANCELLED"


class EventType(StrEnum):
    """Case events; values match the wire enum ``CaseEventType`` names in lower case."""

    OPEN_CASE = "open_case"
    RECORD_CONSENT = "record_consent"
    RECORD_ASSESSMENT = "record_assessment"
    ACCEPT_RETURN = "accept_return"
    REQUEST_TRAVEL_DOCUMENT = "request_travel_document"
    ISSUE_TRAVEL_DOCUMENT = "issue_travel_document"
    PLAN_TRAVEL = "plan_travel"
    DEPART = "depart"
    CONFIRM_ARRIVAL = "confirm_arrival"
    START_REINTEGRATION = "start_reintegration"
    REPORT_REINTEGRATION = "report_reintegration"
    START_MONITORING = "start_monitoring"
    CLOSE_CASE = "close_case"
    WITHDRAW_CONSENT = "withdraw_consent"
    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"


class Role(StrEnum):
    """A node's role in one case (wire enum ``CaseRole``)."""

    IDENTIFYING_STATE = "IDENTIFYING_STATE"  # where the victim was identified; opens the case
    ORIGIN_STATE = "ORIGIN_STATE"
    IOM = "IOM"
    OTHER = "OTHER"  # anyone else: may do nothing


class _ResumeTarget:
    """Table marker: the state the case was suspended from."""

    def __repr__(self) -> str:
        return "RESUME_TARGET"

    def __str__(self) -> str:
        return "(state before suspension)"


RESUME_TARGET = _ResumeTarget()

TERMINAL = frozenset({CaseStatus.CLOSED, CaseStatus.CONSENT_WITHDRAWN, CaseStatus.CANCELLED})
# States in which the case runs; suspend, withdraw_consent and cancel apply to all of them.
_RUNNING = tuple(
    s
    for s in CaseStatus
    if s not in TERMINAL and s not in {CaseStatus.NOT_OPENED, CaseStatus.SUSPENDED}
)
_OPEN = (*_RUNNING, CaseStatus.SUSPENDED)
RUNNING_STATES = frozenset(_RUNNING)
OPEN_STATES = frozenset(_OPEN)

_PARTICIPANTS = frozenset({Role.IDENTIFYING_STATE, Role.ORIGIN_STATE, Role.IOM})
_ORIGIN_OR_IOM = frozenset({Role.ORIGIN_STATE, Role.IOM})
_IDENTIFYING_OR_IOM = frozenset({Role.IDENTIFYING_STATE, Role.IOM})


@dataclass(frozen=True, slots=True)
class Rule:
    """One event: who may perform it, from which states to which, and its effect on consent.

    ``moves`` maps a source state to its target (``RESUME_TARGET`` for ``resume``).
    ``requires_consent``: refused unless consent is recorded. ``consent`` sets the consent
    flag to that value after the move (None leaves it).
    """

    event: EventType
    roles: frozenset[Role]
    moves: Mapping[CaseStatus, CaseStatus | _ResumeTarget]
    requires_consent: bool = False
    consent: bool | None = None


def _moves(pairs: Mapping[CaseStatus, CaseStatus | _ResumeTarget]):
    return MappingProxyType(dict(pairs))


S = CaseStatus
E = EventType

# THE table. Read top to bottom, it is the normal course of a case.
RULES: tuple[Rule, ...] = (
    Rule(E.OPEN_CASE, frozenset({Role.IDENTIFYING_STATE}), _moves({S.NOT_OPENED: S.REFERRED})),
    Rule(
        E.RECORD_CONSENT,
        _IDENTIFYING_OR_IOM,
        _moves({S.REFERRED: S.CONSENT_RECORDED}),
        consent=True,
    ),
    Rule(
        E.RECORD_ASSESSMENT,
        _IDENTIFYING_OR_IOM,
        _moves({S.CONSENT_RECORDED: S.ASSESSED}),
        requires_consent=True,
    ),
    Rule(
        E.ACCEPT_RETURN,
        frozenset({Role.ORIGIN_STATE}),
        _moves({S.ASSESSED: S.ACCEPTED_BY_ORIGIN}),
        requires_consent=True,
    ),
    Rule(
        E.REQUEST_TRAVEL_DOCUMENT,
        _PARTICIPANTS,
        _moves({S.ACCEPTED_BY_ORIGIN: S.TRAVEL_DOCUMENT_REQUESTED}),
        requires_consent=True,
    ),
    Rule(
        E.ISSUE_TRAVEL_DOCUMENT,
        frozenset({Role.ORIGIN_STATE}),
        _moves({S.TRAVEL_DOCUMENT_REQUESTED: S.TRAVEL_DOCUMENT_ISSUED}),
        requires_consent=True,
    ),
    # From ACCEPTED_BY_ORIGIN directly when the person still holds a valid passport;
    # from TRAVEL_PLANNED again when the plan changes.
    Rule(
        E.PLAN_TRAVEL,
        _IDENTIFYING_OR_IOM,
        _moves(
            {
                S.ACCEPTED_BY_ORIGIN: S.TRAVEL_PLANNED,
                S.TRAVEL_DOCUMENT_ISSUED: S.TRAVEL_PLANNED,
                S.TRAVEL_PLANNED: S.TRAVEL_PLANNED,
            }
        ),
        requires_consent=True,
    ),
    Rule(
        E.DEPART,
        _IDENTIFYING_OR_IOM,
        _moves({S.TRAVEL_PLANNED: S.IN_TRANSIT}),
        requires_consent=True,
    ),
    Rule(
        E.CONFIRM_ARRIVAL,
        _ORIGIN_OR_IOM,
        _moves({S.IN_TRANSIT: S.RECEIVED_ON_ARRIVAL}),
        requires_consent=True,
    ),
    Rule(
        E.START_REINTEGRATION,
        _ORIGIN_OR_IOM,
        _moves({S.RECEIVED_ON_ARRIVAL: S.REINTEGRATION}),
        requires_consent=True,
    ),
    Rule(
        E.REPORT_REINTEGRATION,
        _ORIGIN_OR_IOM,
        _moves({S.REINTEGRATION: S.REINTEGRATION, S.MONITORING: S.MONITORING}),
        requires_consent=True,
    ),
    Rule(
        E.START_MONITORING,
        _ORIGIN_OR_IOM,
        _moves({S.REINTEGRATION: S.MONITORING}),
        requires_consent=True,
    ),
    Rule(
        E.CLOSE_CASE,
        _ORIGIN_OR_IOM,
        _moves({S.REINTEGRATION: S.CLOSED, S.MONITORING: S.CLOSED}),
        requires_consent=True,
    ),
    Rule(
        E.WITHDRAW_CONSENT,
        _IDENTIFYING_OR_IOM,
        _moves({s: S.CONSENT_WITHDRAWN for s in _OPEN}),
        consent=False,
    ),
    Rule(E.SUSPEND, _PARTICIPANTS, _moves({s: S.SUSPENDED for s in _RUNNING})),
    Rule(E.RESUME, _PARTICIPANTS, _moves({S.SUSPENDED: RESUME_TARGET})),
    Rule(E.CANCEL, _PARTICIPANTS, _moves({s: S.CANCELLED for s in _OPEN})),
)

del S, E

_RULE_BY_EVENT: Mapping[EventType, Rule] = MappingProxyType({r.event: r for r in RULES})
assert set(_RULE_BY_EVENT) == set(EventType), "every event needs exactly one rule"

# Travel steps, named so that the consent guarantee can be stated and tested.
TRAVEL_EVENTS = frozenset(
    {
        EventType.REQUEST_TRAVEL_DOCUMENT,
        EventType.ISSUE_TRAVEL_DOCUMENT,
        EventType.PLAN_TRAVEL,
        EventType.DEPART,
        EventType.CONFIRM_ARRIVAL,
    }
)
assert all(_RULE_BY_EVENT[e].requires_consent for e in TRAVEL_EVENTS)

_WHY_STOPPED = {
    CaseStatus.CONSENT_WITHDRAWN: "consent was withdrawn, so the case is stopped for good "
    "and accepts no further steps",
    CaseStatus.CANCELLED: "the case was cancelled and accepts no further steps",
    CaseStatus.CLOSED: "the case is closed and accepts no further steps",
    CaseStatus.NOT_OPENED: "the case has not been opened; open_case comes first",
    CaseStatus.SUSPENDED: "the case is suspended; resume it first (a suspended case can "
    "also be cancelled or have consent withdrawn)",
}


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One step as performed by a participant node.

    ``actor`` is the performing node's id; ``at_ms`` when the step happened (Unix ms, from
    the event, never from a clock here); ``sequence``, when given, must be the case's next
    event number (1 for open_case), so that every node applies events in the same order.
    """

    kind: EventType
    actor: str
    at_ms: int
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    sequence: int
    kind: EventType
    actor: str
    actor_role: Role
    at_ms: int
    from_status: CaseStatus
    to_status: CaseStatus


@dataclass(frozen=True, slots=True)
class CaseState:
    """A case as every participant sees it after ``version`` events.

    ``consent``: consent recorded and not withdrawn. ``suspended_from``: while SUSPENDED,
    the state ``resume`` returns to; None otherwise. ``timeline``: every accepted event, in
    order, with who performed it and the move it made.
    """

    status: CaseStatus = CaseStatus.NOT_OPENED
    consent: bool = False
    suspended_from: CaseStatus | None = None
    version: int = 0
    timeline: tuple[TimelineEntry, ...] = field(default=())

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


def apply(case: CaseState, event: CaseEvent, actor_role: Role) -> CaseState:
    """Return the case after ``event`` performed by a node in ``actor_role``.

    Pure: ``case`` is unchanged. Checks, in order: the event time is a non-negative
    integer; ``sequence`` (if given) is the next one; the role may perform the event at
    all; the event is allowed from the current state; consent is recorded if needed.

    Raises ``ValidationError("invalid_event_time", ..., "event.at_ms")``,
    ``ValidationError("unknown_case_event", ..., "event.kind")``,
    ``ValidationError("unknown_case_role", ..., "actor_role")``,
    ``ConflictError("event_out_of_order", ..., "event.sequence")``,
    ``ConflictError("role_not_permitted", ..., "actor_role")``,
    ``ConflictError("illegal_transition", ..., "event")`` or
    ``ConflictError("consent_required", ..., "event")``.
    """
    if type(event.at_ms) is not int or event.at_ms < 0:
        raise ValidationError(
            "invalid_event_time",
            f"event time must be Unix milliseconds (a non-negative integer), got {event.at_ms!r}",
            "event.at_ms",
        )
    expected = case.version + 1
    if event.sequence is not None and event.sequence != expected:
        raise ConflictError(
            "event_out_of_order",
            f"event number {event.sequence} arrived but the case has {case.version} events; "
            f"the next must be number {expected}",
            "event.sequence",
        )
    try:
        rule = _RULE_BY_EVENT[EventType(event.kind)]
    except ValueError:
        raise ValidationError(
            "unknown_case_event",
            f"{event.kind!r} is not a case event; expected one of {_join(list(EventType))}",
            "event.kind",
        ) from None
    try:
        role = Role(actor_role)
    except ValueError:
        raise ValidationError(
            "unknown_case_role",
            f"{actor_role!r} is not a case role; expected one of {_join(list(Role))}",
            "actor_role",
        ) from None
    # Roles first: a node that may never perform this event learns nothing about the case.
    if role not in rule.roles:
        raise ConflictError(
            "role_not_permitted",
            f"a participant in the role {role} may not {rule.event}; only "
            f"{_join(sorted(rule.roles))} may",
            "actor_role",
        )
    target = rule.moves.get(case.status)
    if target is None:
        raise ConflictError(
            "illegal_transition",
            f"cannot {rule.event} while the case is {case.status}: {_why_not(case, rule)}",
            "event",
        )
    if rule.requires_consent and not case.consent:
        raise ConflictError(
            "consent_required",
            f"cannot {rule.event}: the person's consent is not recorded",
            "event",
        )
    if isinstance(target, _ResumeTarget):
        assert case.suspended_from is not None, "a SUSPENDED case always knows where it was"
        new_status = case.suspended_from
    else:
        new_status = target
    entry = TimelineEntry(
        sequence=expected,
        kind=rule.event,
        actor=event.actor,
        actor_role=role,
        at_ms=event.at_ms,
        from_status=case.status,
        to_status=new_status,
    )
    return CaseState(
        status=new_status,
        consent=case.consent if rule.consent is None else rule.consent,
        suspended_from=case.status if new_status is CaseStatus.SUSPENDED else None,
        version=expected,
        timeline=(*case.timeline, entry),
    )


# Participants ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Participant:
    """A node taking part in a case, in one role (``Role.OTHER``: informed, may do nothing)."""

    node_id: str
    role: Role


def check_participants(participants: Sequence[Participant], opener: str) -> tuple[Participant, ...]:
    """Refuse a participant list that does not make a case; return it as a tuple.

    ``opener`` is the node opening the case. Every participant has a node id and a case
    role and is named once; the opener is named, as ``IDENTIFYING_STATE``, and is the only
    identifying state; at least one other node is named.

    Raises ``ValidationError("unknown_case_role", ..., "participants[i].role")``,
    ``ValidationError("invalid_participants", ..., "participants[i].node_id" |
    "participants[i].role" | "participants")`` or
    ``ConflictError("not_participant", ..., "participants")`` when the opener is not named.
    """
    people = tuple(participants)
    seen: set[str] = set()
    for i, p in enumerate(people):
        try:
            role = Role(p.role)
        except ValueError:
            raise ValidationError(
                "unknown_case_role",
                f"{p.role!r} is not a case role; expected one of {_join(list(Role))}",
                f"participants[{i}].role",
            ) from None
        if not isinstance(p.node_id, str) or not p.node_id:
            raise ValidationError(
                "invalid_participants", "a participant has no node id", f"participants[{i}].node_id"
            )
        if p.node_id in seen:
            raise ValidationError(
                "invalid_participants", f"{p.node_id} is named twice", f"participants[{i}].node_id"
            )
        seen.add(p.node_id)
        if p.node_id == opener and role is not Role.IDENTIFYING_STATE:
            raise ValidationError(
                "invalid_participants",
                f"the node opening a case is the identifying state; give {opener} the role "
                f"{Role.IDENTIFYING_STATE}",
                f"participants[{i}].role",
            )
        if p.node_id != opener and role is Role.IDENTIFYING_STATE:
            raise ValidationError(
                "invalid_participants",
                f"only the node opening the case ({opener}) is the identifying state; "
                f"{p.node_id} may not be",
                f"participants[{i}].role",
            )
    if opener not in seen:
        raise ConflictError(
            "not_participant",
            f"{opener} opens the case but is not among its participants",
            "participants",
        )
    if len(seen) < 2:
        raise ValidationError(
            "invalid_participants",
            "name at least one other participant (the origin state's node, IOM)",
            "participants",
        )
    return people


def role_in_case(participants: Sequence[Participant], node_id: str) -> Role:
    """The role of ``node_id`` in a case with ``participants``.

    Raises ``ConflictError("not_participant", ..., "participants")``.
    """
    role = next((p.role for p in participants if p.node_id == node_id), None)
    if role is None:
        raise ConflictError(
            "not_participant", f"{node_id} is not a participant of the case", "participants"
        )
    return Role(role)


def check_step(case: CaseState, participants: Sequence[Participant], event: CaseEvent) -> CaseState:
    """Return the case after ``event``, performed by ``event.actor``, or refuse it.

    The one check of a case step, whichever node performs it and wherever it is checked.
    ``participants`` are the case's; for ``open_case`` on a case not yet opened, the list
    the step names, checked by ``check_participants``. Then: the actor is a participant;
    ``open_case`` comes only once; and ``apply`` with the actor's role (roles, the
    lifecycle, consent, order).

    Raises what ``check_participants``, ``role_in_case`` and ``apply`` raise, and
    ``ConflictError("illegal_transition", ..., "event")`` for a second ``open_case``.
    """
    opening = event.kind == EventType.OPEN_CASE
    if opening and case.status is CaseStatus.NOT_OPENED:
        check_participants(participants, event.actor)
    role = role_in_case(participants, event.actor)
    if opening and case.status is not CaseStatus.NOT_OPENED:
        raise ConflictError(
            "illegal_transition",
            f"the case is already open ({case.status}); open_case comes only once",
            "event",
        )
    return apply(case, event, role)


def replay(events: Iterable[tuple[CaseEvent, Role]]) -> CaseState:
    """Apply ``(event, role)`` pairs in order to a new case; raises as ``apply`` does."""
    case = CaseState()
    for event, role in events:
        case = apply(case, event, role)
    return case


def allowed_events(case: CaseState, role: Role) -> tuple[EventType, ...]:
    """The events ``role`` may perform on ``case`` now, in table order."""
    return tuple(
        rule.event
        for rule in RULES
        if role in rule.roles
        and case.status in rule.moves
        and (case.consent or not rule.requires_consent)
    )


def _why_not(case: CaseState, rule: Rule) -> str:
    if case.status in _WHY_STOPPED:
        return _WHY_STOPPED[case.status]
    return f"{rule.event} is possible only while the case is {_join(list(rule.moves))}"


def _join(items: list) -> str:
    names = [str(i) for i in items]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# The table for people ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRow:
    event: EventType
    source: CaseStatus
    target: CaseStatus | _ResumeTarget
    roles: tuple[Role, ...]
    requires_consent: bool


def transition_table() -> tuple[TableRow, ...]:
    """Every (event, source state) pair the machine accepts, in table order."""
    return tuple(
        TableRow(rule.event, source, target, tuple(sorted(rule.roles)), rule.requires_consent)
        for rule in RULES
        for source, target in rule.moves.items()
    )


def render_table_markdown() -> str:
    """The transition table as Markdown, for the documentation; generated, never edited."""
    lines = [
        "| Event | From | To | Roles | Needs consent |",
        "|---|---|---|---|---|",
    ]
    for row in transition_table():
        lines.append(
            f"| `{row.event}` | {row.source} | {row.target} | "
            f"{', '.join(row.roles)} | {'yes' if row.requires_consent else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def render_spec_markdown(wire_value: Callable[[EventType], int]) -> str:
    """The lifecycle part of docs/protocol.md 16.4: states and the table, one row per event.

    ``wire_value`` maps an event to its ``CaseEventType`` number. Generated from ``RULES``
    by ``docs/generate.py``; the test suite fails when the document and this differ.
    """

    def names(states: Iterable[CaseStatus]) -> str:
        return ", ".join(f"`{s}`" for s in states)

    lines = [
        f"States: {names(s for s in CaseStatus if s not in TERMINAL)}, and the terminal "
        f"{names(s for s in CaseStatus if s in TERMINAL)}. A case that does not exist yet "
        'is `NOT_OPENED`. "Running" means every state except '
        f"{names(s for s in CaseStatus if s not in RUNNING_STATES and s not in TERMINAL)} "
        f"and the terminal ones: {names(_RUNNING)}.",
        "",
        "| Event (wire value) | From | To | Roles | Needs consent | Consent after |",
        "|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        sources = set(rule.moves)
        if sources == RUNNING_STATES:
            source = "any running state"
        elif sources == OPEN_STATES:
            source = f"any running state, {CaseStatus.SUSPENDED}"
        else:
            source = ", ".join(rule.moves)
        targets = set(rule.moves.values())
        if all(target is s for s, target in rule.moves.items()):
            target = "(unchanged)"
        elif targets == {RESUME_TARGET}:
            target = "the state before suspension"
        elif len(targets) == 1:
            target = str(next(iter(targets)))
        else:
            target = "; ".join(f"{s} → {t}" for s, t in rule.moves.items())
        consent_after = {None: "unchanged", True: "recorded", False: "withdrawn"}[rule.consent]
        lines.append(
            f"| `{rule.event}` ({wire_value(rule.event)}) | {source} | {target} | "
            f"{', '.join(sorted(rule.roles))} | {'yes' if rule.requires_consent else 'no'} | "
            f"{consent_after} |"
        )
    return "\n".join(lines) + "\n"


# Case references ---------------------------------------------------------------------------

_REFERENCE = re.compile(r"([A-Z]{1,3})-([0-9]{4})-([A-Z2-7]{8})")
REFERENCE_RANDOM_BYTES = 5  # 40 bits: eight base32 characters


def validate_case_reference(reference: str, field: str = "case_ref") -> str:
    """Return the canonical (upper-case) case reference ``<state>-<YYYY>-<8 base32>``.

    ``<state>`` is the opening state's ICAO code (``D`` for Germany), ``YYYY`` the year the
    case was opened, the last part eight RFC 4648 base32 characters (A-Z, 2-7). The
    reference says nothing about the person.

    Raises ``ValidationError("invalid_case_reference", ..., field)``.
    """
    if not isinstance(reference, str):
        raise ValidationError(
            "invalid_case_reference", "expected the case reference as text", field
        )
    canonical = reference.strip().upper()
    match = _REFERENCE.fullmatch(canonical)
    if match is None:
        raise ValidationError(
            "invalid_case_reference",
            f"{reference!r} is not a case reference: expected <state>-<YYYY>-<8 characters "
            "A-Z or 2-7>, e.g. JPN-2026-K7QW2M4D",
            field,
        )
    try:
        validate_state_code(match.group(1), field)
    except ValidationError as exc:
        raise ValidationError("invalid_case_reference", exc.message, field) from None
    return canonical


def new_case_reference(state: str, year: int, randomness: bytes) -> str:
    """Make a case reference from the opening state, the year and 5 random bytes.

    Pure: the caller supplies the randomness (``secrets.token_bytes(5)``) and the year.
    Uniqueness is the store's job; 40 random bits make a clash within one state and year
    unlikely, not impossible.

    Raises ``ValidationError`` for a bad state or year; ``ValueError`` if ``randomness`` is
    not exactly 5 bytes (a programming error, not an input error).
    """
    if len(randomness) != REFERENCE_RANDOM_BYTES:
        raise ValueError(
            f"need exactly {REFERENCE_RANDOM_BYTES} random bytes, got {len(randomness)}"
        )
    code = validate_state_code(state, "case.state")
    if type(year) is not int or not 1000 <= year <= 9999:
        raise ValidationError(
            "invalid_case_reference", f"year {year!r} is not four digits", "case.year"
        )
    return f"{code}-{year:04d}-{base64.b32encode(randomness).decode('ascii')}"
