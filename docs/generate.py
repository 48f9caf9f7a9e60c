"""Regenerate the parts of docs/protocol.md that are generated from the code.

Each generated part sits between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->``; the text between is replaced with what the code renders.
Never edit a generated part by hand: change the code and run ``make spec``.

    python docs/generate.py          rewrite docs/protocol.md
    python docs/generate.py --check  exit 1 if docs/protocol.md differs from the code

``tests/test_spec_generated.py`` runs the check as part of the test suite.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from exchange_node.domain import repatriation
from exchange_node.pb.exchange.v1 import notice_pb2

PROTOCOL = Path(__file__).resolve().parent / "protocol.md"


def _case_event_wire_value(event: repatriation.EventType) -> int:
    return notice_pb2.CaseEventType.Value(f"CASE_EVENT_TYPE_{event.name}")


def lifecycle() -> str:
    return repatriation.render_spec_markdown(_case_event_wire_value)


SECTIONS: dict[str, Callable[[], str]] = {"lifecycle": lifecycle}

_PART = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def render(text: str) -> str:
    """``text`` with every generated part replaced by its current rendering."""
    found: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise SystemExit(f"docs/protocol.md: unknown generated part {name!r}")
        found.add(name)
        return match.group(1) + SECTIONS[name]() + match.group(4)

    out = _PART.sub(replace, text)
    missing = set(SECTIONS) - found
    if missing:
        raise SystemExit(f"docs/protocol.md: no markers for {', '.join(sorted(missing))}")
    return out


def main(argv: list[str]) -> int:
    text = PROTOCOL.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("docs/protocol.md differs from the code; run `make spec`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        PROTOCOL.write_text(new)
        print("docs/protocol.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
