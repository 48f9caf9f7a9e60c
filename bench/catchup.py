"""Catch-up of a peer that joins: notices in effect delivered per second, and memory.

    .venv/bin/python bench/catchup.py [--notices 20000] [--suite mlkem768-x25519|x25519]

The source node (PHL-DFA, this process) gets ``--notices`` status notices of its own in
its index (one in ten withdrawn, one in ten corrected, so a fifth of the rows are not in
effect), written straight into the store; the receiver (JPN-ISA, ``exchange-node
serve`` in a child process, plain HTTP on loopback) pins it. Then the source pins the
receiver and the clock runs until every notice in effect has a signed receipt: each
chunk read from the index, every body rebuilt, sealed, queued, delivered in batches,
opened, checked and indexed at the receiver.

Prints the hardware, then the time, notices in effect per second, the peak of the
source's Python heap during the catch-up (``tracemalloc``, which slows the run: it
streams one chunk at a time, so this peak should not grow with ``--notices``), and the
source process's peak resident memory, which also counts SQLite's page cache and the
memory-mapped database and so grows with the database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(root: Path, node_id: str, country: str, suite: str) -> tuple[Path, int]:
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


async def run(args) -> None:
    from exchange_node.node import Node

    root = Path(tempfile.mkdtemp(prefix="catchup-bench-"))
    source, _ = _make(root, SOURCE, "PHL", args.suite)
    receiver, _ = _make(root, RECEIVER, "JPN", args.suite)
    started = time.perf_counter()
    in_effect = await _fill(source, args.notices)
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
        before = _peak_mib()
        keys = load_identity(receiver / "data")
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        await node.store.upsert_peer(RECEIVER, keys.card_bytes, keys.fingerprint, node.now_ms())
        node.reload_peers()
        while True:
            found = [c for c in node.store.catchup_progress() if c.row.peer_id == RECEIVER]
            if found and found[0].row.state == "done" and found[0].pending == 0:
                c = found[0]
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        heap_peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
        await node.stop()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    print(f"catch-up: {c.row.queued:,} notices queued, {c.delivered:,} delivered, "
          f"{c.dead} dead, in {elapsed:.1f} s: {c.delivered / elapsed:,.0f} notices/s")  # fmt: skip
    print(f"source Python heap: peak {heap_peak:.1f} MiB above its level when the peer was pinned")
    print(
        f"source peak RSS: {before:.0f} MiB when started, {_peak_mib():.0f} MiB after catch-up "
        "(RSS includes SQLite's page cache, up to 64 MiB per connection, and the "
        "memory-mapped database file)"
    )
    print(f"load average at the end: {machine.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=20_000)
    parser.add_argument("--suite", choices=sorted(SUITES), default="mlkem768-x25519")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(machine.text())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
