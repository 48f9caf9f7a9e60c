"""A short crash campaign (``bench/crash_campaign.py``): a stream of keyed notices while
sender and receiver are SIGKILLed at random moments. Nothing lost, doubled, reordered
or unaudited. The full campaign (3,000 notices, 25 kills) runs from bench/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_a_short_crash_campaign_loses_doubles_reorders_and_leaves_unaudited_nothing():
    result = subprocess.run(
        [sys.executable, "crash_campaign.py", "--notices", "400", "--rate", "100",
         "--kills", "6", "--seed", "7", "--timeout", "240"],
        cwd=BENCH, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = json.loads(re.search(r"(?s)\{.*\}", result.stdout).group(0))
    assert counts["acknowledged"] == counts["stored by the receiver"] == 400
    assert counts["sender kills"] + counts["receiver kills"] == 6
    for failure in ("lost", "undelivered", "duplicated", "out of order", "unaudited",
                    "audit logs failing verification"):  # fmt: skip
        assert counts[failure] == 0, failure
