"""What every benchmark prints first: the machine it ran on and how busy it was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """Other work on the machine skews every figure; say how much there was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def rows(*extra: tuple[str, str]) -> list[tuple[str, str]]:
    """Platform, CPU, cores, Python, then ``extra`` (library versions), then the load."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        ("platform", platform.platform()),
        ("cpu", cpu_model()),
        ("cores", f"{os.cpu_count()} (usable by this process: {usable or os.cpu_count()})"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        *extra,
        ("load average", load_average()),
    ]


def text(*extra: tuple[str, str]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in rows(*extra))
