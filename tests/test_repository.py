"""What a newcomer's clone needs is in the clone: nothing reads outside it, and the lock
pins every dependency pyproject.toml names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_nothing_in_the_repository_reads_beside_the_clone():
    # Spelled in pieces so that this file does not match itself.
    beside = "/".join(["..", "shared"])
    outside = re.compile(re.escape(beside) + "|" + "_".join(["EXCHANGE", "NODE", "SHARED"]))
    places = [*REPO.glob("exchange_node/**/*.py"), *REPO.glob("tests/**/*.py"),
              *REPO.glob("bench/**/*.py"), REPO / "Makefile", REPO / ".ci" / "run"]  # fmt: skip
    found = [
        str(p.relative_to(REPO)) for p in places if outside.search(p.read_text(errors="replace"))
    ]
    assert found == []


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_dependency_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    lock = (REPO / "requirements.lock").read_text()
    pinned = {m.group(1).lower() for m in re.finditer(r"(?m)^([A-Za-z0-9_.-]+)==\S+ \\$", lock)}
    assert wanted <= pinned, sorted(wanted - pinned)
    # Every pinned requirement carries at least one hash (pip --require-hashes).
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9_.-]+==)", lock)
    assert all("--hash=sha256:" in b for b in blocks if re.match(r"[A-Za-z0-9_.-]+==", b))
