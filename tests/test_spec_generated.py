"""The generated parts of docs/protocol.md are what the code renders now.

The case lifecycle in the spec is printed from ``RULES``; a change to the table that is
not regenerated into the document (``make spec``) fails here.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import replace
from pathlib import Path

from exchange_node.domain.repatriation import (
    RULES,
    CaseEvent,
    CaseState,
    CaseStatus,
    EventType,
    Participant,
    Role,
    check_step,
    transition_table,
)
from exchange_node.errors import ConflictError, ValidationError
from exchange_node.pb.exchange.v1 import notice_pb2

DOCS = Path(__file__).resolve().parents[1] / "docs"
PROTOCOL = (DOCS / "protocol.md").read_text()


def _load_generator():
    spec = importlib.util.spec_from_file_location("spec_generator", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _part(name: str) -> str:
    match = re.search(
        rf"<!-- BEGIN GENERATED: {name}[^>]*-->\n(.*?)<!-- END GENERATED: {name} -->",
        PROTOCOL,
        re.DOTALL,
    )
    assert match, f"docs/protocol.md has no generated part {name!r}"
    return match.group(1)


def test_protocol_md_generated_parts_match_the_code():
    generator = _load_generator()
    assert generator.render(PROTOCOL) == PROTOCOL, "run `make spec` and commit docs/protocol.md"


def test_lifecycle_part_is_the_code_table():
    assert _part("lifecycle") == _load_generator().lifecycle()


def test_spec_table_lists_every_move_of_the_code_table():
    """Read back from the document, not from the renderer: every (event, from) pair."""
    rows = [
        line.split("|")[1:-1] for line in _part("lifecycle").splitlines() if line.startswith("| `")
    ]
    assert [r[0].strip().split()[0].strip("`") for r in rows] == [str(r.event) for r in RULES]
    for cells, rule in zip(rows, RULES, strict=True):
        wire = int(cells[0].split("(")[1].rstrip(") "))
        assert notice_pb2.CaseEventType.Name(wire) == f"CASE_EVENT_TYPE_{rule.event.name}"
        assert {r.strip() for r in cells[3].split(",")} == {str(r) for r in rule.roles}
        assert cells[4].strip() == ("yes" if rule.requires_consent else "no")
    pairs = {(row.event, row.source) for row in transition_table()}
    assert len(pairs) == sum(len(rule.moves) for rule in RULES)


def test_generator_check_mode_reports_a_stale_document(tmp_path, monkeypatch):
    generator = _load_generator()
    stale = PROTOCOL.replace("| `depart` (8) |", "| `depart` (99) |")
    assert stale != PROTOCOL
    copy = tmp_path / "protocol.md"
    copy.write_text(stale)
    monkeypatch.setattr(generator, "PROTOCOL", copy)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert copy.read_text() == PROTOCOL


# The rules of applying one step (16.4, "Applying one step"), read from the document:
# each numbered rule names the codes the code refuses with for that rule.

_OPENER, _ORIGIN, _IOM, _STRANGER = "JPN-ISA", "PHL-DFA", "IOM-MNL", "THA-IMM"
_CODE = re.compile(r"\((?:code |each )?`([a-z_]+)`\)")


def _step_rules() -> dict[int, set[str]]:
    section = PROTOCOL.split("**Applying one step.**")[1].split("\n\nA receiver's receipt")[0]
    rules = re.split(r"\n(?=[0-9]\. )", section.split("\n\n", 1)[1])
    return {int(rule.split(".")[0]): set(_CODE.findall(rule)) for rule in rules}


def _refused(case: CaseState, participants, event: CaseEvent) -> str:
    try:
        check_step(case, participants, event)
    except (ConflictError, ValidationError) as exc:
        return exc.code
    raise AssertionError(f"{event} was accepted")


def _codes_per_rule() -> dict[int, set[str]]:
    P, R = Participant, Role
    opening = CaseEvent(EventType.OPEN_CASE, _OPENER, 0, 1)
    good = (P(_OPENER, R.IDENTIFYING_STATE), P(_ORIGIN, R.ORIGIN_STATE), P(_IOM, R.IOM))
    opened = check_step(CaseState(), good, opening)

    def later(kind, actor=_IOM, at_ms=1, sequence=2, case=opened) -> str:
        return _refused(case, good, CaseEvent(kind, actor, at_ms, sequence))

    def opening_with(*people) -> str:
        return _refused(CaseState(), people, opening)

    return {
        1: {
            opening_with(P(_OPENER, "BOGUS"), P(_ORIGIN, R.ORIGIN_STATE)),
            opening_with(P(_OPENER, R.IDENTIFYING_STATE), P("", R.IOM)),
            opening_with(P(_OPENER, R.IDENTIFYING_STATE), P(_OPENER, R.IOM)),
            opening_with(P(_OPENER, R.IOM), P(_ORIGIN, R.ORIGIN_STATE)),
            opening_with(P(_OPENER, R.IDENTIFYING_STATE), P(_ORIGIN, R.IDENTIFYING_STATE)),
            opening_with(P(_ORIGIN, R.ORIGIN_STATE), P(_IOM, R.IOM)),
            opening_with(P(_OPENER, R.IDENTIFYING_STATE)),
        },
        2: {later(EventType.RECORD_CONSENT, actor=_STRANGER)},
        3: {later(EventType.OPEN_CASE, actor=_OPENER)},
        4: {later(EventType.RECORD_CONSENT, at_ms=-1)},
        5: {
            later(EventType.RECORD_CONSENT, sequence=3),
            later(EventType.RECORD_CONSENT, sequence=1),
        },
        6: {later(EventType.ACCEPT_RETURN)},
        7: {later(EventType.DEPART)},
        # A case in CONSENT_RECORDED without consent: the state allows the step, the
        # missing consent does not.
        8: {
            later(
                EventType.RECORD_ASSESSMENT,
                case=replace(opened, status=CaseStatus.CONSENT_RECORDED, consent=False),
            )
        },
    }


def test_spec_step_rules_name_the_codes_the_code_refuses_with():
    assert _step_rules() == _codes_per_rule()
