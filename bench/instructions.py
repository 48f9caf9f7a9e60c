"""Instructions per notice accepted through the local API, counted by callgrind.

    .venv/bin/python bench/instructions.py [--notices 400] [--suite mlkem768-x25519|x25519]
                                           [--cpu-only] [--out DIR]

The node of ``bench/submit.py`` (one pinned peer, paused, so only acceptance is
measured: token, JSON, every domain rule, sealing, the transaction that indexes, queues
and audits) runs under ``valgrind --tool=callgrind`` with collection off; this process
warms it up, switches collection on (``callgrind_control``), posts ``--notices`` single
``POST /api/v1/notices`` (16 in flight) and then as many in ``POST
/api/v1/notice-batches`` of 100, and reads the instructions each phase took in the
node's process, all threads. Unlike CPU time, the counts barely move when the machine
is busy, so a change to the hot path can be measured while others run their tests.
``--cpu-only`` runs the node without valgrind and prints its CPU time per notice
instead (quick, but as noisy as the machine). ``--out`` keeps the callgrind files for
``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import machine  # bench/machine.py: the scripts run from bench/
import structlog
import submit  # bench/submit.py: the same node, peer and notices

PHASES = (("single", 0, 16), ("batch of 100", 100, 2))  # (name, batch size, in flight)


def role_serve(data: str, suite: str, secret: str, port_file: str) -> None:
    """The node of bench/submit.py; tells its port through ``port_file`` and, on
    SIGUSR1, its store writer's counters through ``port_file``.stats (JSON)."""
    from exchange_node.node import Node

    async def main() -> None:
        config = submit.Config(
            node=submit.NodeSection(id="JPN-ISA", country="JPN", data_dir=data, suite=suite),
            peer_api=submit.PeerApiSection(listen="127.0.0.1:0", allow_plain_http=True),
            local_api=submit.LocalApiSection(listen="127.0.0.1:0"),
        )
        node = await Node.open(config)
        await node.store.create_token("bench", "document_officer", secret, node.now_ms())
        await node.start()

        def stats() -> None:
            w = node.store.writer_stats()
            Path(port_file + ".stats").write_text(json.dumps([w.transactions, w.jobs]))

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stats)
        Path(port_file).write_text(str(node.local_port))
        await asyncio.Event().wait()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main())


def writer_counts(pid: int, port_file: Path) -> tuple[int, int]:
    """(transactions, jobs) the node's store writer has committed so far."""
    stats = Path(str(port_file) + ".stats")
    stats.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not stats.exists() or not stats.read_text():
        if time.monotonic() > deadline:
            raise SystemExit("the node did not report its writer's counters")
        time.sleep(0.05)
    transactions, jobs = json.loads(stats.read_text())
    return transactions, jobs


async def post(url: str, secret: str, numbers: submit.Numbers, n: int, batch: int, flight: int):
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    path = "/api/v1/notice-batches" if batch else "/api/v1/notices"
    bodies = [
        {"notices": [numbers.notice() for _ in range(batch)]} if batch else numbers.notice()
        for _ in range(n // (batch or 1))
    ]
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while bodies:
                data = json.dumps(bodies.pop()).encode()
                async with session.post(url + path, data=data, headers=headers) as r:
                    answer = await r.read()
                    if r.status != 202:
                        raise SystemExit(f"{path}: HTTP {r.status}: {answer[:300]!r}")

        await asyncio.gather(*(worker() for _ in range(flight)))


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


SHARES = (  # (label, substring of the shared object's path)
    ("crypto (cryptography, OpenSSL)", "cryptography/"),
    ("crypto (cryptography, OpenSSL)", "libcrypto"),
    ("crypto (cryptography, OpenSSL)", "libssl"),
    ("Python interpreter", "libpython"),
    ("SQLite", "sqlite"),
)


def instructions(out: Path) -> tuple[int, dict[str, int]]:
    """The Ir total of the newest dump callgrind wrote to ``out``'s prefix, and its
    split by shared object (crypto, interpreter, SQLite, the rest)."""
    dump = max(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime)
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(dump)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    total, split = 0, {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if m is None:
            continue
        ir, where = int(m.group(1).replace(",", "")), m.group(2)
        if where.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        obj = where.rsplit("[", 1)[-1]
        label = next((name for name, part in SHARES if part in obj), "other (libc, extensions)")
        split[label] = split.get(label, 0) + ir
    return total, split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notices", type=int, default=400, help="notices per phase")
    ap.add_argument("--suite", choices=sorted(submit.SUITES), default="mlkem768-x25519")
    ap.add_argument("--cpu-only", action="store_true", help="CPU time, without valgrind")
    ap.add_argument("--out", help="keep the callgrind files in this directory")
    ap.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        role_serve(*args.serve)
        return 0
    if not args.cpu_only and shutil.which("callgrind_control") is None:
        print("error: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    print(machine.text(("suite", args.suite)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out_dir = Path(args.out) if args.out else root
        out_dir.mkdir(parents=True, exist_ok=True)
        data = submit.make_nodes(root, submit.SUITES[args.suite])
        secret = "xn_" + secrets.token_urlsafe(32)
        port_file = root / "port"
        cmd = [sys.executable, __file__, "--serve", str(data), args.suite, secret, str(port_file)]
        out = out_dir / "callgrind.out"
        if not args.cpu_only:
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={out}.%p", *cmd]  # fmt: skip
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while not port_file.exists() or not port_file.read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the node did not start")
                time.sleep(0.5)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            numbers = submit.Numbers()
            for _, batch, flight in PHASES:  # warm up: every code path once, not counted
                asyncio.run(post(url, secret, numbers, max(batch, 16) * 2, batch, flight))
            print(f"{args.notices:,} notices per phase; the node's process, all threads")
            for name, batch, flight in PHASES:
                tx0 = writer_counts(server.pid, port_file)
                if args.cpu_only:
                    cpu0 = _cpu(server.pid)
                else:
                    control(server.pid, "--zero")
                    control(server.pid, "--instr=on")
                asyncio.run(post(url, secret, numbers, args.notices, batch, flight))
                if args.cpu_only:
                    cost = [
                        (b - a) / args.notices for a, b in zip(cpu0, _cpu(server.pid), strict=True)
                    ]
                    figure = (
                        f"{sum(cost) * 1e3:6.3f} ms CPU per notice ({cost[0] * 1e3:.3f} user, "
                        f"{cost[1] * 1e3:.3f} system)"
                    )
                else:
                    control(server.pid, "--instr=off")
                    control(server.pid, "--dump")
                    total, split = instructions(Path(f"{out}.{server.pid}"))
                    figure = f"{total / args.notices / 1e6:6.3f} M instructions per notice"
                tx1 = writer_counts(server.pid, port_file)
                print(
                    f"{name:<13} {flight:>2} in flight: {figure}; {tx1[0] - tx0[0]} store "
                    f"transactions for {tx1[1] - tx0[1]} jobs"
                )
                for label, ir in (
                    [] if args.cpu_only else sorted(split.items(), key=lambda kv: -kv[1])
                ):
                    print(f"    {label:<32} {ir / args.notices / 1e6:6.3f} M")
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"load average at the end: {machine.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
