"""The committed generated protobuf code is exactly what proto/generate.py produces."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "exchange_node" / "pb"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    generate = runpy.run_path(str(ROOT / "proto" / "generate.py"))["generate"]
    out = tmp_path / "pb"
    generate(out)

    fresh, committed = _files(out), _files(COMMITTED)
    hint = "exchange_node/pb is out of date with proto/: run `make proto` and commit the result"
    assert sorted(fresh) == sorted(committed), hint
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{hint} (differs: {', '.join(stale)})"
