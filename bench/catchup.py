"""Catch-up of a peer that joins: notices in effect delivered per second, and memory.

    .venv/bin/python bench/catchup.py [--notices 20000] [--suite mlkem768-x25519|x25519]
                                      [--live-rate 10] [--batch-size 200] [--no-tracemalloc]

The source node (PHL-DFA, this process) gets ``--notices`` status notices of its own in
its index (one in ten withdrawn, one in ten corrected, so a fifth of the rows are not in
effect), written straight into the store; the withdrawn chains are purged by the
node's start-up retention run before the clock starts; the receiver (JPN-ISA, ``exchange-node
serve`` in a child process, plain HTTP on loopback) pins it. Then the source pins the
receiver and the clock runs until every notice in effect has a signed receipt: each
chunk read from the index, every body rebuilt, sealed, queued, delivered in batches,
opened, checked and indexed at the receiver.

Meanwhile the source submits live notices of its own (``--live-rate`` a second, each a
new stolen passport, through the notice service as the local API does) and times each
from submission to its stored signed receipt; as many again (at most 300) once the catch-up
is done, on the idle pair with the same data, is the yardstick (DESIGN: live traffic
unharmed). Both processes' resident memory is sampled every second.

Prints the hardware, then the time, notices in effect per second, live-notice latency
p50/p99 during the catch-up and idle after it, the peak of the source's Python heap
during the catch-up (``tracemalloc``, which slows the run: it streams one chunk at a
time, so this peak should not grow with ``--notices``), and the resident memory of both
processes (peak, and sampled at each quarter of the catch-up: flat memory shows as flat
samples). Resident memory also counts the pages of the memory-mapped database file
read so far, so it grows with the database; the part not backed by a file (the heaps
and SQLite's page cache, at most 64 MiB per connection) is printed beside it. ``--no-tracemalloc`` leaves the heap tracing out (it costs
the source CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import machine  # bench/machine.py: the scripts run from bench/

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange_node.config import load_config, render_config  # noqa: E402
from exchange_node.identity import create_identity, load_identity  # noqa: E402
from exchange_node.protocol.keys import Suite  # noqa: E402
from exchange_node.store.records import NoticeRow  # noqa: E402
from exchange_node.store.sqlite import SqliteStore  # noqa: E402

SUITES = {"mlkem768-x25519": Suite.MLKEM768_X25519, "x25519": Suite.X25519}
SOURCE, RECEIVER = "PHL-DFA", "JPN-ISA"
CHUNK = 10_000
IDLE_NOTICES = 300


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(
    root: Path, node_id: str, country: str, suite: str, batch_size: int = 200
) -> tuple[Path, int]:
    port = _free_port()
    home = root / node_id.lower()
    home.mkdir()
    text = render_config(
        node_id=node_id,
        country=country,
        display_name=node_id,
        public_endpoint=f"http://127.0.0.1:{port}",
        peer_listen=f"127.0.0.1:{port}",
        local_listen="127.0.0.1:0",
        allow_plain_http=True,
    ).replace('suite = "mlkem768-x25519"', f'suite = "{suite}"')
    text = text.replace("\nbatch_size = 200 ", f"\nbatch_size = {batch_size} ")
    (home / "node.toml").write_text(text)
    create_identity(
        home / "data", node_id=node_id, country=country, display_name=node_id,
        endpoint=f"http://127.0.0.1:{port}", suite=SUITES[suite],
        now_ms=int(time.time() * 1000) - 60_000,
    )  # fmt: skip
    return home, port


async def _pin(home: Path, other: Path, node_id: str) -> None:
    keys = load_identity(other / "data")
    store = await SqliteStore.open(home / "data" / "node.sqlite")
    try:
        await store.upsert_peer(node_id, keys.card_bytes, keys.fingerprint, int(time.time() * 1000))
    finally:
        await store.close()


def _row(i: int, at: int, supersedes: str | None = None, kind: str = "STOLEN") -> NoticeRow:
    return NoticeRow(
        notice_id=secrets.token_hex(16), sender_node=SOURCE, sender_country="PHL", kind=kind,
        issuing_state="PHL", document_type="P", number=f"P{i:08d}", issued_at_ms=at,
        supersedes=supersedes, detection_place=None, detected_at_ms=None, detection_auth=None,
        effective_at_ms=at, remarks="", reason="bench" if supersedes else "", message_id=None,
    )  # fmt: skip


async def _fill(home: Path, n: int) -> int:
    """``n`` notices; every tenth withdrawn and every tenth (other) corrected. Returns
    how many are in effect."""
    store = await SqliteStore.open(home / "data" / "node.sqlite")
    at = int(time.time() * 1000) - 3_600_000
    in_effect = 0
    try:
        for start in range(0, n, CHUNK):
            rows = []
            for i in range(start, min(n, start + CHUNK)):
                first = _row(i, at + i)
                rows.append(first)
                if i % 10 == 0:
                    rows.append(_row(i, at + i + 1, first.notice_id, "WITHDRAWAL"))
                elif i % 10 == 5:
                    rows.append(_row(i, at + i + 1, first.notice_id, "REVOKED"))
                    in_effect += 1
                else:
                    in_effect += 1
            await store.index_notices(rows, at)
    finally:
        await store.close()
    return in_effect


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_mib(pid: int | str, field: str) -> float:
    """``VmRSS`` (resident now), ``VmHWM`` (peak resident) or ``RssAnon`` (resident and
    not backed by a file: the heaps, SQLite's page cache) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _written(pid: int | str) -> int:
    """Bytes a process has caused to be written to the disk so far (``write_bytes`` of
    ``/proc/PID/io``: its WAL appends and checkpoints, once the kernel writes them)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _rss(child: int) -> tuple[float, float, float, float]:
    """Resident and anonymous resident MiB of this process (the source) and ``child``."""
    return tuple(_memory_mib(p, f) for p in ("self", child) for f in ("VmRSS", "RssAnon"))


class LiveNotices:
    """New notices submitted at a steady rate while something else runs, each timed from
    submission to its stored signed receipt (the outbox's settled hook)."""

    def __init__(self, node, rate: float) -> None:
        self._node = node
        self._interval = 1 / rate if rate > 0 else 0.0
        self._waiting: dict[bytes, float] = {}  # message id -> when submitted
        self.latencies: list[float] = []
        self._n = 0
        node.outbox.on_settled.append(self._settled)

    def _settled(self, peer: str) -> None:
        now = time.perf_counter()
        for mid in list(self._waiting):
            rows = self._node.store.message_status(mid)
            if rows and rows[0].delivered_at is not None:
                self.latencies.append(now - self._waiting.pop(mid))

    async def _one(self) -> None:
        from exchange_node.domain.documents import NoticeKind
        from exchange_node.pb.exchange.v1 import notice_pb2
        from exchange_node.services.notices import NoticeDraft

        self._n += 1
        document = notice_pb2.DocumentRef(
            issuing_state="PHL", document_type="P", document_number=f"L{self._n:08d}"
        )
        t0 = time.perf_counter()
        _, submitted = await self._node.services.notices.submit(
            NoticeDraft(kind=NoticeKind.STOLEN, document=document), [RECEIVER], actor="bench"
        )
        self._waiting[submitted[0].message_id] = t0

    async def run_until(self, done: asyncio.Event) -> None:
        """Submit at the rate until ``done`` is set, then wait for the last receipts."""
        if not self._interval:
            return
        loop = asyncio.get_running_loop()
        tasks = set()
        next_at = loop.time()
        while not done.is_set():
            task = asyncio.create_task(self._one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, next_at - loop.time()))
        await asyncio.gather(*tasks)
        deadline = loop.time() + 60
        while self._waiting and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def figures(self) -> str:
        lat = self.latencies
        return (
            f"p50 {_pct(lat, 50) * 1e3:.1f} ms  p99 {_pct(lat, 99) * 1e3:.1f} ms  "
            f"max {max(lat, default=float('nan')) * 1e3:.1f} ms ({len(lat)} notices"
            f"{f', {len(self._waiting)} without a receipt' if self._waiting else ''})"
        )


async def run(args) -> None:
    from exchange_node.node import Node

    root = Path(tempfile.mkdtemp(prefix="catchup-bench-"))
    source, _ = _make(root, SOURCE, "PHL", args.suite, args.batch_size)
    receiver, _ = _make(root, RECEIVER, "JPN", args.suite)
    started = time.perf_counter()
    in_effect = await _fill(source, args.notices)
    print(f"source [delivery] batch_size {args.batch_size} (a catch-up chunk is one batch)")
    print(f"index filled: {args.notices:,} documents, {in_effect:,} notices in effect "
          f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    await _pin(receiver, source, SOURCE)
    ready = receiver / "ready.json"
    child = subprocess.Popen(
        [sys.executable, "-m", "exchange_node.cli", "--config", str(receiver / "node.toml"),
         "serve", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    try:
        while not ready.exists():
            if child.poll() is not None:
                raise SystemExit("the receiver did not start")
            await asyncio.sleep(0.05)
        node = await Node.open(load_config(source / "node.toml"))
        await node.start()
        # The fill withdrew a tenth of the notices a moment ago: the start-up retention
        # run purges those chains (withdrawn_by_source). A node that has run for a while
        # purged them long ago, so the clock starts once they are gone.
        swept = time.perf_counter()
        while node.store._read("SELECT 1 FROM doc_notices WHERE kind = 'WITHDRAWAL' LIMIT 1"):
            await asyncio.sleep(0.2)
        print(f"withdrawn chains purged by the start-up retention run "
              f"({time.perf_counter() - swept:.1f} s)")  # fmt: skip
        before = _peak_mib()
        disk_before = await asyncio.to_thread(machine.fsync_latency, root)
        keys = load_identity(receiver / "data")
        if args.tracemalloc:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        live = LiveNotices(node, args.live_rate)
        done = asyncio.Event()
        samples: list[tuple[float, ...]] = []  # (fraction done, RSS and anon, both sides)
        written0 = (_written("self"), _written(child.pid))
        t0 = time.perf_counter()
        await node.store.upsert_peer(RECEIVER, keys.card_bytes, keys.fingerprint, node.now_ms())
        node.reload_peers()
        live_task = asyncio.create_task(live.run_until(done))
        next_sample = 0.0
        while True:
            found = [c for c in node.store.catchup_progress() if c.row.peer_id == RECEIVER]
            if found and found[0].row.state == "done" and found[0].pending == 0:
                c = found[0]
                break
            if time.perf_counter() - t0 >= next_sample:
                fraction = found[0].delivered / in_effect if found else 0.0
                samples.append((fraction, *_rss(child.pid)))
                next_sample += 1.0
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        written = (_written("self") - written0[0], _written(child.pid) - written0[1])
        waited = node.live_first.waited_s
        checkpointer = getattr(node.store, "_checkpointer", None)
        checkpoints = (
            f"{checkpointer.passes:,} by its thread, {checkpointer.finished:,} finished by "
            "the writer"
            if checkpointer is not None
            else "none counted"
        )
        done.set()
        await live_task
        during = live.figures()
        heap_peak = float("nan")
        if args.tracemalloc:
            heap_peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
            tracemalloc.stop()
        samples.append((1.0, *_rss(child.pid)))
        receiver_peak = _memory_mib(child.pid, "VmHWM")
        # The yardstick: live notices on the idle pair, same data, once it is done (as
        # many as during the catch-up, at most IDLE_NOTICES).
        idle = LiveNotices(node, args.live_rate)
        idle_done = asyncio.Event()
        count = min(max(len(live.latencies), 20), IDLE_NOTICES)
        asyncio.get_running_loop().call_later(count / max(args.live_rate, 1), idle_done.set)
        node.outbox.on_settled.remove(live._settled)
        await idle.run_until(idle_done)
        disk_after = await asyncio.to_thread(machine.fsync_latency, root)
        await node.stop()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    print(f"catch-up: {c.row.queued:,} notices queued, {c.delivered:,} delivered, "
          f"{c.dead} dead, in {elapsed:.1f} s: {c.delivered / elapsed:,.0f} notices/s")  # fmt: skip
    print(f"source: catch-up steps waited {waited:.1f} s for live work; WAL checkpoints "
          f"{checkpoints}")  # fmt: skip
    if args.live_rate:
        print(f"live notices at {args.live_rate:g}/s, submit to stored signed receipt:")
        print(f"  during the catch-up  {during}")
        print(f"  idle pair after it   {idle.figures()}")
    per = [w / max(c.delivered, 1) / 1024 for w in written]
    print(f"written to the disk during the catch-up (live notices included): source "
          f"{written[0] / 2**20:,.0f} MiB ({per[0]:.1f} KiB a notice), receiver "
          f"{written[1] / 2**20:,.0f} MiB ({per[1]:.1f} KiB a notice); "
          f"{sum(written) / elapsed / 2**20:.1f} MiB/s together")  # fmt: skip
    print("the disk alone (its tail bounds every commit's):")
    print(f"  before the catch-up  {disk_before}")
    print(f"  after the idle pair  {disk_after}")
    if args.tracemalloc:
        print(
            f"source Python heap: peak {heap_peak:.1f} MiB above its level when the peer was pinned"
        )
    print(
        f"peak RSS: source {before:.0f} MiB when started, {_peak_mib():.0f} MiB after catch-up; "
        f"receiver {receiver_peak:.0f} MiB (RSS includes SQLite's page cache, up to 64 MiB "
        "per connection, and the memory-mapped database file)"
    )
    print("resident memory during the catch-up, MiB, by share delivered (all / not file-backed):")
    for side, at in (("source", 1), ("receiver", 3)):
        quarters = []
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            x = next((x for x in samples if x[0] >= q), samples[-1])
            quarters.append(f"{q:.0%} {x[at]:.0f} / {x[at + 1]:.0f}")
        print(f"  {side:<9} " + ", ".join(quarters))
    print(f"load average at the end: {machine.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=20_000)
    parser.add_argument("--suite", choices=sorted(SUITES), default="mlkem768-x25519")
    parser.add_argument(
        "--batch-size", type=int, default=200,
        help="the source's [delivery] batch_size: envelopes per batch and per catch-up chunk",
    )  # fmt: skip
    parser.add_argument(
        "--live-rate", type=float, default=10, help="live notices a second (0: none)"
    )
    parser.add_argument(
        "--no-tracemalloc", dest="tracemalloc", action="store_false",
        help="do not trace the source's Python heap (it slows the source)",
    )  # fmt: skip
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(machine.text())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
