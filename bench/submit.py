"""Notices accepted through the local API: single POSTs against batch POSTs of 100 and 1,000.

    .venv/bin/python bench/submit.py [--seconds 5] [--suite mlkem768-x25519|x25519]

A node is created in a temporary directory with one pinned peer and started in a child
process; this process is the client (aiohttp, keep-alive). Every notice goes through the
real path: bearer token, JSON decoding, every domain rule, sealing to the peer, then one
transaction that indexes it, queues it and appends its ``notice.submitted`` leaf (a batch:
one transaction for all of its notices). The peer is paused, so delivery does not compete
for the cores: the figures are acceptance alone, durable (``synchronous=FULL``) when each
answer arrives. Phases with ``Idempotency-Key`` show what keeping the answer costs.

Prints hardware, then per phase: notices/s accepted, requests/s, p50/p99 request latency
and the server's CPU time per notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import machine  # bench/machine.py: the scripts run from bench/

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange_node.config import Config, LocalApiSection, NodeSection, PeerApiSection  # noqa: E402
from exchange_node.identity import create_identity, load_identity  # noqa: E402
from exchange_node.protocol.keys import Suite  # noqa: E402
from exchange_node.store.sqlite import SqliteStore  # noqa: E402

SUITES = {"mlkem768-x25519": Suite.MLKEM768_X25519, "x25519": Suite.X25519}
PEER = "PHL-DFA"


def serve(data: str, suite: str, port_queue, secret: str) -> None:
    from exchange_node.node import Node

    async def main() -> None:
        config = Config(
            node=NodeSection(id="JPN-ISA", country="JPN", data_dir=data, suite=suite),
            peer_api=PeerApiSection(listen="127.0.0.1:0", allow_plain_http=True),
            local_api=LocalApiSection(listen="127.0.0.1:0"),
        )
        node = await Node.open(config)
        await node.store.create_token("bench", "document_officer", secret, node.now_ms())
        await node.start()
        port_queue.put(node.local_port)
        await asyncio.Event().wait()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main())


def make_nodes(root: Path, suite: Suite) -> Path:
    """The submitting node's data directory, with PEER pinned and paused."""
    now = int(time.time() * 1000) - 60_000
    data, peer = root / "jpn", root / "phl"
    create_identity(
        data, node_id="JPN-ISA", country="JPN", display_name="bench",
        endpoint="http://127.0.0.1:9", suite=suite, now_ms=now,
    )  # fmt: skip
    create_identity(
        peer, node_id=PEER, country="PHL", display_name="bench peer",
        endpoint="http://127.0.0.1:9", suite=suite, now_ms=now,
    )  # fmt: skip
    keys = load_identity(peer)

    async def pin() -> None:
        store = await SqliteStore.open(data / "node.sqlite")
        try:
            await store.upsert_peer(PEER, keys.card_bytes, keys.fingerprint, now)
            await store.set_paused(PEER, True, now)
        finally:
            await store.close()

    asyncio.run(pin())
    return data


class Numbers:
    """Document numbers never used before in the run (each notice a new document)."""

    def __init__(self) -> None:
        self.n = 0

    def notice(self) -> dict:
        self.n += 1
        return {
            "kind": "COUNTERFEIT",
            "document": {"issuing_state": "PHL", "document_number": f"P{self.n:08d}"},
            "detection": {"place": "JPNRT", "detected_at_ms": int(time.time() * 1000) - 60_000,
                          "authority": "ISA Narita"},
        }  # fmt: skip


async def run_phase(
    url: str,
    secret: str,
    numbers: Numbers,
    *,
    seconds: float,
    concurrency: int,
    batch: int,
    keyed: bool,
    server_pid: int,
    quiet: bool = False,
) -> None:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    path = "/api/v1/notice-batches" if batch else "/api/v1/notices"
    latencies: list[float] = []
    notices = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal notices
        while time.perf_counter() < deadline:
            if batch:
                body = {"notices": [numbers.notice() for _ in range(batch)]}
            else:
                body = numbers.notice()
            data = json.dumps(body).encode()
            extra = {"Idempotency-Key": secrets.token_urlsafe(16)} if keyed else {}
            t0 = time.perf_counter()
            async with session.post(url + path, data=data, headers={**headers, **extra}) as r:
                answer = await r.read()
                if r.status != 202:
                    raise SystemExit(f"{path}: HTTP {r.status}: {answer[:300]!r}")
            latencies.append(time.perf_counter() - t0)
            notices += batch or 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu0 = _cpu(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu(server_pid) - cpu0
    if quiet:
        return
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    what = f"batch of {batch:,}" if batch else "single"
    print(
        f"{what:<15} {'keyed' if keyed else '     '} concurrency {concurrency:>2}: "
        f"{notices / elapsed:7.0f} notices/s  {len(latencies) / elapsed:7.1f} requests/s  "
        f"p50 {p(0.50):8.1f} ms  p99 {p(0.99):8.1f} ms  server CPU {cpu / notices * 1e6:5.0f} us/notice"
    )


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PHASES = (  # (batch size, concurrency, keyed); batch 0 = single POSTs
    (0, 1, False),
    (0, 16, False),
    (0, 16, True),
    (100, 1, False),
    (100, 4, False),
    (100, 4, True),
    (1000, 1, False),
    (1000, 2, False),
    (1000, 2, True),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    ap.add_argument("--suite", choices=sorted(SUITES), default="mlkem768-x25519")
    args = ap.parse_args()
    print(machine.text(("sqlite", sqlite3.sqlite_version), ("suite", args.suite)))
    print("one pinned peer (paused): one sealed copy, one outbox row and one leaf per notice")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_nodes(Path(tmp), SUITES[args.suite])
        secret = "xn_" + secrets.token_urlsafe(32)
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        server = ctx.Process(target=serve, args=(str(data), args.suite, ports, secret), daemon=True)
        server.start()
        try:
            url = f"http://127.0.0.1:{ports.get(timeout=120)}"
            numbers = Numbers()
            common = {"server_pid": server.pid}
            warm_up = {"seconds": 1, "concurrency": 4, "batch": 10, "keyed": True, "quiet": True}
            asyncio.run(run_phase(url, secret, numbers, **warm_up, **common))
            for batch, concurrency, keyed in PHASES:
                asyncio.run(
                    run_phase(
                        url, secret, numbers, seconds=args.seconds, concurrency=concurrency,
                        batch=batch, keyed=keyed, **common,
                    )
                )  # fmt: skip
        finally:
            server.terminate()
            server.join()


if __name__ == "__main__":
    main()
