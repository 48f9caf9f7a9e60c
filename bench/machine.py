"""What every benchmark prints first: the machine it ran on and how busy it was."""

from __future__ import annotations

import os
import platform
import statistics
import time
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


def fsync_latency(directory: Path | str, n: int = 100, size: int = 4096) -> str:
    """The disk's own tail: ``n`` appends of ``size`` bytes to a new file in
    ``directory``, each made durable with ``fdatasync`` (what one commit costs the disk,
    alone), as p50 / p99 / max. A commit of the node cannot be faster than this."""
    path = Path(directory) / f".fsync-probe-{os.getpid()}"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = os.urandom(size)
        for _ in range(n):
            start = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return (
        f"{size:,} B appended + fdatasync, {n} times: p50 {statistics.median(times):.1f} ms  "
        f"p99 {p99:.1f} ms  max {times[-1]:.1f} ms"
    )
