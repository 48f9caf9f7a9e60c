"""Store throughput: group commit under 1, 10 and 100 concurrent submitters.

For each workload it prints rows/s, transactions (COMMITs, i.e. WAL fsyncs) per second,
rows per transaction and the p50/p99 latency of one awaited write. A second pass runs a
fixed number of rows per workload in a child process under ``strace`` and counts the
fsync/fdatasync system calls, to give fsyncs per row as the disk sees them.

    .venv/bin/python bench/store.py [--seconds 3] [--dir /path/on/the/real/disk]

The database lives in ``--dir`` (default: a temporary directory next to this script's
repository, i.e. on the same disk as the project, not a tmpfs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # bench/machine.py: the scripts run from bench/

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from exchange_node.store import InboxItem, OutboxItem, SqliteStore  # noqa: E402

PEER = "PHL-DFA"
ENVELOPE = os.urandom(2048)  # a sealed notice: HPKE enc (1,120 B hybrid) + ciphertext
PAYLOAD = os.urandom(1024)
HEADER, BODY, SIGNATURE = os.urandom(120), os.urandom(1500), os.urandom(64)
CONCURRENCY = (1, 10, 100)


def filesystem(path: Path) -> str:
    best, fs = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, kind = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{kind} on {dev} ({mnt})"
    except OSError:
        pass
    return fs


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def outbox_call(counter: Counter):
    async def call(store: SqliteStore) -> int:
        n = counter.next()
        item = OutboxItem(PEER, n.to_bytes(16, "big"), ENVELOPE, PAYLOAD, n)
        await store.enqueue([item])
        return 1

    return call


def inbox_call(counter: Counter, per_call: int = 1):
    async def call(store: SqliteStore) -> int:
        items = []
        for _ in range(per_call):
            n = counter.next()
            mid = n.to_bytes(16, "big")
            items.append(
                InboxItem(PEER, mid, mid * 2, "document_notice", HEADER, BODY, SIGNATURE, n)
            )
        await store.accept(items)
        return per_call

    return call


WORKLOADS = {
    "enqueue": lambda c: outbox_call(c),
    "accept": lambda c: inbox_call(c),
    "accept-batch100": lambda c: inbox_call(c, 100),
}


async def run(
    db: Path, workload: str, concurrency: int, *, seconds: float | None, rows: int | None
) -> dict[str, float]:
    """Run one workload; stop after ``seconds`` or once ``rows`` rows were written."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    store = await SqliteStore.open(db)
    await store.upsert_peer(PEER, b"card", "fp", at=1)
    call = WORKLOADS[workload](Counter())
    before = store.writer_stats()
    latencies: list[float] = []
    written = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else None

    async def submitter() -> None:
        nonlocal written
        while (deadline is None or time.perf_counter() < deadline) and (
            rows is None or written < rows
        ):
            t0 = time.perf_counter()
            n = await call(store)  # not `written += await ...`: that loses updates
            latencies.append(time.perf_counter() - t0)
            written += n

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    after = store.writer_stats()
    await store.close()
    tx = after.transactions - before.transactions
    latencies.sort()
    return {
        "rows": written,
        "rows_s": written / elapsed,
        "tx": tx,
        "tx_s": tx / elapsed,
        "rows_per_tx": written / tx if tx else 0.0,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def count_fsyncs(db: Path, workload: str, concurrency: int, rows: int) -> tuple[int, int] | None:
    """(fsync+fdatasync calls, transactions) for ``rows`` rows, or None without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    trace = db.with_suffix(".strace")
    cmd = [
        strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
        sys.executable, __file__, "--child", workload, str(concurrency), str(rows), str(db),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    calls = sum(1 for line in trace.read_text().splitlines() if "sync(" in line)
    trace.unlink()
    return calls, int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fsync-rows", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # fsync-counting child: print the transaction count last
        workload, conc, rows, db = args.child
        r = asyncio.run(run(Path(db), workload, int(conc), seconds=None, rows=int(rows)))
        print(r["tx"])
        return

    base = args.dir or REPO
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=base) as tmp:
        db = Path(tmp) / "bench.db"
        print(machine.text(("sqlite", sqlite3.sqlite_version)))
        print(f"database: {filesystem(Path(tmp).resolve())}, synchronous=FULL, WAL")
        print(f"envelope {len(ENVELOPE)} B + payload {len(PAYLOAD)} B per outbox row; "
              f"inbox row {len(HEADER) + len(BODY) + len(SIGNATURE)} B")  # fmt: skip
        print()
        print(f"{'workload':<16}{'conc':>5}{'rows/s':>10}{'tx/s':>9}{'rows/tx':>9}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'fsync/row':>11}")  # fmt: skip
        for workload in WORKLOADS:
            for conc in CONCURRENCY:
                r = asyncio.run(run(db, workload, conc, seconds=args.seconds, rows=None))
                fs = count_fsyncs(db, workload, conc, args.fsync_rows)
                per_row = f"{fs[0] / args.fsync_rows:.3f}" if fs else "n/a"
                print(
                    f"{workload:<16}{conc:>5}{r['rows_s']:>10.0f}{r['tx_s']:>9.0f}"
                    f"{r['rows_per_tx']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{per_row:>11}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
