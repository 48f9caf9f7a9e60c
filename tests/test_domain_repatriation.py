"""The repatriation case lifecycle: the table, every refusal, and properties over random runs."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_node.domain.repatriation import (
    RESUME_TARGET,
    RULES,
    TERMINAL,
    TRAVEL_EVENTS,
    CaseEvent,
    CaseState,
    CaseStatus,
    EventType,
    Participant,
    Role,
    allowed_events,
    apply,
    check_participants,
    check_step,
    new_case_reference,
    render_table_markdown,
    replay,
    role_in_case,
    transition_table,
    validate_case_reference,
)
from exchange_node.errors import ConflictError, ValidationError

E = EventType
S = CaseStatus
ID, ORIGIN, IOM, OTHER = Role.IDENTIFYING_STATE, Role.ORIGIN_STATE, Role.IOM, Role.OTHER

HAPPY_PATH = [
    (E.OPEN_CASE, ID),
    (E.RECORD_CONSENT, ID),
    (E.RECORD_ASSESSMENT, IOM),
    (E.ACCEPT_RETURN, ORIGIN),
    (E.REQUEST_TRAVEL_DOCUMENT, ORIGIN),
    (E.ISSUE_TRAVEL_DOCUMENT, ORIGIN),
    (E.PLAN_TRAVEL, IOM),
    (E.DEPART, IOM),
    (E.CONFIRM_ARRIVAL, ORIGIN),
    (E.START_REINTEGRATION, IOM),
    (E.REPORT_REINTEGRATION, IOM),
    (E.START_MONITORING, IOM),
    (E.REPORT_REINTEGRATION, IOM),
    (E.CLOSE_CASE, IOM),
]

_NODE = {ID: "JPN-ISA", ORIGIN: "PHL-DFA", IOM: "IOM-MNL", OTHER: "THA-IMM"}


def _event(kind: EventType, role: Role, at_ms: int = 1_000, sequence: int | None = None):
    return CaseEvent(kind=kind, actor=_NODE[role], at_ms=at_ms, sequence=sequence)


def _run(steps) -> CaseState:
    return replay((_event(kind, role, at_ms=i), role) for i, (kind, role) in enumerate(steps))


def _refusal(case: CaseState, kind: EventType, role: Role) -> ConflictError:
    with pytest.raises(ConflictError) as err:
        apply(case, _event(kind, role), role)
    return err.value


def _permitted_role(kind: EventType) -> Role:
    return sorted(next(r for r in RULES if r.event == kind).roles)[0]


# Reaching every state, so that tests can start from any of them.


def _paths() -> dict[tuple[CaseStatus, CaseStatus | None], list[tuple[EventType, Role]]]:
    """Shortest path to every reachable (status, suspended_from), by breadth-first search."""
    start = CaseState()
    seen = {(start.status, start.suspended_from): []}
    queue = deque([(start, [])])
    while queue:
        case, path = queue.popleft()
        for kind in EventType:
            role = _permitted_role(kind)
            try:
                nxt = apply(case, _event(kind, role), role)
            except ConflictError:
                continue
            key = (nxt.status, nxt.suspended_from)
            if key not in seen:
                seen[key] = [*path, (kind, role)]
                queue.append((nxt, seen[key]))
    return seen


PATHS = _paths()


def _case_in(status: CaseStatus) -> CaseState:
    path = next(p for (s, _), p in PATHS.items() if s == status)
    return _run(path)


# The normal course -------------------------------------------------------------------------


def test_happy_path_ends_closed_with_every_step_in_the_timeline():
    case = _run(HAPPY_PATH)
    assert case.status is S.CLOSED
    assert case.version == len(HAPPY_PATH)
    assert [e.kind for e in case.timeline] == [k for k, _ in HAPPY_PATH]
    assert [e.sequence for e in case.timeline] == list(range(1, len(HAPPY_PATH) + 1))


def test_timeline_entry_records_who_did_what_when_and_the_move():
    case = _run(HAPPY_PATH[:3])
    entry = case.timeline[2]
    assert (entry.kind, entry.actor, entry.actor_role, entry.at_ms) == (
        E.RECORD_ASSESSMENT,
        "IOM-MNL",
        IOM,
        2,
    )
    assert (entry.from_status, entry.to_status) == (S.CONSENT_RECORDED, S.ASSESSED)


def test_apply_leaves_the_given_case_unchanged():
    before = _run(HAPPY_PATH[:2])
    apply(before, _event(E.RECORD_ASSESSMENT, IOM), IOM)
    assert before.status is S.CONSENT_RECORDED
    assert before.version == 2


def test_consent_flag_is_set_by_record_consent():
    assert not _run(HAPPY_PATH[:1]).consent
    assert _run(HAPPY_PATH[:2]).consent


def test_travel_can_be_planned_without_a_new_document():
    case = _run([*HAPPY_PATH[:4], (E.PLAN_TRAVEL, IOM)])
    assert case.status is S.TRAVEL_PLANNED


def test_travel_can_be_planned_again():
    case = _run([*HAPPY_PATH[:7], (E.PLAN_TRAVEL, ID)])
    assert case.status is S.TRAVEL_PLANNED


def test_reintegration_can_be_reported_repeatedly():
    case = _run([*HAPPY_PATH[:10], *[(E.REPORT_REINTEGRATION, ORIGIN)] * 6])
    assert case.status is S.REINTEGRATION
    assert case.version == 16


# Withdrawal, suspension, cancellation ------------------------------------------------------


def test_withdrawn_consent_stops_the_case_and_refuses_travel_with_the_reason():
    case = _run([*HAPPY_PATH[:7], (E.WITHDRAW_CONSENT, IOM)])
    assert case.status is S.CONSENT_WITHDRAWN
    assert not case.consent
    err = _refusal(case, E.PLAN_TRAVEL, IOM)
    assert (err.code, err.field) == ("illegal_transition", "event")
    assert err.message.startswith("cannot plan_travel while the case is CONSENT_WITHDRAWN: ")
    assert "consent was withdrawn" in err.message


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_state_refuses_every_event(status):
    case = _case_in(status)
    for kind in EventType:
        assert _refusal(case, kind, _permitted_role(kind)).code == "illegal_transition"


def test_suspended_case_resumes_to_the_state_it_was_suspended_from():
    case = _run([*HAPPY_PATH[:6], (E.SUSPEND, ORIGIN)])
    assert (case.status, case.suspended_from) == (S.SUSPENDED, S.TRAVEL_DOCUMENT_ISSUED)
    resumed = apply(case, _event(E.RESUME, ID), ID)
    assert (resumed.status, resumed.suspended_from) == (S.TRAVEL_DOCUMENT_ISSUED, None)
    assert resumed.consent


def test_suspended_case_refuses_progress_and_says_to_resume():
    case = _run([*HAPPY_PATH[:6], (E.SUSPEND, ORIGIN)])
    err = _refusal(case, E.PLAN_TRAVEL, IOM)
    assert err.code == "illegal_transition"
    assert "resume it first" in err.message


def test_suspended_case_can_be_cancelled_or_have_consent_withdrawn():
    case = _run([*HAPPY_PATH[:3], (E.SUSPEND, IOM)])
    assert apply(case, _event(E.CANCEL, ID), ID).status is S.CANCELLED
    assert apply(case, _event(E.WITHDRAW_CONSENT, ID), ID).status is S.CONSENT_WITHDRAWN


def test_suspending_twice_is_refused():
    case = _run([*HAPPY_PATH[:3], (E.SUSPEND, IOM)])
    assert _refusal(case, E.SUSPEND, IOM).code == "illegal_transition"


def test_out_of_order_step_names_the_states_it_needs():
    err = _refusal(_run(HAPPY_PATH[:2]), E.DEPART, IOM)
    assert err.code == "illegal_transition"
    assert "only while the case is TRAVEL_PLANNED" in err.message


def test_no_event_but_open_case_before_the_case_is_opened():
    err = _refusal(CaseState(), E.RECORD_CONSENT, ID)
    assert err.code == "illegal_transition"
    assert "open_case comes first" in err.message


# Roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "role"),
    [
        (E.OPEN_CASE, ORIGIN),
        (E.OPEN_CASE, IOM),
        (E.ACCEPT_RETURN, IOM),
        (E.ACCEPT_RETURN, ID),
        (E.ISSUE_TRAVEL_DOCUMENT, IOM),
        (E.PLAN_TRAVEL, ORIGIN),
        (E.CONFIRM_ARRIVAL, ID),
        (E.RECORD_CONSENT, ORIGIN),
        (E.WITHDRAW_CONSENT, ORIGIN),
        (E.RECORD_ASSESSMENT, ORIGIN),
    ],
)
def test_role_not_permitted_is_refused_naming_who_may(kind, role):
    err = _refusal(CaseState(), kind, role)
    assert (err.code, err.field) == ("role_not_permitted", "actor_role")
    assert "only" in err.message


@pytest.mark.parametrize("kind", list(EventType))
def test_a_non_participant_may_do_nothing(kind):
    assert _refusal(_case_in(S.REINTEGRATION), kind, OTHER).code == "role_not_permitted"


def test_allowed_events_lists_what_a_role_may_do_now():
    case = _run(HAPPY_PATH[:4])  # ACCEPTED_BY_ORIGIN
    assert allowed_events(case, IOM) == (
        E.REQUEST_TRAVEL_DOCUMENT,
        E.PLAN_TRAVEL,
        E.WITHDRAW_CONSENT,
        E.SUSPEND,
        E.CANCEL,
    )
    assert allowed_events(case, OTHER) == ()


# Event checks ------------------------------------------------------------------------------


def test_event_with_the_next_sequence_number_is_accepted():
    case = apply(CaseState(), _event(E.OPEN_CASE, ID, sequence=1), ID)
    assert case.version == 1


@pytest.mark.parametrize("sequence", [0, 1, 3])
def test_event_with_another_sequence_number_is_refused(sequence):
    case = _run(HAPPY_PATH[:1])
    with pytest.raises(ConflictError) as err:
        apply(case, _event(E.RECORD_CONSENT, ID, sequence=sequence), ID)
    assert (err.value.code, err.value.field) == ("event_out_of_order", "event.sequence")


@pytest.mark.parametrize("at_ms", [-1, 1.5, True, None])
def test_event_time_must_be_non_negative_integer_milliseconds(at_ms):
    with pytest.raises(ValidationError) as err:
        apply(CaseState(), CaseEvent(E.OPEN_CASE, "JPN-ISA", at_ms), ID)  # type: ignore[arg-type]
    assert (err.value.code, err.value.field) == ("invalid_event_time", "event.at_ms")


def test_unknown_event_kind_is_a_validation_error():
    with pytest.raises(ValidationError) as err:
        apply(CaseState(), CaseEvent("teleport", "JPN-ISA", 1), ID)  # type: ignore[arg-type]
    assert (err.value.code, err.value.field) == ("unknown_case_event", "event.kind")


def test_unknown_role_is_a_validation_error():
    with pytest.raises(ValidationError) as err:
        apply(CaseState(), _event(E.OPEN_CASE, ID), "JUDGE")  # type: ignore[arg-type]
    assert (err.value.code, err.value.field) == ("unknown_case_role", "actor_role")


def test_event_kind_and_role_may_be_given_as_their_string_values():
    case = apply(CaseState(), CaseEvent("open_case", "JPN-ISA", 1), "IDENTIFYING_STATE")  # type: ignore[arg-type]
    assert case.status is S.REFERRED


def test_step_needing_consent_is_refused_when_consent_is_not_recorded():
    # Unreachable through apply (consent precedes every such state); the guard stands anyway.
    case = CaseState(status=S.TRAVEL_PLANNED, consent=False, version=7)
    err = _refusal(case, E.DEPART, IOM)
    assert (err.code, err.field) == ("consent_required", "event")


# The table ---------------------------------------------------------------------------------


def test_every_table_row_is_reachable():
    reached = {status for status, _ in PATHS}
    for row in transition_table():
        assert row.source in reached, row
        start = _case_in(row.source)
        role = row.roles[0]
        after = apply(start, _event(row.event, role), role)
        expected = start.suspended_from if row.target is RESUME_TARGET else row.target
        assert after.status is expected


def test_every_state_is_reachable():
    assert {status for status, _ in PATHS} == set(CaseStatus)


def test_every_pair_missing_from_the_table_is_an_illegal_transition():
    in_table = {(row.event, row.source) for row in transition_table()}
    for status in CaseStatus:
        case = _case_in(status)
        for kind in EventType:
            if (kind, status) in in_table:
                continue
            assert _refusal(case, kind, _permitted_role(kind)).code == "illegal_transition"


def test_every_role_missing_from_a_row_is_refused():
    for row in transition_table():
        case = _case_in(row.source)
        for role in set(Role) - set(row.roles):
            assert _refusal(case, row.event, role).code == "role_not_permitted"


def test_travel_steps_all_require_consent_in_the_table():
    assert all(row.requires_consent for row in transition_table() if row.event in TRAVEL_EVENTS)


def test_markdown_table_has_one_line_per_row():
    text = render_table_markdown()
    lines = text.strip().splitlines()
    assert lines[0] == "| Event | From | To | Roles | Needs consent |"
    assert len(lines) == 2 + len(transition_table())
    assert "| `resume` | SUSPENDED | (state before suspension) |" in text


# Properties over random runs ---------------------------------------------------------------

_TABLE_STATES = {row.source for row in transition_table()} | {
    row.target for row in transition_table() if row.target is not RESUME_TARGET
}
_STEPS = st.lists(
    st.tuples(st.sampled_from(list(EventType)), st.sampled_from(list(Role))), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_random_runs_stay_in_table_states_and_travel_never_follows_withdrawal(steps):
    case = CaseState()
    withdrawn = False
    for i, (kind, role) in enumerate(steps):
        try:
            after = apply(case, _event(kind, role, at_ms=i), role)
        except ConflictError:
            continue
        assert after.status in _TABLE_STATES
        assert after.version == case.version + 1
        assert not (withdrawn and kind in TRAVEL_EVENTS), "travel step accepted after withdrawal"
        assert after.status is not S.SUSPENDED or after.suspended_from not in (None, S.SUSPENDED)
        withdrawn = withdrawn or kind is E.WITHDRAW_CONSENT
        case = after
    if withdrawn:
        assert case.status is S.CONSENT_WITHDRAWN
        assert not case.consent


# Case references ---------------------------------------------------------------------------


def test_case_reference_is_state_year_and_base32_of_the_randomness():
    assert new_case_reference("jpn", 2026, bytes(5)) == "JPN-2026-AAAAAAAA"
    assert new_case_reference("D<<", 2026, b"\xff" * 5) == "D-2026-77777777"


def test_generated_case_reference_validates():
    ref = new_case_reference("PHL", 2026, b"\x12\x34\x56\x78\x9a")
    assert validate_case_reference(ref) == ref


def test_case_reference_needs_exactly_five_random_bytes():
    with pytest.raises(ValueError):
        new_case_reference("JPN", 2026, bytes(4))


def test_case_reference_state_must_be_an_icao_code():
    with pytest.raises(ValidationError) as err:
        new_case_reference("ZZZ", 2026, bytes(5))
    assert (err.value.code, err.value.field) == ("invalid_state_code", "case.state")


@pytest.mark.parametrize("year", [999, 10_000, "2026"])
def test_case_reference_year_must_be_four_digits(year):
    with pytest.raises(ValidationError) as err:
        new_case_reference("JPN", year, bytes(5))  # type: ignore[arg-type]
    assert (err.value.code, err.value.field) == ("invalid_case_reference", "case.year")


def test_case_reference_is_upper_cased():
    assert validate_case_reference(" jpn-2026-k7qw2m4d ") == "JPN-2026-K7QW2M4D"


@pytest.mark.parametrize(
    "ref",
    ["JPN-2026-K7QW2M4", "JPN-2026-K7QW2M4D1", "JPN-26-K7QW2M4D", "JPN-2026-K7QW2M41",
     "JPN2026K7QW2M4D", "", "ZZZ-2026-K7QW2M4D", "DEU-2026-K7QW2M4D"],
)  # fmt: skip
def test_malformed_case_reference_is_rejected(ref):
    with pytest.raises(ValidationError) as err:
        validate_case_reference(ref, "case.reference")
    assert (err.value.code, err.value.field) == ("invalid_case_reference", "case.reference")


def test_non_text_case_reference_is_rejected():
    with pytest.raises(ValidationError) as err:
        validate_case_reference(None)  # type: ignore[arg-type]
    assert err.value.code == "invalid_case_reference"


# Participants ------------------------------------------------------------------------------

P = Participant
OPENER = "JPN-ISA"
PEOPLE = (P(OPENER, ID), P("PHL-DFA", ORIGIN), P("IOM-MNL", IOM), P("THA-IMM", OTHER))


def test_a_case_of_an_identifying_state_and_others_is_a_valid_participant_list():
    assert check_participants(list(PEOPLE), OPENER) == PEOPLE


@pytest.mark.parametrize(
    ("people", "code", "field"),
    [
        ([P(OPENER, ID), P("PHL-DFA", ID)], "invalid_participants", "participants[1].role"),
        ([P("PHL-DFA", ID), P(OPENER, ID)], "invalid_participants", "participants[0].role"),
        ([P(OPENER, ORIGIN), P("PHL-DFA", ORIGIN)], "invalid_participants",
         "participants[0].role"),
        ([P(OPENER, ID), P("PHL-DFA", ORIGIN), P("PHL-DFA", IOM)], "invalid_participants",
         "participants[2].node_id"),
        ([P(OPENER, ID), P(OPENER, ID)], "invalid_participants", "participants[1].node_id"),
        ([P(OPENER, ID), P("", ORIGIN)], "invalid_participants", "participants[1].node_id"),
        ([P(OPENER, ID)], "invalid_participants", "participants"),
        ([P(OPENER, ID), P("PHL-DFA", "JUDGE")], "unknown_case_role", "participants[1].role"),
        ([P("PHL-DFA", ORIGIN), P("IOM-MNL", IOM)], "not_participant", "participants"),
    ],
)  # fmt: skip
def test_a_participant_list_breaking_a_rule_is_refused_naming_the_field(people, code, field):
    with pytest.raises((ValidationError, ConflictError)) as err:
        check_participants(people, OPENER)
    assert (err.value.code, err.value.field) == (code, field)


def test_the_only_identifying_state_is_the_opener():
    with pytest.raises(ValidationError) as err:
        check_participants([P(OPENER, ID), P("PHL-DFA", ID)], OPENER)
    assert "only the node opening the case (JPN-ISA)" in err.value.message


def test_role_in_case_names_the_role_or_refuses_a_node_outside_the_case():
    assert role_in_case(PEOPLE, "IOM-MNL") is IOM
    with pytest.raises(ConflictError) as err:
        role_in_case(PEOPLE, "KOR-MOJ")
    assert (err.value.code, err.value.field) == ("not_participant", "participants")


def test_check_step_opens_a_case_for_the_identifying_state():
    case = check_step(CaseState(), PEOPLE, CaseEvent(E.OPEN_CASE, OPENER, 1, 1))
    assert (case.status, case.timeline[0].actor_role) == (S.REFERRED, ID)


def test_check_step_checks_the_participants_an_open_case_names():
    with pytest.raises(ValidationError) as err:
        check_step(
            CaseState(), [P(OPENER, ID), P("PHL-DFA", ID)], CaseEvent(E.OPEN_CASE, OPENER, 1, 1)
        )
    assert err.value.code == "invalid_participants"


@pytest.mark.parametrize("actor", [OPENER, "PHL-DFA", "THA-IMM"])
def test_open_case_comes_only_once_whoever_sends_it(actor):
    case = check_step(CaseState(), PEOPLE, CaseEvent(E.OPEN_CASE, OPENER, 1, 1))
    with pytest.raises(ConflictError) as err:
        check_step(case, PEOPLE, CaseEvent(E.OPEN_CASE, actor, 2, 2))
    assert (err.value.code, err.value.field) == ("illegal_transition", "event")
    assert "already open" in err.value.message


def test_check_step_refuses_a_node_outside_the_case_before_anything_else():
    case = check_step(CaseState(), PEOPLE, CaseEvent(E.OPEN_CASE, OPENER, 1, 1))
    for kind in (E.OPEN_CASE, E.CANCEL):
        with pytest.raises(ConflictError) as err:
            check_step(case, PEOPLE, CaseEvent(kind, "KOR-MOJ", 2, 2))
        assert err.value.code == "not_participant"


def test_check_step_applies_the_table_with_the_actors_role():
    case = check_step(CaseState(), PEOPLE, CaseEvent(E.OPEN_CASE, OPENER, 1, 1))
    with pytest.raises(ConflictError) as err:
        check_step(case, PEOPLE, CaseEvent(E.RECORD_CONSENT, "PHL-DFA", 2, 2))
    assert err.value.code == "role_not_permitted"
    after = check_step(case, PEOPLE, CaseEvent(E.RECORD_CONSENT, "IOM-MNL", 2, 2))
    assert after.status is S.CONSENT_RECORDED
