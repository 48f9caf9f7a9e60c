"""`make demo` is the project's main job on a fresh machine: it must keep passing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_three_node_demo_passes_every_check(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "demo", "--workdir", str(tmp_path / "demo")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 failed" in result.stdout
    assert "FAIL" not in result.stdout
