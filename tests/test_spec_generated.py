"""The generated parts of docs/protocol.md are what the code renders now.

The case lifecycle in the spec is printed from ``RULES``; a change to the table that is
not regenerated into the document (``make spec``) fails here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from exchange_node.domain.repatriation import RULES, transition_table
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
