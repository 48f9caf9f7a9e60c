"""End-to-end delivery between two node processes, beside the limits it is held to.

Usage: .venv/bin/python bench/e2e.py [--quick] [--n N] [--suite S] [--plain-http]
                                     [--profile cprofile|py-spy] [--experiment NAME]

Two nodes (JPN-ISA sends, PHL-DFA receives) are created with fresh identities in a
temporary directory and pin each other's cards, as ``exchange-node demo`` does. The
receiver runs ``exchange-node serve``; the sender is this script in ``--role sender``,
which opens the :class:`~exchange_node.node.Node`, starts it and calls ``Node.submit``
itself (the node's own submission path: seal, outbox group commit, audit), so the
figures are those of the node and not of an HTTP client in front of it. Mutual TLS 1.3
with pinned certificates unless ``--plain-http``.

Phases, in one run:

1. idle pair: one notice at a time, submit to stored signed receipt, ``--idle`` times
   (DESIGN: p99 < 20 ms);
2. paced load: ``--rate`` notices/s offered open-loop for ``--rate-seconds``; latency
   counts from the scheduled submit time, so a sender falling behind is not hidden
   (DESIGN: p99 < 250 ms at 1,000/s);
3. throughput: N notices (20,000; 2,000 with ``--quick``) submitted by ``--concurrency``
   concurrent callers; notices/s from the first submit to the last receipt, p50/p99
   submit-to-receipt latency, batch sizes, CPU seconds of each process
   (DESIGN: >= 2,500/s and >= 60% of the crypto-only limit).

"Receipt" is the moment the sender's worker has verified the signed batch receipt and
committed it (``Node.after_receipt`` is entered; measured with ``perf_counter``); the
stored ``delivered_at`` of every message is read back as a cross-check.

Yardsticks measured before the nodes start, on an idle machine:

- the crypto-only limit per notice on one core: ``seal`` + ``open_envelope`` + 1/200 of
  building and verifying a 200-envelope batch receipt, no I/O;
- a bare aiohttp round trip on loopback between two processes (trivial POST handler,
  same TLS settings), sequential and 8 concurrent, with a tiny body and a body the size
  of a 200-envelope batch.

``--experiment NAME`` monkeypatches a candidate optimisation into both processes (see
EXPERIMENTS); without it the code measured is the repository's, unmodified.
The whole run stops by itself after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENDER, RECEIVER = "JPN-ISA", "PHL-DFA"
SUITES = {"mlkem768-x25519": "MLKEM768_X25519", "x25519": "X25519"}
RECEIPT_BATCH = 200


def _crypto_bench():
    """bench/crypto.py, for its fixtures and its rate() helper."""
    if "bench_crypto" in sys.modules:
        return sys.modules["bench_crypto"]
    spec = importlib.util.spec_from_file_location("bench_crypto", REPO / "bench" / "crypto.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_crypto"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# --- small helpers ----------------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a whole process (all threads) from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int | str = "self") -> dict[int, float]:
    """CPU seconds of each thread of a process, by native thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = cpu_seconds(f"{pid}/task/{task.name}")
        except (OSError, ValueError):
            pass
    return out


def cpu_split(before: dict[int, float], after: dict[int, float], names: dict[int, str]) -> dict:
    """Per-thread CPU between two thread_cpu() readings, summed by thread name."""
    split: dict[str, float] = {}
    for tid, t in after.items():
        name = names.get(tid, "other threads")
        split[name] = split.get(name, 0.0) + t - before.get(tid, 0.0)
    return split


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- experiments: candidate optimisations, patched in at run time ----------------------------


def _exp_writer_linger() -> None:
    """The store writer commits as soon as one job is queued. Under a stream of single
    Node.submit calls (each sealing on the loop first) that is about 2.5 jobs per COMMIT,
    and each COMMIT costs the writer thread CPU and the loop the GIL. Wait up to 1 ms for
    more jobs when a group would otherwise close with fewer than 8 (PostgreSQL's
    commit_delay / commit_siblings idea)."""
    import queue as queue_mod

    from exchange_node.store import writer as writer_mod

    W = writer_mod.GroupCommitWriter
    linger_s, siblings = 0.001, 8

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            carry = None
            while True:
                first = carry if carry is not None else self._queue.get()
                carry = None
                if first is writer_mod._STOP:
                    break
                if not first.transactional:
                    self._run_raw(conn, first)
                    continue
                group, weight = [first], first.weight
                lingered = False
                while weight < self._max_group:
                    try:
                        job = self._queue.get_nowait()
                    except queue_mod.Empty:
                        if lingered or len(group) >= siblings:
                            break
                        lingered = True
                        try:
                            job = self._queue.get(timeout=linger_s)
                        except queue_mod.Empty:
                            break
                    if (
                        job is writer_mod._STOP
                        or not job.transactional
                        or (weight + job.weight > self._max_group)
                    ):
                        carry = job
                        break
                    group.append(job)
                    weight += job.weight
                self._run_group(conn, group)
        finally:
            conn.close()

    W._run = _run


# --- --trace: wall time of each stage of the delivery path (the code itself unchanged) --------

TRACE: dict[str, list[float]] = {}


def _timed_sync(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            TRACE.setdefault(label, []).append(time.perf_counter() - t)

    setattr(owner, name, wrapper)


def _timed_async(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    async def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return await fn(*a, **kw)
        finally:
            TRACE.setdefault(label, []).append(time.perf_counter() - t)

    setattr(owner, name, wrapper)


def install_trace() -> None:
    """Time the stages of submit, send and receive. Wrappers only: same code, same order."""
    from exchange_node import node as node_mod
    from exchange_node.audit.log import AuditLog
    from exchange_node.delivery import worker as worker_mod
    from exchange_node.store.sqlite import SqliteStore

    N = node_mod.Node
    _timed_async(N, "submit", "sender: Node.submit (whole)")
    _timed_sync(N, "policy", "sender: Node.policy")
    _timed_sync(node_mod, "seal", "sender: seal")
    _timed_async(SqliteStore, "enqueue", "sender: store.enqueue (group commit)")
    _timed_sync(SqliteStore, "pending", "sender: store.pending (SQLite read on the loop)")
    _timed_async(worker_mod.PeerWorker, "send", "sender: PeerWorker.send (whole batch cycle)")
    _timed_async(N, "post_batch", "sender: post_batch (HTTP round trip)")
    _timed_sync(N, "verify_receipt_for", "sender: verify receipt")
    _timed_async(SqliteStore, "record_receipt", "sender: store.record_receipt")
    _timed_async(SqliteStore, "touch_contact", "sender: store.touch_contact")
    _timed_async(N, "after_receipt", "sender: after_receipt (audit + witness)")
    _timed_async(N, "_witness", "sender: _witness (peer checkpoint)")
    _timed_async(N, "receive_batch", "receiver: receive_batch (whole)")
    _timed_sync(node_mod, "parse_batch", "receiver: parse_batch")
    _timed_async(N, "_open_all", "receiver: open envelopes (crypto threads)")
    _timed_sync(node_mod, "validate_envelopes", "receiver: validate_envelopes (on the loop)")
    _timed_async(SqliteStore, "accept", "receiver: store.accept")
    _timed_sync(node_mod, "sign_receipt", "receiver: sign_receipt")
    _timed_async(SqliteStore, "store_sent_receipt", "receiver: store.store_sent_receipt")
    _timed_async(SqliteStore, "transaction", "both: store.transaction (awaited, leaves included)")
    _timed_sync(AuditLog, "append_on", "both: AuditLog.append_on (store writer thread)")

    orig_start = N.start

    async def start(self):
        hooks = list(self.on_accepted)
        self.on_accepted.clear()
        for i, hook in enumerate(hooks):
            label = f"receiver: on_accepted[{i}] {getattr(hook, '__qualname__', hook)}"

            async def timed(results, hook=hook, label=label):
                t = time.perf_counter()
                res = hook(results)
                if asyncio.iscoroutine(res):
                    await res
                TRACE.setdefault(label, []).append(time.perf_counter() - t)

            self.on_accepted.append(timed)
        await orig_start(self)

    N.start = start


def trace_summary() -> dict[str, dict[str, float]]:
    return {
        k: {
            "count": len(v),
            "total": sum(v),
            "mean": sum(v) / len(v),
            "p50": pct(v, 50),
            "p99": pct(v, 99),
        }
        for k, v in TRACE.items()
        if v
    }


def print_trace(title: str, summary: dict[str, dict[str, float]]) -> None:
    print(f"  {title}: stage                                         calls    total   mean    p99")
    for k, v in sorted(summary.items()):
        print(
            f"    {k:<58} {v['count']:>6} {v['total']:>7.2f}s {v['mean'] * 1e3:>6.2f}ms "
            f"{v['p99'] * 1e3:>6.1f}ms"
        )


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "writer-linger": _exp_writer_linger,
}


def apply_experiments(names: list[str]) -> None:
    for name in names:
        EXPERIMENTS[name]()


# --- set-up -------------------------------------------------------------------------------------


@dataclass
class BenchNode:
    node_id: str
    country: str
    dir: Path
    peer_port: int
    local_port: int
    fingerprint: str = ""

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def data(self) -> Path:
        return self.dir / "data"


def cli(node: BenchNode, *args: str) -> str:
    cmd = [sys.executable, "-m", "exchange_node.cli", "--config", str(node.config), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def create_node(work: Path, node_id: str, country: str, suite: str, plain: bool) -> BenchNode:
    """What ``exchange-node init`` does, with the suite chosen (init always writes the
    default suite into the config before creating keys)."""
    from exchange_node.config import load_config, render_config
    from exchange_node.identity import create_identity
    from exchange_node.protocol.keys import Suite

    n = BenchNode(node_id, country, work / node_id.lower(), free_port(), free_port())
    n.dir.mkdir(parents=True)
    scheme = "http" if plain else "https"
    text = render_config(
        node_id=node_id,
        country=country,
        display_name=node_id,
        public_endpoint=f"{scheme}://127.0.0.1:{n.peer_port}",
        peer_listen=f"127.0.0.1:{n.peer_port}",
        local_listen=f"127.0.0.1:{n.local_port}",
        allow_plain_http=plain,
    )
    text = text.replace('suite = "mlkem768-x25519"', f'suite = "{suite}"', 1)
    n.config.write_text(text)
    cfg = load_config(n.config)
    n.data.mkdir(mode=0o700)
    keys = create_identity(
        cfg.data_path,
        node_id=node_id,
        country=country,
        display_name=node_id,
        endpoint=cfg.peer_api.public_endpoint,
        suite=Suite.parse(cfg.node.suite),
        now_ms=time.time_ns() // 1_000_000,
    )
    n.fingerprint = keys.fingerprint
    return n


def pin(a: BenchNode, b: BenchNode) -> None:
    cli(a, "peer", "add", str(b.data / "card.pb"), "--fingerprint", b.fingerprint)


# --- yardstick 1: crypto-only limit ---------------------------------------------------------------


@dataclass(frozen=True)
class CryptoLimit:
    seal: float
    open: float
    receipt_build: float
    receipt_verify: float

    @property
    def per_notice(self) -> float:
        cost = (
            1 / self.seal
            + 1 / self.open
            + (1 / self.receipt_build + 1 / self.receipt_verify) / RECEIPT_BATCH
        )
        return 1 / cost


def measure_crypto(suite_name: str, seconds: float) -> CryptoLimit:
    cb = _crypto_bench()
    from exchange_node.protocol.cards import verify_card
    from exchange_node.protocol.envelope import open_envelope, seal
    from exchange_node.protocol.keyring import Keyring
    from exchange_node.protocol.keys import Suite

    suite = getattr(Suite, SUITES[suite_name])
    p = cb.pair(suite)
    body = notice_body()
    rcard = verify_card(p.recipient_card_bytes)
    ring = Keyring.from_cards([p.sender_card_bytes])
    sealed = seal(body, sender=p.sender, recipient=rcard, now_ms=cb.NOW_MS).data
    seal_rate = cb.rate(
        lambda: seal(body, sender=p.sender, recipient=rcard, now_ms=cb.NOW_MS), seconds
    )
    open_rate = cb.rate(
        lambda: open_envelope(sealed, me=p.recipient, keyring=ring, now_ms=cb.NOW_MS), seconds
    )
    r = cb.measure_receipts(seconds)
    return CryptoLimit(seal_rate, open_rate, r.build, r.verify)


# --- yardstick 2: bare aiohttp round trips -----------------------------------------------------------


def tls_contexts(sender: BenchNode, receiver: BenchNode, plain: bool):
    if plain:
        return None, None
    from exchange_node.identity import load_identity
    from exchange_node.tls import client_context, server_context

    s, r = load_identity(sender.data, None), load_identity(receiver.data, None)
    server = server_context(r.tls_cert_der, r.tls_key_path, [s.tls_cert_der])
    client = client_context(s.tls_cert_der, s.tls_key_path, r.tls_cert_der)
    return server, client


def role_bare_server(args) -> int:
    """A trivial aiohttp POST handler with the receiver's TLS settings."""
    from aiohttp import web

    apply_experiments([])
    sender = BenchNode(SENDER, "", Path(args.sender_dir), 0, 0)
    receiver = BenchNode(RECEIVER, "", Path(args.receiver_dir), 0, 0)
    server_ssl, _ = tls_contexts(sender, receiver, args.plain_http)

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"\x00" * 64, content_type="application/x-protobuf")

    async def run() -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/bare", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=server_ssl, backlog=512)
        await site.start()
        Path(args.ready_file).write_text("ok")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())
    return 0


async def bare_rates(
    url: str, client_ssl, body: bytes, seconds: float, concurrency: int
) -> tuple[float, float]:
    """Round trips per second and the server's share is measured by the caller."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one() -> None:
            async with session.post(
                url,
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
                ssl=client_ssl if client_ssl is not None else False,
            ) as resp:
                await resp.read()
                assert resp.status == 200

        for _ in range(20):  # warm-up: connections, TLS handshakes
            await asyncio.gather(*(one() for _ in range(concurrency)))
        count = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def loop_one() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await one()
                count += 1

        await asyncio.gather(*(loop_one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        return count / elapsed, elapsed


# --- the sender process ---------------------------------------------------------------------------


def role_sender(args) -> int:
    from exchange_node.logs import configure as configure_logs

    apply_experiments(args.experiment)
    if args.trace:
        install_trace()
    configure_logs("info")
    result = asyncio.run(sender_main(args))
    Path(args.result).write_text(json.dumps(result))
    return 0


def notice_body() -> bytes:
    """A fraud detection notice of about 600 bytes, as bench/crypto.py's typical body but
    with a machine readable zone whose check digits hold (the receiver's domain
    validators reject a bad one, and the benchmark measures accepted notices)."""
    from exchange_node.pb.exchange.v1 import notice_pb2

    now = time.time_ns() // 1_000_000
    return notice_pb2.Body(
        fraud_notice=notice_pb2.FraudDetectionNotice(
            notice_id=os.urandom(16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL",
                document_type="P",
                document_number="P1234567A",
                mrz=(
                    "P<PHLSPECIMEN<<MARIA<<<<<<<<<<<<<<<<<<<<<<<<\n"
                    "P1234567A1PHL8001014F3001019<<<<<<<<<<<<<<00"
                ),
            ),
            fraud_type=notice_pb2.FRAUD_TYPE_FORGED,
            detected_at_ms=now - 3_600_000,
            detection_place="JPNRT",
            detecting_authority="Immigration Services Agency, Narita",
            remarks="Observed at primary inspection. " * 13,
        )
    ).SerializeToString()


class ReceiptClock:
    """Hooks Node.after_receipt (entered once the receipt is verified and committed)."""

    def __init__(self, node) -> None:
        self.times: dict[bytes, float] = {}
        self.batch_sizes: list[int] = []
        self.not_accepted = 0
        self.waiters: dict[bytes, asyncio.Future] = {}
        self.target = 0
        self.all_done = asyncio.Event()
        orig = node.after_receipt

        async def hooked(peer_id, batch_id, rows, receipt):
            t = time.perf_counter()
            self.batch_sizes.append(len(rows))
            for row, o in zip(rows, receipt.outcomes, strict=True):
                if o.outcome != 1:  # OUTCOME_ACCEPTED
                    self.not_accepted += 1
                self.times[row.message_id] = t
                fut = self.waiters.pop(row.message_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(t)
            if self.target and len(self.times) >= self.target:
                self.all_done.set()
            await orig(peer_id, batch_id, rows, receipt)

        node.after_receipt = hooked


async def sender_main(args) -> dict:
    from exchange_node.config import load_config
    from exchange_node.node import Node

    node = await Node.open(load_config(args.config))
    await node.start()
    clock = ReceiptClock(node)
    from exchange_node.pb.exchange.v1 import notice_pb2

    body = notice_pb2.Body.FromString(notice_body())
    peer = args.peer
    rpid = args.receiver_pid
    out: dict = {}

    async def submit_one() -> bytes:
        return (await node.submit(body, [peer], actor="bench"))[0].message_id

    async def submit_and_wait(deadline: float) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        mid = await submit_one()
        if mid in clock.times:
            return clock.times[mid] - t0, mid
        fut = asyncio.get_running_loop().create_future()
        clock.waiters[mid] = fut
        t1 = await asyncio.wait_for(fut, timeout=max(0.1, deadline - time.perf_counter()))
        return t1 - t0, mid

    def cpu() -> tuple[float, float]:
        return cpu_seconds(), cpu_seconds(rpid)

    # 0. warm-up: connection, TLS session, first audit checkpoint.
    deadline = time.perf_counter() + 30
    for _ in range(20):
        await submit_and_wait(deadline)

    # 1. idle pair.
    TRACE.clear()
    if args.trace:
        os.kill(rpid, signal.SIGUSR1)  # the receiver's trace restarts with each phase
    lat = []
    deadline = time.perf_counter() + args.phase_timeout
    c0 = cpu()
    for _ in range(args.idle):
        dt, _ = await submit_and_wait(deadline)
        lat.append(dt)
        await asyncio.sleep(0.005)  # an idle pair: nothing else in flight
    c1 = cpu()
    out["idle"] = {
        "count": len(lat),
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat),
        "cpu_sender_per_notice": (c1[0] - c0[0]) / len(lat),
        "cpu_receiver_per_notice": (c1[1] - c0[1]) / len(lat),
    }

    out["trace_idle"] = trace_summary()
    if args.trace:
        os.kill(rpid, signal.SIGUSR1)

    # 2. paced, open-loop.
    if args.rate > 0 and args.rate_seconds > 0:
        total = int(args.rate * args.rate_seconds)
        scheduled: dict[bytes, float] = {}
        tasks = []
        clock.target = 0
        c0 = cpu()
        start = time.perf_counter() + 0.05

        async def paced(at: float) -> None:
            mid = await submit_one()
            scheduled[mid] = at

        for i in range(total):
            at = start + i / args.rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(paced(at)))
        await asyncio.gather(*tasks)
        submitted_at = time.perf_counter()
        deadline = time.perf_counter() + args.phase_timeout
        while not all(m in clock.times for m in scheduled) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        c1 = cpu()
        lat = [clock.times[m] - at for m, at in scheduled.items() if m in clock.times]
        out["paced"] = {
            "offered_rate": args.rate,
            "count": total,
            "delivered": len(lat),
            "achieved_submit_rate": total / (submitted_at - start),
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat) if lat else float("nan"),
            "cpu_sender": c1[0] - c0[0],
            "cpu_receiver": c1[1] - c0[1],
            "seconds": time.perf_counter() - start,
        }

    # 3. throughput.
    n = args.n
    await asyncio.sleep(0.5)
    submit_at: dict[bytes, float] = {}
    submit_wall: dict[bytes, int] = {}
    remaining = n
    first_batch = len(clock.batch_sizes)
    clock.times.clear()
    clock.target = n
    clock.all_done.clear()
    profiler = start_profiler(args, rpid)
    s_threads0, r_threads0 = thread_cpu(), thread_cpu(rpid)
    TRACE.clear()
    if args.trace:
        os.kill(rpid, signal.SIGUSR1)
    c0 = cpu()
    t_start = time.perf_counter()

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            w0 = time.time_ns() // 1_000_000
            mid = await submit_one()
            submit_at[mid] = t0
            submit_wall[mid] = w0

    await asyncio.gather(*(submitter() for _ in range(args.concurrency)))
    t_submitted = time.perf_counter()
    try:
        await asyncio.wait_for(clock.all_done.wait(), timeout=args.phase_timeout)
        complete = True
    except TimeoutError:
        complete = False
    t_end = max((clock.times[m] for m in submit_at if m in clock.times), default=t_submitted)
    c1 = cpu()
    s_threads1, r_threads1 = thread_cpu(), thread_cpu(rpid)
    stop_profiler(profiler)
    import threading

    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    names[os.getpid()] = "event loop (main)"
    lat = [clock.times[m] - t for m, t in submit_at.items() if m in clock.times]
    delivered = len(lat)
    sizes = clock.batch_sizes[first_batch:]
    # Cross-check against what the store says (delivered_at is the receipt's stored time).
    stored = []
    for m, w in submit_wall.items():
        rows = node.store.message_status(m)
        if rows and rows[0].delivered_at is not None:
            stored.append((rows[0].delivered_at - w) / 1000)
    out["throughput"] = {
        "n": n,
        "delivered": delivered,
        "complete": complete,
        "not_accepted": clock.not_accepted,
        "concurrency": args.concurrency,
        "seconds": t_end - t_start,
        "rate": delivered / (t_end - t_start),
        "submit_seconds": t_submitted - t_start,
        "submit_rate": n / (t_submitted - t_start),
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "stored_p50": pct(stored, 50),
        "stored_p99": pct(stored, 99),
        "stored_count": len(stored),
        "batches": len(sizes),
        "batch_mean": statistics.mean(sizes) if sizes else 0,
        "cpu_sender": c1[0] - c0[0],
        "cpu_receiver": c1[1] - c0[1],
        "writer": str(node.store.writer_stats()),
        "cpu_sender_threads": cpu_split(s_threads0, s_threads1, names),
        "cpu_receiver_threads": cpu_split(r_threads0, r_threads1, {rpid: "event loop (main)"}),
    }
    out["trace"] = trace_summary()
    await node.stop()
    return out


def start_profiler(args, receiver_pid: int):
    if args.profile == "cprofile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        return ("cprofile", prof, args.profile_dir)
    if args.profile == "py-spy":
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        procs = []
        for name, pid in (("sender", os.getpid()), ("receiver", receiver_pid)):
            for fmt, ext in (("raw", "txt"),):
                out = Path(args.profile_dir) / f"{name}.{fmt}.{ext}"
                procs.append(
                    subprocess.Popen(
                        [spy, "record", "--pid", str(pid), "--rate", "250", "--threads"]
                        + ["--nonblocking", "--format", fmt, "-o", str(out)],
                        stdout=subprocess.DEVNULL,
                        stderr=open(Path(args.profile_dir) / f"{name}.{fmt}.log", "w"),  # noqa: SIM115
                    )
                )
        time.sleep(1.0)  # let py-spy attach before the load starts
        return ("py-spy", procs, args.profile_dir)
    return None


def stop_profiler(profiler) -> None:
    if profiler is None:
        return
    kind, obj, where = profiler
    if kind == "cprofile":
        obj.disable()
        obj.dump_stats(str(Path(where) / "sender.prof"))
    else:
        for p in obj:
            p.send_signal(signal.SIGINT)
        for p in obj:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


# --- the receiver process (only with --experiment: otherwise plain `exchange-node serve`) ----------


def role_receiver(args) -> int:
    from exchange_node.cli import main as cli_main

    apply_experiments(args.experiment)
    if args.trace:
        install_trace()
        phase = iter(range(100))

        def next_phase(*_):
            # Keep what the phase that ended measured (1 = idle), then start afresh.
            if args.result:
                Path(f"{args.result}.{next(phase)}").write_text(json.dumps(trace_summary()))
            TRACE.clear()

        signal.signal(signal.SIGUSR1, next_phase)
    code = cli_main(["--config", args.config, "serve", "--ready-file", args.ready_file])
    if args.trace and args.result:
        Path(args.result).write_text(json.dumps(trace_summary()))
    return code


# --- the driver ---------------------------------------------------------------------------------------


def hardware() -> list[tuple[str, str]]:
    import aiohttp

    cb = _crypto_bench()
    rows = cb.hardware()
    rows.insert(-1, ("aiohttp", aiohttp.__version__))
    return rows


def start_proc(cmd: list[str], log: Path, ready: Path, timeout: float = 30) -> subprocess.Popen:
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)  # noqa: SIM115
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{' '.join(cmd[:4])} did not start; see {log}")
        time.sleep(0.05)
    return proc


def stop_proc(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_suite(args, suite: str, work: Path) -> dict:
    plain = args.plain_http
    print(f"\n=== suite {suite}  ({'plain HTTP' if plain else 'mutual TLS 1.3'}) ===", flush=True)
    crypto = measure_crypto(suite, args.crypto_seconds)
    print("crypto-only, one core, no I/O:")
    print(f"  seal                      {crypto.seal:>9,.0f}/s")
    print(f"  open                      {crypto.open:>9,.0f}/s")
    print(
        f"  receipt {RECEIPT_BATCH} build / verify  "
        f"{crypto.receipt_build:>9,.0f}/s / {crypto.receipt_verify:,.0f}/s"
    )
    print(f"  limit per notice          {crypto.per_notice:>9,.0f}/s  (seal+open+receipt share)")

    sdir = work / suite
    sdir.mkdir()
    s = create_node(sdir, SENDER, "JPN", suite, plain)
    r = create_node(sdir, RECEIVER, "PHL", suite, plain)
    pin(s, r)
    pin(r, s)

    # Bare aiohttp, between two processes, same TLS.
    port = free_port()
    bare = start_proc(
        [sys.executable, __file__, "--role", "bare-server", "--port", str(port)]
        + ["--sender-dir", str(s.dir), "--receiver-dir", str(r.dir)]
        + ["--ready-file", str(sdir / "bare.ready")]
        + (["--plain-http"] if plain else []),
        sdir / "bare.log",
        sdir / "bare.ready",
    )
    bare_fig = {}
    try:
        _, client_ssl = tls_contexts(s, r, plain)
        url = f"{'http' if plain else 'https'}://127.0.0.1:{port}/bare"
        batch_body = os.urandom(args.envelope_bytes * RECEIPT_BATCH)
        for label, body in (("tiny", b"x" * 64), ("batch", batch_body)):
            for conc in (1, 8):
                c0 = cpu_seconds(bare.pid)
                rate, secs = asyncio.run(bare_rates(url, client_ssl, body, args.bare_seconds, conc))
                bare_fig[(label, conc)] = rate
                srv = (cpu_seconds(bare.pid) - c0) / (rate * secs) * 1e6
                print(
                    f"bare aiohttp POST {label:<5} body ({len(body):>7} B), {conc} in flight: "
                    f"{rate:>8,.0f} round trips/s  (server CPU {srv:.0f} us each)",
                    flush=True,
                )
    finally:
        stop_proc(bare)

    # The receiver: `exchange-node serve` (or the same through this script for experiments).
    ready = r.dir / "ready.json"
    rtrace = sdir / "receiver-trace.json"
    if args.experiment or args.trace:
        rcmd = [__file__, "--role", "receiver", "--config", str(r.config)]
        rcmd += [a for e in args.experiment for a in ("--experiment", e)]
        rcmd += ["--trace", "--result", str(rtrace)] if args.trace else []
    else:
        rcmd = ["-m", "exchange_node.cli", "--config", str(r.config), "serve"]
    rcmd += ["--ready-file", str(ready)]
    prof_dir = Path(args.profile_dir or work) / suite
    prof_dir.mkdir(parents=True, exist_ok=True)
    if args.profile == "cprofile":
        rcmd = ["-m", "cProfile", "-o", str(prof_dir / "receiver.prof"), *rcmd]
    rcmd = [sys.executable, *rcmd]
    receiver = start_proc(rcmd, r.dir / "node.log", ready)
    result_path = sdir / "sender-result.json"
    scmd = [sys.executable, __file__, "--role", "sender", "--config", str(s.config)]
    scmd += ["--peer", RECEIVER, "--receiver-pid", str(receiver.pid), "--result", str(result_path)]
    scmd += ["--n", str(args.n), "--concurrency", str(args.concurrency), "--idle", str(args.idle)]
    scmd += ["--rate", str(args.rate), "--rate-seconds", str(args.rate_seconds)]
    scmd += ["--phase-timeout", str(args.phase_timeout), "--profile", args.profile]
    scmd += ["--profile-dir", str(prof_dir)]
    scmd += [a for e in args.experiment for a in ("--experiment", e)]
    scmd += ["--trace"] if args.trace else []
    try:
        with open(s.dir / "node.log", "ab") as log:
            res = subprocess.run(scmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        if res.returncode != 0:
            raise RuntimeError(f"the sender failed; see {s.dir / 'node.log'}")
        out = json.loads(result_path.read_text())
    finally:
        stop_proc(receiver)

    idle, tp = out["idle"], out["throughput"]
    print(
        f"idle pair, one notice at a time ({idle['count']}): p50 {ms(idle['p50'])}  "
        f"p99 {ms(idle['p99'])}  max {ms(idle['max'])}   (target p99 < 20 ms)"
    )
    print(
        f"  CPU per notice: sender {idle['cpu_sender_per_notice'] * 1e3:.2f} ms, "
        f"receiver {idle['cpu_receiver_per_notice'] * 1e3:.2f} ms"
    )
    if "paced" in out:
        p = out["paced"]
        print(
            f"paced {p['offered_rate']:,}/s offered for {p['count'] / p['offered_rate']:.0f} s "
            f"(submitted at {p['achieved_submit_rate']:,.0f}/s): delivered {p['delivered']}/"
            f"{p['count']}  p50 {ms(p['p50'])}  p99 {ms(p['p99'])}  max {ms(p['max'])}"
            "   (target p99 < 250 ms)"
        )
        print(
            f"  CPU: sender {p['cpu_sender']:.1f} s, receiver {p['cpu_receiver']:.1f} s "
            f"over {p['seconds']:.1f} s"
        )
    rate = tp["rate"]
    print(
        f"throughput, {tp['n']:,} notices, {tp['concurrency']} concurrent submitters: "
        f"{rate:,.0f} notices/s  ({tp['delivered']:,} receipted in {tp['seconds']:.2f} s"
        f"{'' if tp['complete'] else ', INCOMPLETE'}; not accepted {tp['not_accepted']})"
        "   (target >= 2,500/s)"
    )
    print(
        f"  submit-to-receipt p50 {ms(tp['p50'])}  p99 {ms(tp['p99'])}; from stored delivered_at:"
        f" p50 {ms(tp['stored_p50'])}  p99 {ms(tp['stored_p99'])} ({tp['stored_count']} rows)"
    )
    print(
        f"  submits done in {tp['submit_seconds']:.2f} s ({tp['submit_rate']:,.0f}/s); "
        f"{tp['batches']} batches, mean {tp['batch_mean']:.0f} envelopes"
    )
    wall = tp["seconds"]
    print(
        f"  CPU: sender {tp['cpu_sender']:.2f} s ({tp['cpu_sender'] / tp['delivered'] * 1e6:.0f} us"
        f"/notice, {tp['cpu_sender'] / wall:.0%} of a core), receiver {tp['cpu_receiver']:.2f} s "
        f"({tp['cpu_receiver'] / tp['delivered'] * 1e6:.0f} us/notice, "
        f"{tp['cpu_receiver'] / wall:.0%} of a core)"
    )
    for side in ("sender", "receiver"):
        split = sorted(tp[f"cpu_{side}_threads"].items(), key=lambda kv: -kv[1])
        print(
            f"  {side} CPU by thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in split if v >= 0.01)
        )
    print(f"  sender store writer: {tp['writer']}")
    cycle = wall / max(tp["batches"], 1)
    print(
        f"ratios: e2e / crypto-only limit = {rate / crypto.per_notice:.2f}   (target >= 0.60)\n"
        f"        e2e notices/s / bare round trips/s (tiny, 1 | 8 in flight) = "
        f"{rate / bare_fig[('tiny', 1)]:.2f} | {rate / bare_fig[('tiny', 8)]:.2f}\n"
        f"        a bare round trip of a batch-sized body takes "
        f"{1e3 / bare_fig[('batch', 1)]:.1f} ms = {1 / bare_fig[('batch', 1)] / cycle:.1%} of the "
        f"e2e batch cycle ({cycle * 1e3:.0f} ms per batch of {tp['batch_mean']:.0f})",
        flush=True,
    )
    if args.trace:
        print("stage timings, idle pair (wall time):")
        print_trace("sender", out["trace_idle"])
        idle_r = Path(f"{rtrace}.1")
        if idle_r.exists():
            print_trace("receiver", json.loads(idle_r.read_text()))
        print("stage timings, throughput phase (wall time; awaited stages include waiting):")
        print_trace("sender", out["trace"])
        if rtrace.exists():
            print_trace("receiver", json.loads(rtrace.read_text()))
    if args.profile != "none":
        print(f"profiles in {prof_dir}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 notices, shorter phases")
    ap.add_argument("--n", type=int, help="notices in the throughput phase (default 20,000)")
    ap.add_argument("--suite", choices=[*SUITES, "both"], default="mlkem768-x25519")
    ap.add_argument("--plain-http", action="store_true", help="no TLS between the nodes")
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent Node.submit calls")
    ap.add_argument("--idle", type=int, default=200, help="single notices on the idle pair")
    ap.add_argument("--rate", type=int, default=1000, help="offered notices/s in phase 2")
    ap.add_argument("--rate-seconds", type=float, help="length of phase 2 (default 5; quick 2)")
    ap.add_argument("--timeout", type=float, default=900, help="the whole run stops after this")
    ap.add_argument("--profile", choices=["none", "cprofile", "py-spy"], default="none")
    ap.add_argument("--profile-dir", help="where profiles go (default: the work directory)")
    ap.add_argument(
        "--experiment", action="append", default=[], choices=sorted(EXPERIMENTS),
        help="patch a candidate optimisation into both nodes (repeatable)",
    )  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--trace", action="store_true", help="print the wall time of each delivery stage"
    )
    # internal: the child roles
    ap.add_argument("--role", choices=["driver", "sender", "receiver", "bare-server"], default="driver", help=argparse.SUPPRESS)  # fmt: skip
    for name in ("--config", "--peer", "--result", "--ready-file", "--sender-dir", "--receiver-dir"):  # fmt: skip
        ap.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--receiver-pid", "--port"):
        ap.add_argument(name, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--phase-timeout", type=float, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role == "sender":
        return role_sender(args)
    if args.role == "receiver":
        return role_receiver(args)
    if args.role == "bare-server":
        return role_bare_server(args)

    args.n = args.n or (2000 if args.quick else 20000)
    args.rate_seconds = (
        args.rate_seconds if args.rate_seconds is not None else (2 if args.quick else 5)
    )
    args.crypto_seconds = 0.3 if args.quick else 1.0
    args.bare_seconds = 1.0 if args.quick else 3.0
    args.phase_timeout = min(args.phase_timeout, args.timeout)
    args.envelope_bytes = 0

    def on_alarm(signum, frame):
        raise TimeoutError(f"bench/e2e.py stopped itself after --timeout {args.timeout:.0f} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)

    print("exchange-node end-to-end benchmark: two node processes on loopback")
    for name, value in hardware():
        print(f"  {name:<13} {value}")
    print(
        f"  notices       {args.n:,} (throughput), {args.idle} (idle), "
        f"{args.rate:,}/s x {args.rate_seconds:g} s (paced); {args.concurrency} concurrent submitters"
    )
    if args.experiment:
        print(f"  EXPERIMENTS   {', '.join(args.experiment)} (patched; not the repository's code)")

    work = Path(tempfile.mkdtemp(prefix="exchange-node-e2e-"))
    os.chmod(work, 0o700)
    suites = list(SUITES) if args.suite == "both" else [args.suite]
    failed = False
    try:
        for suite in suites:
            args.envelope_bytes = envelope_size(suite)
            run_suite(args, suite, work)
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(f"\nload average at the end: {_crypto_bench().machine.load_average()}")
        if args.keep or failed:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def envelope_size(suite_name: str) -> int:
    cb = _crypto_bench()
    from exchange_node.protocol.cards import verify_card
    from exchange_node.protocol.envelope import seal
    from exchange_node.protocol.keys import Suite

    p = cb.pair(getattr(Suite, SUITES[suite_name]))
    rcard = verify_card(p.recipient_card_bytes)
    return len(seal(notice_body(), sender=p.sender, recipient=rcard, now_ms=cb.NOW_MS).data)


if __name__ == "__main__":
    sys.exit(main())
