"""Document lookups through the local API at 1 million (or 10 million) indexed documents.

    .venv/bin/python bench/lookup.py [--ten-million] [--seconds 10] [--concurrency 16]
        [--store sqlite|postgresql] [--workers N] [--pg-url URL]

A node is created in a temporary directory, its document index loaded directly with N
fraud notices (one per document), and started in a child process; this process is the
client (aiohttp, keep-alive). Every lookup goes through the real path: bearer token,
index query, history fold, JSON encoding and one durable ``document.lookup`` audit leaf
per document. Prints hardware, then requests/s, lookups/s and p50/p99 latency for single
lookups (GET) and batch lookups (POST, 100 documents each).

``--store postgresql`` keeps the index and the audit log in PostgreSQL: the server at
``--pg-url`` (a role that may create databases; a database of its own is made and
dropped), or else a throwaway one started like the tests' (tests/pg_harness.py).
``--workers N`` starts N node processes on that one database, each on its own port; the
client spreads its connections over them, as a load balancer would (SQLite: 1 only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import machine  # bench/machine.py: the scripts run from bench/

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange_node.config import (  # noqa: E402
    Config,
    LocalApiSection,
    NodeSection,
    PeerApiSection,
    StoreSection,
)
from exchange_node.identity import create_identity  # noqa: E402
from exchange_node.protocol.keys import Suite  # noqa: E402

STATES = ("PHL", "JPN", "THA", "VNM", "IDN", "D", "FRA", "GBR", "USA", "NGA")


def number_of(i: int) -> str:
    return f"P{i:08d}"


def load(db: Path, count: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    chunk = 100_000
    sql = (
        "INSERT INTO doc_notices (notice_id, sender_node, sender_country, kind, issuing_state, "
        "document_type, number, issued_at_ms, supersedes, detection_place, detected_at_ms, "
        "detection_auth, effective_at_ms, remarks, reason, message_id, indexed_at) "
        "VALUES (?, 'JPN-ISA', 'JPN', 'COUNTERFEIT', ?, 'P', ?, ?, NULL, 'JPNRT', ?, '', NULL, "
        "'', '', NULL, ?)"
    )
    for start in range(0, count, chunk):
        rows = [
            (f"{i:032x}", STATES[i % len(STATES)], number_of(i), now, now - 1000, now)
            for i in range(start, min(count, start + chunk))
        ]
        conn.executemany(sql, rows)
        conn.commit()
    conn.close()


def load_postgresql(url: str, count: int) -> None:
    """The same rows as :func:`load`, with COPY (the fastest way in)."""
    import psycopg

    now = int(time.time() * 1000)
    columns = (
        "notice_id, sender_node, sender_country, kind, issuing_state, document_type, number, "
        "issued_at_ms, detection_place, detected_at_ms, detection_auth, remarks, reason, "
        "indexed_at"
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY doc_notices ({columns}) FROM STDIN") as copy:
            for i in range(count):
                copy.write_row((f"{i:032x}", "JPN-ISA", "JPN", "COUNTERFEIT",
                                STATES[i % len(STATES)], "P", number_of(i), now, "JPNRT",
                                now - 1000, "", "", "", now))  # fmt: skip
        cur.execute("ANALYZE doc_notices")


def config_for(data: str, store_url: str) -> Config:
    return Config(
        node=NodeSection(id="BENCH-NODE", country="JPN", data_dir=data, suite="x25519"),
        peer_api=PeerApiSection(listen="127.0.0.1:0", allow_plain_http=True),
        local_api=LocalApiSection(listen="127.0.0.1:0"),
        store=StoreSection(url=store_url),
    )


def serve(data: str, store_url: str, port_queue) -> None:
    from exchange_node.node import Node

    async def main() -> None:
        node = await Node.open(config_for(data, store_url))
        await node.start()
        port_queue.put(node.local_port)
        await asyncio.Event().wait()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main())


async def run_phase(urls, secret, count, seconds, concurrency, batch):
    headers = {"Authorization": f"Bearer {secret}"}
    latencies: list[float] = []
    requests = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(1)

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal requests
        while time.perf_counter() < deadline:
            if batch:
                ids = [rng.randrange(count) for _ in range(batch)]
                body = {
                    "documents": [
                        {"issuing_state": STATES[i % len(STATES)], "document_number": number_of(i)}
                        for i in ids
                    ]
                }
                t0 = time.perf_counter()
                async with session.post(
                    f"{url}/api/v1/documents/lookup", json=body, headers=headers
                ) as r:
                    data = await r.json()
                    assert r.status == 200 and all(x["known"] for x in data["results"]), r.status
            else:
                i = rng.randrange(count)
                t0 = time.perf_counter()
                async with session.get(
                    f"{url}/api/v1/documents/{STATES[i % len(STATES)]}/{number_of(i)}",
                    headers=headers,
                ) as r:
                    data = await r.json()
                    assert r.status == 200 and data["known"], r.status
            latencies.append(time.perf_counter() - t0)
            requests += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, urls[i % len(urls)]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    per = batch or 1
    print(
        f"{'batch of ' + str(batch) if batch else 'single':<13} concurrency {concurrency:>3}: "
        f"{requests / elapsed:8.0f} requests/s  {requests * per / elapsed:9.0f} lookups/s  "
        f"p50 {p(0.50):6.2f} ms  p99 {p(0.99):6.2f} ms  mean {statistics.mean(latencies) * 1000:6.2f} ms"
    )


WRK_SCRIPT = """
math.randomseed(7)
local states = {%(states)s}
request = function()
  local i = math.random(0, %(count)d - 1)
  local path = string.format("/api/v1/documents/%%s/P%%08d", states[(i %% %(n)d) + 1], i)
  return wrk.format("GET", path, {["Authorization"] = "Bearer %(secret)s"})
end
done = function(summary, latency, requests)
  io.write(string.format("WRK %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status, summary.errors.timeout))
end
"""


def wrk_phase(
    url: str, secret: str, count: int, seconds: float, connections: int, server_pid: int
) -> None:
    """Single lookups driven by wrk (a C load generator), so the client's own cost does
    not eat the server's CPU the way a Python client on the same 2 cores does."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        WRK_SCRIPT
        % {
            "states": ", ".join(f'"{st}"' for st in STATES),
            "n": len(STATES),
            "count": count,
            "secret": secret,
        }
    )
    cpu0 = _cpu(server_pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    cpu = _cpu(server_pid) - cpu0
    script.unlink()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        print(f"wrk gave no result:\n{out}")
        return
    n, duration_us, p50, p99, bad_status, timeouts = (int(x) for x in line.split()[1:])
    rate = n / (duration_us / 1e6)
    errors = f"  ERRORS {bad_status} status, {timeouts} timeouts" if bad_status or timeouts else ""
    print(
        f"{'single (wrk)':<13} connections {connections:>3}: {rate:8.0f} requests/s  "
        f"{rate:9.0f} lookups/s  p50 {p50 / 1000:6.2f} ms  p99 {p99 / 1000:6.2f} ms  "
        f"server CPU {cpu / n * 1e6:5.0f} us/lookup{errors}"
    )


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ten-million", action="store_true", help="index 10,000,000 documents")
    ap.add_argument("--documents", type=int, default=None, help="index this many instead")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--workers", type=int, default=1, help="node processes (PostgreSQL)")
    ap.add_argument("--pg-url", help="a PostgreSQL server (default: start a throwaway one)")
    args = ap.parse_args()
    if args.workers < 1 or (args.workers > 1 and args.store == "sqlite"):
        ap.error("--workers: 1 with SQLite (one process per database); 1 or more otherwise")
    count = args.documents or (10_000_000 if args.ten_million else 1_000_000)
    with tempfile.TemporaryDirectory() as tmp, database(args.store, args.pg_url) as url:
        print(machine.text(("sqlite", sqlite3.sqlite_version)))
        print(f"store: {args.store}, {args.workers} node process(es)")
        data = Path(tmp) / "data"
        create_identity(
            data, node_id="BENCH-NODE", country="JPN", display_name="bench",
            endpoint="http://127.0.0.1:9", suite=Suite.X25519, now_ms=int(time.time() * 1000),
        )  # fmt: skip
        secret = "xn_" + secrets.token_urlsafe(32)
        asyncio.run(prepare(config_for(str(data), url), secret))
        t0 = time.perf_counter()
        if url:
            load_postgresql(url, count)
        else:
            load(data / "node.sqlite", count)
        print(f"indexed {count:,} documents in {time.perf_counter() - t0:.1f} s")
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        servers = [
            ctx.Process(target=serve, args=(str(data), url, ports), daemon=True)
            for _ in range(args.workers)
        ]
        for server in servers:
            server.start()
        try:
            urls = [f"http://127.0.0.1:{ports.get(timeout=120)}" for _ in servers]
            asyncio.run(run_phase(urls, secret, count, 2, 4, 0))  # warm-up
            asyncio.run(run_phase(urls, secret, count, args.seconds, 1, 0))
            asyncio.run(run_phase(urls, secret, count, args.seconds, args.concurrency, 0))
            asyncio.run(run_phase(urls, secret, count, args.seconds, 4, 100))
            if len(urls) > 1:
                print("wrk phase skipped: it drives one address (--workers 1)")
            elif shutil.which("wrk"):
                for connections in (1, 8, 32):
                    wrk_phase(urls[0], secret, count, args.seconds, connections, servers[0].pid)
            else:
                print("wrk not found (apt-get install wrk): C-client phase skipped")
        finally:
            for server in servers:
                server.terminate()
                server.join()


async def prepare(config: Config, secret: str) -> None:
    """Create (migrate) the store and the bench's token, once for every process."""
    from exchange_node.node import open_store

    store = await open_store(config)
    try:
        await store.create_token("bench", "document_officer", secret, int(time.time() * 1000))
    finally:
        await store.close()


@contextlib.contextmanager
def database(store: str, pg_url: str | None) -> Iterator[str]:
    """``[store] url`` for the run: "" (SQLite), or a new PostgreSQL database."""
    if store == "sqlite":
        yield ""
        return
    import psycopg

    from tests.pg_harness import PgServer, start_server

    server = PgServer(pg_url) if pg_url else None
    if server is None:
        # Its own directory in /tmp: the server's user must reach it (not the 0700 tmp).
        root = Path(tempfile.mkdtemp(prefix="exn-bench-pg-"))
        server = start_server(root)
    name = f"exn_bench_{os.getpid()}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        base, _, _ = server.admin_url.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if server.data_dir is not None:
            server.pg_ctl("stop", "-m", "fast", "-w")
            shutil.rmtree(server.data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
