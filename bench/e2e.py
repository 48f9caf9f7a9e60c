"""End-to-end delivery between two node processes, beside the limits it is held to.

Usage: .venv/bin/python bench/e2e.py [--quick] [--n N] [--suite S] [--plain-http]
                                     [--via direct|api|both] [--code CHECKOUT]
                                     [--profile cprofile|py-spy] [--experiment NAME]
                                     [--store sqlite|postgresql] [--workers N] [--pg-url URL]

Two nodes (JPN-ISA sends, PHL-DFA receives) are created with fresh identities in a
temporary directory and pin each other's cards, as ``exchange-node demo`` does. Mutual
TLS 1.3 with pinned certificates between them unless ``--plain-http``. The sender is
loaded in one of two ways (``--via both``, the default, runs one after the other, each
on a fresh pair, beside the same yardsticks):

- ``direct``: the receiver runs ``exchange-node serve``; the sender is this script in
  ``--role sender``, which opens the :class:`~exchange_node.node.Node`, starts it and
  calls ``Node.submit`` itself (the node's own submission path: seal, outbox group
  commit, audit), so the figures are those of the node without an API in front of it;
- ``api``: both nodes run ``exchange-node serve`` (through ``--role node``, which adds
  only signal handlers: SIGUSR2 writes the thread names, SIGUSR1 the ``--trace``
  timings), and ``--role load``, a process of its own so that its CPU is not the
  sender's, posts ``POST /api/v1/notices`` with a ``document_officer`` token from
  ``--concurrency`` aiohttp clients (keep-alive). Then the batch submission
  (``BATCH_PATH``, ``batch_request()``) in requests of ``--batch-size``, skipped with a
  message while it answers 404. Completion and latencies come from the sender's own
  database, read only from the load process (``delivered_at`` of each message).

Phases, in one run (both ways):

1. idle pair: one notice at a time, submit to stored signed receipt, ``--idle`` times
   (DESIGN: p99 < 20 ms);
2. paced load: ``--rate`` notices/s offered open-loop for ``--rate-seconds``; latency
   counts from the scheduled submit time, so a sender falling behind is not hidden
   (DESIGN: p99 < 250 ms at 1,000/s);
3. throughput: N notices (20,000; 2,000 with ``--quick``) submitted by ``--concurrency``
   concurrent callers; notices/s from the first submit to the last receipt, p50/p99
   submit-to-receipt latency, batch sizes, CPU seconds of each process and of each of
   the sender's threads, and how busy the rest of the machine was meanwhile
   (DESIGN: >= 2,500/s and >= 60% of the crypto-only limit; through the local API,
   sender CPU <= 0.7 ms per notice by single POSTs, >= 0.5 of the crypto-only limit by
   single POSTs and >= 0.8 by the batch submission).

Direct: "receipt" is the moment the sender's worker has verified the signed batch
receipt and committed it (``Node.after_receipt`` is entered; measured with
``perf_counter``); the stored ``delivered_at`` of every message is read back as a
cross-check. API: the stored ``delivered_at`` (milliseconds, the node's clock).

Yardsticks measured before the nodes start, on an idle machine:

- the crypto-only limit per notice on one core: ``seal`` + ``open_envelope`` + 1/200 of
  building and verifying a 200-envelope batch receipt, no I/O;
- a bare aiohttp round trip on loopback between two processes (trivial POST handler,
  same TLS settings), sequential and 8 concurrent, with a tiny body and a body the size
  of a 200-envelope batch; with ``--via api`` also over plain HTTP with the notice's
  JSON body, as the local API is reached (its server CPU is the floor of the API's
  HTTP share).

``--store postgresql`` keeps each node's store and audit log in a PostgreSQL database of
its own, on the server at ``--pg-url`` (a role that may create databases) or on a
throwaway one started like the tests' (tests/pg_harness.py). ``--workers N`` (with
``--via api``) runs the sender as N ``serve`` processes on its one database, the load
spread over their local APIs as a load balancer would; they share the delivery to the
receiver by lease (one process delivers a peer's queue at a time), so N scales
submission, not one peer link. CPU figures then count the first sender process only.

``--code CHECKOUT`` measures another checkout's ``exchange_node`` (an older commit, with
its own ``make setup``) with these same scripts: the driver runs itself again on that
checkout's ``.venv`` with it first on the path, and every child inherits that.
``--experiment NAME`` monkeypatches a candidate optimisation into both processes (see
EXPERIMENTS); without it, or ``--trace``, the code measured is the checkout's,
unmodified. The whole run stops by itself after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The exchange_node measured: this checkout's, or with --code another checkout's (the
# driver then re-runs itself with that checkout's .venv and every child inherits this).
CODE = Path(os.environ.get("E2E_CODE") or REPO).resolve()
sys.path.insert(0, str(CODE))

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


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all cores, any process) and stolen by
    the hypervisor, from /proc/stat: set against this run's own processes, what the
    rest of the machine took during a phase."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def others_line(busy: float, steal: float, ours: float, seconds: float) -> str:
    """How busy the machine was beyond this run's processes during a phase."""
    cores = os.cpu_count() or 1
    return (
        f"  machine during the phase: {busy / seconds:.2f} of {cores} cores busy, this run's "
        f"processes {ours / seconds:.2f}, everything else {max(0.0, busy - ours) / seconds:.2f}"
        f", stolen {steal / seconds:.2f}"
    )


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


def _patch_writer_group(audit_per_group: bool) -> None:
    """The store writer's group without a SAVEPOINT and RELEASE around every job (two
    SQLite steps per job, each a GIL release and re-take on the writer thread). A job
    that raises rolls the whole group back, and the group is run again one job at a
    time (the writer's own fallback for a failed group; jobs may be run again by
    contract). With ``audit_per_group`` also: ``tx.audit`` only notes its leaves (their
    seqs counted on from the tree size read once per group) and they are appended in one
    ``AuditLog.append_on`` just before COMMIT, in job order: four statements per group
    instead of four per job."""
    import threading

    from exchange_node.audit import log as audit_log_mod
    from exchange_node.store import sqlite as sqlite_mod
    from exchange_node.store import writer as writer_mod

    W = writer_mod.GroupCommitWriter
    faults = getattr(writer_mod, "faults", None)
    state = threading.local()  # the writer is one thread: this group's noted leaves

    def reached(labels, point) -> None:
        if faults is not None:
            faults.reached(labels, point)

    def _run_group(self, conn, group) -> None:
        state.pending, state.base, state.appender = [], None, None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                job.result = job.fn(conn)
            if state.pending:
                state.appender(conn, state.pending)
            labels = tuple(job.label for job in group)
            reached(labels, "applied")
            conn.execute("COMMIT")
            reached(labels, "committed")
        except BaseException as exc:
            writer_mod._rollback_quietly(conn)
            if len(group) == 1:
                job = group[0]
                job.result = None
                job.error = writer_mod._wrap(exc)
                self._count(group)
                self._resolve(group)
            else:
                for job in group:
                    job.result, job.error = None, None
                    _run_group(self, conn, [job])
            return
        finally:
            state.pending = None
        self._count(group)
        self._resolve(group)

    W._run_group = _run_group
    if not audit_per_group:
        return
    T = sqlite_mod.SqliteTransaction
    orig_audit = T.audit

    def audit(self, events):
        if not events or getattr(state, "pending", None) is None or self._audit is None:
            return orig_audit(self, events)
        if state.base is None:
            state.base = int(self._conn.execute(audit_log_mod._TREE_SIZE).fetchone()[0])
            state.appender = self._audit
        start = state.base + len(state.pending)
        state.pending.extend(events)
        return range(start, start + len(events))

    T.audit = audit


def _exp_writer_no_savepoints() -> None:
    """No SAVEPOINT/RELEASE per job in a group (see _patch_writer_group)."""
    _patch_writer_group(audit_per_group=False)


def _exp_audit_per_group() -> None:
    """writer-no-savepoints, and a group's audit leaves appended once, before COMMIT."""
    _patch_writer_group(audit_per_group=True)


# --- --trace: wall time of each stage of the delivery path (the code itself unchanged) --------

TRACE: dict[str, list[float]] = {}
# CPU time of the calling thread within each synchronous stage (thread_time): what the
# stage itself costs, whoever else runs meanwhile. Not kept for awaited stages.
TRACE_CPU: dict[str, list[float]] = {}


def _timed_sync(owner, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:  # not in the code measured (another release): nothing to time
        return

    def wrapper(*a, **kw):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            TRACE.setdefault(label, []).append(time.perf_counter() - t)
            TRACE_CPU.setdefault(label, []).append(time.thread_time() - c)

    setattr(owner, name, wrapper)


def _timed_async(owner, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:
        return

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
    from exchange_node.api import auth as auth_mod
    from exchange_node.api import v1 as v1_mod
    from exchange_node.at_rest import AtRest
    from exchange_node.audit import log as audit_log_mod
    from exchange_node.audit import merkle as merkle_mod
    from exchange_node.audit.log import AuditLog
    from exchange_node.delivery import outbox as outbox_mod
    from exchange_node.delivery import worker as worker_mod
    from exchange_node.services.notices import NoticeService
    from exchange_node.store import sqlite as sqlite_mod
    from exchange_node.store import writer as writer_mod
    from exchange_node.store.sqlite import SqliteStore

    N = node_mod.Node
    # The node's parts, where the code measured has them (older commits: on Node).
    try:
        from exchange_node.audit import witness as witness_mod
        from exchange_node.delivery import client as client_mod
        from exchange_node.delivery import inbound as inbound_mod
        from exchange_node.delivery import sender as sender_mod
    except ImportError:
        pass
    else:
        _timed_async(sender_mod.Outbox, "submit_many", "sender: Outbox.submit_many (whole)")
        _timed_async(client_mod.PeerClient, "post_batch", "sender: post_batch (HTTP round trip)")
        _timed_sync(sender_mod.Outbox, "verify_receipt_for", "sender: verify receipt")
        _timed_async(sender_mod.Outbox, "after_receipt", "sender: after_receipt (witness)")
        _timed_async(witness_mod.Witness, "check", "sender: witness (peer checkpoint)")
        _timed_async(inbound_mod.Inbound, "receive", "receiver: receive_batch (whole)")
        _timed_async(inbound_mod.Inbound, "_open_all", "receiver: open envelopes (crypto threads)")
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
    _timed_sync(AuditLog, "append_many", "both: AuditLog.append_many (own transaction)")
    _timed_sync(audit_log_mod, "_append_rows", "both: audit _append_rows (leaf + node INSERTs)")
    _timed_sync(merkle_mod, "frontier_nodes", "both: audit frontier reloaded from the table")
    # The local API's submission path (--via api) and what runs on the store writer.
    _timed_async(v1_mod, "_body", "sender: API _body (read + msgspec decode)")
    _timed_sync(auth_mod.TokenCache, "find", "sender: API token check (TokenCache.find)")
    _timed_async(NoticeService, "submit", "sender: NoticeService.submit (whole)")
    _timed_sync(NoticeService, "check", "sender: NoticeService.check (domain rules, body)")
    _timed_sync(outbox_mod, "seal", "sender: seal (in seal_for)")
    _timed_sync(AtRest, "encrypt", "sender: AtRest.encrypt (payload at rest)")
    _timed_sync(sqlite_mod, "_enqueue", "sender: _enqueue (outbox INSERT, writer thread)")
    _timed_sync(sqlite_mod, "_record_receipt", "sender: _record_receipt (writer thread)")
    _timed_sync(sqlite_mod, "_accept", "receiver: _accept (inbox INSERT, writer thread)")
    _timed_sync(
        writer_mod.GroupCommitWriter, "_run_group", "both: writer group (BEGIN..COMMIT, whole)"
    )
    orig_submit = writer_mod.GroupCommitWriter.submit

    def submit(self, fn, **kw):
        def timed(conn, fn=fn):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(conn)
            finally:
                label = "both: writer jobs (work inside the group, all of it)"
                TRACE.setdefault(label, []).append(time.perf_counter() - t)
                TRACE_CPU.setdefault(label, []).append(time.thread_time() - c)

        return orig_submit(self, timed, **kw)

    writer_mod.GroupCommitWriter.submit = submit

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
            "cpu": sum(TRACE_CPU.get(k, [])) if k in TRACE_CPU else None,
        }
        for k, v in list(TRACE.items())
        if v
    }


def print_trace(title: str, summary: dict[str, dict[str, float]], notices: int = 0) -> None:
    """Wall time of each stage; for synchronous ones also the CPU of the thread that ran
    it, in all and per notice of the phase (``notices``)."""
    print(
        f"  {title}: stage{' ' * 54}calls    total   mean    p99      CPU"
        + ("  CPU/notice" if notices else "")
    )
    for k, v in sorted(summary.items()):
        cpu = v.get("cpu")
        cpu_s = f"{cpu:>7.2f}s" if cpu is not None else " " * 8
        per = f"  {cpu / notices * 1e3:>7.3f}ms" if cpu is not None and notices else ""
        print(
            f"    {k:<58} {v['count']:>6} {v['total']:>7.2f}s {v['mean'] * 1e3:>6.2f}ms "
            f"{v['p99'] * 1e3:>6.1f}ms {cpu_s}{per}"
        )


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "writer-linger": _exp_writer_linger,
    "writer-no-savepoints": _exp_writer_no_savepoints,
    "audit-per-group": _exp_audit_per_group,
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


NEW_DATABASE: Callable[[], str] | None = None
"""With ``--store postgresql``: a new database's URL for each node created."""


def cli(node: BenchNode, *args: str) -> str:
    cmd = [sys.executable, "-m", "exchange_node.cli", "--config", str(node.config), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=CODE)
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
    if NEW_DATABASE is not None:
        text += f'\n[store]\nurl = "{NEW_DATABASE()}"\n'
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
        # The workers' host: the node's outbox (since the node was split), else the node.
        host = getattr(node, "outbox", node)
        orig = host.after_receipt

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

        host.after_receipt = hooked


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
    TRACE_CPU.clear()
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
    TRACE_CPU.clear()
    if args.trace:
        os.kill(rpid, signal.SIGUSR1)
    m0 = machine_cpu()
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
    m1 = machine_cpu()
    t_measured = time.perf_counter() - t_start
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
        "machine_busy": m1[0] - m0[0],
        "machine_steal": m1[1] - m0[1],
        "measured_seconds": t_measured,
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


# --- --via api: the sender is `exchange-node serve`, loaded through its local API ------------------

NOTICE_PATH = "/api/v1/notices"
# The batch submission endpoint. Its path and body are here and nowhere else, so adapting
# the benchmark to what is merged is one edit; while it answers 404 (or 405) the batch
# phase is skipped with a message.
BATCH_PATH = "/api/v1/notice-batches"


def batch_request(notices: list[dict]) -> dict:
    return {"notices": notices}


MRZ = "P<PHLSPECIMEN<<MARIA<<<<<<<<<<<<<<<<<<<<<<<<\nP1234567A1PHL8001014F3001019<<<<<<<<<<<<<<00"
REMARKS = "Observed at primary inspection. " * 13


def notice_json(now_ms: int) -> dict:
    """notice_body() as an authority's system posts it (docs/local-api.md); the node
    picks the notice id."""
    return {
        "kind": "FORGED",
        "document": {
            "issuing_state": "PHL",
            "document_type": "P",
            "document_number": "P1234567A",
            "mrz": MRZ,
        },
        "detection": {
            "place": "JPNRT",
            "detected_at_ms": now_ms - 3_600_000,
            "authority": "Immigration Services Agency, Narita",
        },
        "remarks": REMARKS,
        "recipients": [RECEIVER],
    }


def message_ids(answer) -> list[str]:
    """Every ``message_id`` in an API answer, whatever its shape (one notice or a batch)."""
    out: list[str] = []

    def walk(x) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "message_id" and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(answer)
    return out


class SenderDb:
    """The sender's database, read only, from the load process: what is delivered, when.
    (SQLite in WAL mode: reading does not hold up the node's writer.)"""

    def __init__(self, path: str, peer: str) -> None:
        import sqlite3

        if path.startswith("postgresql://"):  # the same SQL, through the store's adapter
            from exchange_node.store.postgresql import PgConnection

            self.conn = PgConnection(path, {}, read_only=True)
        else:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        self.peer = peer

    def done(self) -> int:
        """Messages to the peer that are delivered (any outcome) or dead."""
        row = self.conn.execute(
            "SELECT delivered + dead FROM outbox_counts WHERE peer_id = ?", (self.peer,)
        ).fetchone()
        return row[0] if row else 0

    def delivered_at(self, message_id: bytes) -> int | None:
        row = self.conn.execute(
            "SELECT delivered_at FROM outbox WHERE message_id = ? AND peer_id = ?",
            (message_id, self.peer),
        ).fetchone()
        return row[0] if row else None

    def rows_for(self, message_ids: set[bytes]) -> dict[bytes, tuple[int | None, str | None]]:
        """delivered_at and outcome of each of ``message_ids``."""
        out = {}
        for mid, at, outcome in self.conn.execute(
            "SELECT message_id, delivered_at, outcome FROM outbox WHERE peer_id = ?", (self.peer,)
        ):
            if mid in message_ids:
                out[mid] = (at, outcome)
        return out


def thread_names(pid: int, names_file: str) -> dict[int, str]:
    """Ask a ``--role node`` process for its thread names (SIGUSR2); {} if it does not say."""
    path = Path(names_file)
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if path.exists():
            return {int(k): v for k, v in json.loads(path.read_text()).items()}
        time.sleep(0.02)
    return {}


def thread_groups(split: dict[str, float]) -> dict[str, float]:
    """Pool threads summed: ``crypto_0``, ``crypto_1``... are ``crypto_*``."""
    out: dict[str, float] = {}
    for name, t in split.items():
        head, _, tail = name.rpartition("_")
        key = f"{head}_*" if head and tail.isdigit() else name
        out[key] = out.get(key, 0.0) + t
    return out


def spy_start(pids: dict[str, int], where: Path, tag: str) -> list[subprocess.Popen]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    for name, pid in pids.items():
        out = where / f"{tag}-{name}.raw.txt"
        procs.append(
            subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--nonblocking"]
                + ["--format", "raw", "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=open(where / f"{tag}-{name}.log", "w"),  # noqa: SIM115
            )
        )
    time.sleep(1.0)  # let py-spy attach before the load starts
    return procs


def role_load(args) -> int:
    """The load generator of ``--via api``: HTTP clients in a process of their own."""
    result = asyncio.run(load_main(args))
    Path(args.result).write_text(json.dumps(result))
    return 0


async def load_main(args) -> dict:
    import aiohttp

    db = SenderDb(args.sender_db, args.peer)
    spid, rpid = args.sender_pid, args.receiver_pid
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    body = json.dumps(notice_json(time.time_ns() // 1_000_000)).encode()
    out: dict = {"body_bytes": len(body)}
    trace_pids = [p for p in (spid, rpid) if args.trace]

    def mark_phase() -> None:  # --trace: each node keeps what the phase that ended timed
        for pid in trace_pids:
            os.kill(pid, signal.SIGUSR1)

    def cpu() -> tuple[float, float, float]:
        return cpu_seconds(spid), cpu_seconds(rpid), cpu_seconds()

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.phase_timeout)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    urls = itertools.cycle(args.local_url.split(","))  # one per sender process

    async def post(path: str, data: bytes) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        async with session.post(next(urls) + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
        return status, raw, time.perf_counter() - t0

    async def submit_one() -> tuple[bytes, float, int]:
        """One POST /api/v1/notices: (message id, seconds to the 202, wall ms at the start)."""
        w0 = time.time_ns() // 1_000_000
        status, raw, dt = await post(NOTICE_PATH, body)
        if status != 202:
            raise RuntimeError(f"POST {NOTICE_PATH}: HTTP {status}: {raw[:300]!r}")
        return bytes.fromhex(json.loads(raw)["messages"][0]["message_id"]), dt, w0

    async def wait_done(target: int, deadline: float, poll: float = 0.01) -> bool:
        while db.done() < target:
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(poll)
        return True

    async def wait_one(mid: bytes, deadline: float) -> float:
        """perf_counter when the stored receipt of ``mid`` is seen (polled every 1 ms)."""
        while db.delivered_at(mid) is None:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"message {mid.hex()} not delivered in time")
            await asyncio.sleep(0.001)
        return time.perf_counter()

    def stored_latencies(sent: dict[bytes, int]) -> tuple[list[float], int, int]:
        """Submit (wall ms) to stored delivered_at, seconds; and the latest delivered_at."""
        rows = db.rows_for(set(sent))
        lat = [(rows[m][0] - w) / 1000 for m, w in sent.items() if m in rows and rows[m][0]]
        last = max((r[0] for r in rows.values() if r[0]), default=0)
        not_accepted = sum(1 for r in rows.values() if r[1] not in ("accepted", None))
        return lat, last, not_accepted

    async def throughput(tag: str, per: int, clients: int, request) -> dict:
        """``args.n`` notices in requests of ``per`` by ``clients`` concurrent clients;
        ``request()`` sends one: (message ids, seconds to the answer, wall ms at the start)."""
        nonlocal done
        requests = -(-args.n // per)
        sent: dict[bytes, int] = {}
        lat: list[float] = []
        profiler = None
        if args.profile == "py-spy" and tag == "single":
            profiler = spy_start(
                {"sender": args.sender_pid, "receiver": args.receiver_pid},
                Path(args.profile_dir),
                "api",
            )
        s_threads0, r_threads0 = thread_cpu(args.sender_pid), thread_cpu(args.receiver_pid)
        m0 = machine_cpu()
        c0 = cpu()
        w_start = time.time_ns() // 1_000_000
        t_start = time.perf_counter()

        async def client() -> None:
            nonlocal requests
            while requests > 0:
                requests -= 1
                mids, dt, w0 = await request()
                for mid in mids:
                    sent[mid] = w0
                lat.append(dt)

        await asyncio.gather(*(client() for _ in range(clients)))
        t_submitted = time.perf_counter()
        done += len(sent)
        complete = await wait_done(done, time.perf_counter() + args.phase_timeout, poll=0.005)
        c1 = cpu()
        m1 = machine_cpu()
        t_done = time.perf_counter()
        s_threads1, r_threads1 = thread_cpu(args.sender_pid), thread_cpu(args.receiver_pid)
        if profiler:
            for p in profiler:
                p.send_signal(signal.SIGINT)
            for p in profiler:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        s_names = thread_names(args.sender_pid, args.sender_names)
        r_names = thread_names(args.receiver_pid, args.receiver_names)
        e2e_lat, last_ms, not_accepted = stored_latencies(sent)
        seconds = (last_ms - w_start) / 1000 if last_ms else float("nan")
        delivered = len(e2e_lat)
        return {
            "n": len(sent),
            "per_request": per,
            "clients": clients,
            "delivered": delivered,
            "complete": complete,
            "not_accepted": not_accepted,
            "seconds": seconds,
            "rate": delivered / seconds,
            "submit_seconds": t_submitted - t_start,
            "submit_rate": len(sent) / (t_submitted - t_start),
            "post_p50": pct(lat, 50),
            "post_p99": pct(lat, 99),
            "p50": pct(e2e_lat, 50),
            "p99": pct(e2e_lat, 99),
            "cpu_sender": c1[0] - c0[0],
            "cpu_receiver": c1[1] - c0[1],
            "cpu_load": c1[2] - c0[2],
            "machine_busy": m1[0] - m0[0],
            "machine_steal": m1[1] - m0[1],
            "measured_seconds": t_done - t_start,
            "cpu_sender_threads": thread_groups(cpu_split(s_threads0, s_threads1, s_names)),
            "cpu_receiver_threads": thread_groups(cpu_split(r_threads0, r_threads1, r_names)),
        }

    try:
        # 0. warm-up: connections, TLS between the nodes, first checkpoint.
        deadline = time.perf_counter() + 60
        for _ in range(20):
            mid, _, _ = await submit_one()
            await wait_one(mid, deadline)
        await asyncio.gather(*(submit_one() for _ in range(args.concurrency)))
        if not await wait_done(20 + args.concurrency, deadline):
            raise RuntimeError("warm-up notices not delivered in 60 s")
        done = db.done()

        # 1. idle pair: one POST at a time, the next once its receipt is stored.
        deadline = time.perf_counter() + args.phase_timeout
        submit_lat, receipt_lat = [], []
        c0 = cpu()
        for _ in range(args.idle):
            t0 = time.perf_counter()
            mid, dt, _ = await submit_one()
            submit_lat.append(dt)
            receipt_lat.append(await wait_one(mid, deadline) - t0)
            await asyncio.sleep(0.005)
        c1 = cpu()
        done += args.idle
        out["idle"] = {
            "count": args.idle,
            "submit_p50": pct(submit_lat, 50),
            "submit_p99": pct(submit_lat, 99),
            "receipt_p50": pct(receipt_lat, 50),
            "receipt_p99": pct(receipt_lat, 99),
            "cpu_sender_per_notice": (c1[0] - c0[0]) / max(args.idle, 1),
            "cpu_receiver_per_notice": (c1[1] - c0[1]) / max(args.idle, 1),
        }

        # 2. paced, open loop: latency counts from the scheduled time.
        if args.rate > 0 and args.rate_seconds > 0:
            total = int(args.rate * args.rate_seconds)
            sched_wall: dict[bytes, int] = {}
            submit_lat = []
            c0 = cpu()
            start = time.perf_counter() + 0.05
            wall0 = time.time_ns() // 1_000_000 + 50

            async def paced(i: int, at: float) -> None:
                mid, _, _ = await submit_one()
                submit_lat.append(time.perf_counter() - at)
                sched_wall[mid] = wall0 + round(i * 1000 / args.rate)

            tasks = []
            for i in range(total):
                at = start + i / args.rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(paced(i, at)))
            await asyncio.gather(*tasks)
            submitted = time.perf_counter()
            done += total
            complete = await wait_done(done, time.perf_counter() + args.phase_timeout)
            c1 = cpu()
            lat, _, _ = stored_latencies(sched_wall)
            out["paced"] = {
                "offered_rate": args.rate,
                "count": total,
                "complete": complete,
                "achieved_submit_rate": total / (submitted - start),
                "submit_p50": pct(submit_lat, 50),
                "submit_p99": pct(submit_lat, 99),
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "cpu_sender": c1[0] - c0[0],
                "cpu_receiver": c1[1] - c0[1],
                "seconds": time.perf_counter() - start,
            }

        # 3. throughput, single POSTs.
        await asyncio.sleep(0.5)
        mark_phase()

        async def single() -> tuple[list[bytes], float, int]:
            mid, dt, w0 = await submit_one()
            return [mid], dt, w0

        out["single"] = await throughput("single", 1, args.concurrency, single)
        mark_phase()

        # 4. throughput, batch POSTs (when the endpoint exists).
        probe_notices = [notice_json(time.time_ns() // 1_000_000)] * args.batch_size
        probe = json.dumps(batch_request(probe_notices)).encode()
        status, raw, _ = await post(BATCH_PATH, probe)
        if status in (404, 405):
            out["batch"] = {"skipped": f"POST {BATCH_PATH} answered {status}: not in this code"}
        elif status >= 300 or not message_ids(json.loads(raw)):
            out["batch"] = {
                "skipped": f"POST {BATCH_PATH} answered {status}: {raw[:300]!r}; "
                "adapt BATCH_PATH / batch_request() in bench/e2e.py"
            }
        else:
            done += len(message_ids(json.loads(raw)))
            if not await wait_done(done, time.perf_counter() + 60):
                raise RuntimeError("the batch probe was not delivered in 60 s")
            await asyncio.sleep(0.5)

            async def batch_one() -> tuple[list[bytes], float, int]:
                w0 = time.time_ns() // 1_000_000
                status, raw, dt = await post(BATCH_PATH, probe)
                if status >= 300:
                    raise RuntimeError(f"POST {BATCH_PATH}: HTTP {status}: {raw[:300]!r}")
                return [bytes.fromhex(m) for m in message_ids(json.loads(raw))], dt, w0

            out["batch"] = await throughput(
                "batch", args.batch_size, args.batch_concurrency, batch_one
            )
            mark_phase()
    finally:
        await session.close()
    return out


# --- a node process through this script: `exchange-node serve`, plus the signals the run uses --------


def role_node(args) -> int:
    """``exchange-node serve`` (the CLI's own main) with, besides: SIGUSR1 to keep the
    ``--trace`` timings of the phase that ended (with ``--trace``), SIGUSR2 to write the
    names of its threads to ``--names-file`` (Python 3.11 does not give them to the
    kernel, so /proc alone cannot tell the store writer from a crypto thread)."""
    import threading

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
            TRACE_CPU.clear()

        signal.signal(signal.SIGUSR1, next_phase)
    if args.names_file:

        def write_names(*_):
            names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
            names[os.getpid()] = "event loop (main)"
            tmp = Path(f"{args.names_file}.tmp")
            tmp.write_text(json.dumps(names))
            tmp.replace(args.names_file)

        signal.signal(signal.SIGUSR2, write_names)
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
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=CODE)  # noqa: SIM115
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
    s, r = node_pair(sdir, suite, plain)
    bare_fig = measure_bare(args, s, r, sdir)
    out = {}
    if args.via in ("direct", "both"):
        out["direct"] = run_direct(args, suite, sdir, s, r, crypto, bare_fig)
    if args.via in ("api", "both"):
        out["api"] = run_api(args, suite, sdir / "api", crypto, bare_fig, out.get("direct"))
    return out


def node_pair(where: Path, suite: str, plain: bool) -> tuple[BenchNode, BenchNode]:
    where.mkdir(parents=True, exist_ok=True)
    s = create_node(where, SENDER, "JPN", suite, plain)
    r = create_node(where, RECEIVER, "PHL", suite, plain)
    pin(s, r)
    pin(r, s)
    return s, r


def measure_bare(args, s: BenchNode, r: BenchNode, sdir: Path) -> dict:
    """Bare aiohttp, between two processes, with the peer API's TLS; with ``--via api``
    also over plain HTTP with a notice-sized JSON body, as the local API is reached."""
    plain = args.plain_http
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
    if args.via in ("api", "both"):
        port = free_port()
        bare = start_proc(
            [sys.executable, __file__, "--role", "bare-server", "--port", str(port)]
            + ["--sender-dir", str(s.dir), "--receiver-dir", str(r.dir)]
            + ["--ready-file", str(sdir / "bare-plain.ready"), "--plain-http"],
            sdir / "bare-plain.log",
            sdir / "bare-plain.ready",
        )
        try:
            body = json.dumps(notice_json(0)).encode()
            for conc in (1, 8):
                c0 = cpu_seconds(bare.pid)
                rate, secs = asyncio.run(
                    bare_rates(f"http://127.0.0.1:{port}/bare", None, body, args.bare_seconds, conc)
                )
                srv = (cpu_seconds(bare.pid) - c0) / (rate * secs)
                bare_fig[("json", conc)] = rate
                bare_fig[("json-cpu", conc)] = srv
                print(
                    f"bare aiohttp POST notice JSON ({len(body)} B), plain HTTP, {conc} in flight: "
                    f"{rate:>8,.0f} round trips/s  (server CPU {srv * 1e6:.0f} us each)",
                    flush=True,
                )
        finally:
            stop_proc(bare)
    return bare_fig


def run_direct(
    args, suite: str, sdir: Path, s: BenchNode, r: BenchNode, crypto: CryptoLimit, bare_fig: dict
) -> dict:
    """The sender is this script calling Node.submit; the receiver `exchange-node serve`."""
    print(f"--- direct: the sender calls Node.submit, {args.concurrency} concurrent callers ---")
    # The receiver: `exchange-node serve` (or the same through this script for experiments).
    ready = r.dir / "ready.json"
    rtrace = sdir / "receiver-trace.json"
    if args.experiment or args.trace:
        rcmd = [__file__, "--role", "node", "--config", str(r.config)]
        rcmd += [a for e in args.experiment for a in ("--experiment", e)]
        rcmd += ["--trace", "--result", str(rtrace)] if args.trace else []
    else:
        rcmd = ["-m", "exchange_node.cli", "--config", str(r.config), "serve"]
    rcmd += ["--ready-file", str(ready)]
    prof_dir = Path(args.profile_dir or sdir.parent) / suite
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
            res = subprocess.run(scmd, stdout=log, stderr=subprocess.STDOUT, cwd=CODE)
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
    ours = tp["cpu_sender"] + tp["cpu_receiver"]
    print(others_line(tp["machine_busy"], tp["machine_steal"], ours, tp["measured_seconds"]))
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
        print_trace("sender", out["trace"], tp["n"])
        if rtrace.exists():
            print_trace("receiver", json.loads(rtrace.read_text()), tp["n"])
    if args.profile != "none":
        print(f"profiles in {prof_dir}")
    return out


def run_api(
    args, suite: str, adir: Path, crypto: CryptoLimit, bare_fig: dict, direct: dict | None
) -> dict:
    """The sender is `exchange-node serve` too, loaded through its local API by HTTP
    clients in a process of their own (so their CPU is not the sender's)."""
    print(
        f"--- via the local API: the sender is `exchange-node serve`; {args.concurrency} "
        "HTTP clients (aiohttp, keep-alive) in another process post to it ---",
        flush=True,
    )
    plain = args.plain_http
    s, r = node_pair(adir, suite, plain)
    token = cli(s, "token", "create", "--role", "document_officer", "--name", "bench").split()[0]
    prof_dir = Path(args.profile_dir or adir.parent.parent) / suite
    prof_dir.mkdir(parents=True, exist_ok=True)

    def node_cmd(n: BenchNode, name: str) -> list[str]:
        cmd = [__file__, "--role", "node", "--config", str(n.config)]
        cmd += ["--ready-file", str(n.dir / "ready.json"), "--names-file", str(n.dir / "names")]
        cmd += [a for e in args.experiment for a in ("--experiment", e)]
        cmd += ["--trace", "--result", str(adir / f"{name}-trace.json")] if args.trace else []
        if args.profile == "cprofile":
            cmd = ["-m", "cProfile", "-o", str(prof_dir / f"api-{name}.prof"), *cmd]
        return [sys.executable, *cmd]

    receiver = sender = None
    others: list[subprocess.Popen] = []
    try:
        receiver = start_proc(node_cmd(r, "receiver"), r.dir / "node.log", r.dir / "ready.json")
        sender = start_proc(node_cmd(s, "sender"), s.dir / "node.log", s.dir / "ready.json")
        local_ports = [json.loads((s.dir / "ready.json").read_text())["local_port"]]
        for i in range(1, args.workers):
            w = worker_of(s, i)
            others.append(start_proc(node_cmd(w, f"sender-{i}"), w.dir / "node.log",
                                     w.dir / "ready.json"))  # fmt: skip
            local_ports.append(json.loads((w.dir / "ready.json").read_text())["local_port"])
        result_path = adir / "load-result.json"
        lcmd = [sys.executable, __file__, "--role", "load", "--token", token]
        urls = ",".join(f"http://127.0.0.1:{p}" for p in local_ports)
        lcmd += ["--local-url", urls, "--peer", RECEIVER]
        lcmd += ["--sender-pid", str(sender.pid), "--receiver-pid", str(receiver.pid)]
        lcmd += ["--sender-db", sender_db(s), "--result", str(result_path)]
        lcmd += ["--sender-names", str(s.dir / "names"), "--receiver-names", str(r.dir / "names")]
        lcmd += ["--n", str(args.n), "--concurrency", str(args.concurrency)]
        lcmd += ["--idle", str(args.idle), "--rate", str(args.rate)]
        lcmd += ["--rate-seconds", str(args.rate_seconds)]
        lcmd += ["--phase-timeout", str(args.phase_timeout)]
        lcmd += ["--batch-size", str(args.batch_size)]
        lcmd += ["--batch-concurrency", str(args.batch_concurrency)]
        lcmd += ["--profile", args.profile, "--profile-dir", str(prof_dir)]
        lcmd += ["--trace"] if args.trace else []
        with open(adir / "load.log", "ab") as log:
            res = subprocess.run(lcmd, stdout=log, stderr=subprocess.STDOUT, cwd=CODE)
        if res.returncode != 0:
            raise RuntimeError(f"the load generator failed; see {adir / 'load.log'}")
        out = json.loads(result_path.read_text())
    finally:
        for proc in others:
            stop_proc(proc)
        stop_proc(sender)
        stop_proc(receiver)

    limit = crypto.per_notice
    idle = out["idle"]
    print(
        f"idle pair, one POST at a time ({idle['count']}): POST p50 {ms(idle['submit_p50'])}  "
        f"p99 {ms(idle['submit_p99'])}; to stored receipt p50 {ms(idle['receipt_p50'])}  "
        f"p99 {ms(idle['receipt_p99'])}"
    )
    print(
        f"  CPU per notice: sender {idle['cpu_sender_per_notice'] * 1e3:.2f} ms, "
        f"receiver {idle['cpu_receiver_per_notice'] * 1e3:.2f} ms"
    )
    if "paced" in out:
        p = out["paced"]
        print(
            f"paced {p['offered_rate']:,}/s offered for {p['count'] / p['offered_rate']:.0f} s "
            f"(posted at {p['achieved_submit_rate']:,.0f}/s){'' if p['complete'] else ' INCOMPLETE'}"
            f": POST done p50 {ms(p['submit_p50'])}  p99 {ms(p['submit_p99'])}; stored receipt "
            f"p50 {ms(p['p50'])}  p99 {ms(p['p99'])} (from the scheduled time)"
        )
        print(
            f"  CPU per notice: sender {p['cpu_sender'] / p['count'] * 1e3:.2f} ms, receiver "
            f"{p['cpu_receiver'] / p['count'] * 1e3:.2f} ms"
        )
    for key, title, target in (
        ("single", f"single POST {NOTICE_PATH}", 0.5),
        ("batch", f"POST {BATCH_PATH}", 0.8),
    ):
        tp = out.get(key)
        if tp is None:
            continue
        if "skipped" in tp:
            print(f"{title}: skipped: {tp['skipped']}")
            continue
        n = tp["delivered"] or 1
        print(
            f"{title}, {tp['n']:,} notices, {tp['per_request']} per request, {tp['clients']} "
            f"clients: {tp['rate']:,.0f} notices/s first POST to last stored receipt "
            f"= {tp['rate'] / limit:.2f} of the crypto-only limit   (target >= {target})"
            f"{'' if tp['complete'] else '  INCOMPLETE'}; not accepted {tp['not_accepted']}"
        )
        print(
            f"  POST answered p50 {ms(tp['post_p50'])}  p99 {ms(tp['post_p99'])}; submit to "
            f"stored receipt p50 {ms(tp['p50'])}  p99 {ms(tp['p99'])}; all posted in "
            f"{tp['submit_seconds']:.2f} s ({tp['submit_rate']:,.0f}/s)"
        )
        print(
            f"  CPU per notice: sender {tp['cpu_sender'] / n * 1e3:.2f} ms"
            f"{'   (target <= 0.70 ms)' if key == 'single' else ''}, receiver "
            f"{tp['cpu_receiver'] / n * 1e3:.2f} ms, load generator {tp['cpu_load'] / n * 1e3:.2f}"
            f" ms; sender {tp['cpu_sender'] / tp['seconds']:.0%} of a core"
        )
        for side in ("sender", "receiver"):
            split = sorted(tp[f"cpu_{side}_threads"].items(), key=lambda kv: -kv[1])
            print(
                f"  {side} CPU per notice by thread: "
                + ", ".join(f"{k} {v / n * 1e3:.2f} ms" for k, v in split if v >= 0.005)
            )
        ours = tp["cpu_sender"] + tp["cpu_receiver"] + tp["cpu_load"]
        print(others_line(tp["machine_busy"], tp["machine_steal"], ours, tp["measured_seconds"]))
    single = out.get("single", {})
    n_single = single.get("delivered", 0)
    if "rate" in single:
        line = f"ratios: single POSTs / crypto-only limit = {single['rate'] / limit:.2f}"
        if direct:
            d = direct["throughput"]
            line += (
                f"; / direct Node.submit = {single['rate'] / d['rate']:.2f} (notices/s), sender "
                f"CPU per notice {single['cpu_sender'] / max(single['delivered'], 1) * 1e3:.2f}"
                f" ms vs {d['cpu_sender'] / d['delivered'] * 1e3:.2f} ms direct"
            )
        print(line)
        if ("json-cpu", 8) in bare_fig:
            print(
                f"        a bare aiohttp POST of the same JSON costs its server "
                f"{bare_fig[('json-cpu', 8)] * 1e3:.2f} ms CPU (8 in flight): the floor of the "
                "local API's HTTP share"
            )
    if args.trace:
        print("stage timings, single-POST throughput (wall time; awaited stages include waiting):")
        for name in ("sender", "receiver"):
            path = adir / f"{name}-trace.json.1"
            if path.exists():
                print_trace(name, json.loads(path.read_text()), single.get("n", 0))
    if args.profile == "py-spy" and (prof_dir / "api-sender.raw.txt").exists() and n_single:
        loop_ms = single["cpu_sender_threads"].get("event loop (main)", 0) / n_single * 1e3
        print("sender profile, single-POST phase (py-spy samples; bench/spy_summary.py):")
        _spy_summary().main(
            [str(prof_dir / "api-sender.raw.txt"), "--scale", f"event loop (main)={loop_ms}"]
        )
    if args.profile != "none":
        print(f"profiles in {prof_dir} (api-*)")
    sys.stdout.flush()
    return out


def _spy_summary():
    spec = importlib.util.spec_from_file_location("spy_summary", REPO / "bench" / "spy_summary.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 notices, shorter phases")
    ap.add_argument("--n", type=int, help="notices in the throughput phase (default 20,000)")
    ap.add_argument("--suite", choices=[*SUITES, "both"], default="mlkem768-x25519")
    ap.add_argument("--plain-http", action="store_true", help="no TLS between the nodes")
    ap.add_argument(
        "--via", choices=["direct", "api", "both"], default="both",
        help="how the sender is loaded: Node.submit in-process, HTTP clients on its local "
        "API, or both one after the other (default)",
    )  # fmt: skip
    ap.add_argument(
        "--code", help="measure the exchange_node of this checkout (with its own .venv) "
        "instead of this one's; the benchmark scripts stay these",
    )  # fmt: skip
    ap.add_argument(
        "--concurrency", type=int, default=64,
        help="concurrent Node.submit callers, or HTTP clients with --via api",
    )  # fmt: skip
    ap.add_argument(
        "--batch-size", type=int, default=100, help="notices per batch submission request"
    )
    ap.add_argument(
        "--batch-concurrency", type=int, default=4, help="batch submission requests in flight"
    )
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
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--workers", type=int, default=1,
        help="sender processes on one database (PostgreSQL, --via api)",
    )  # fmt: skip
    ap.add_argument("--pg-url", help="a PostgreSQL server (default: start a throwaway one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--trace", action="store_true", help="print the wall time of each delivery stage"
    )
    # internal: the child roles
    ap.add_argument("--role", choices=["driver", "sender", "node", "load", "bare-server"], default="driver", help=argparse.SUPPRESS)  # fmt: skip
    for name in ("--config", "--peer", "--result", "--ready-file", "--sender-dir", "--receiver-dir",
                 "--names-file", "--token", "--local-url", "--sender-db", "--sender-names",
                 "--receiver-names"):  # fmt: skip
        ap.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--receiver-pid", "--sender-pid", "--port"):
        ap.add_argument(name, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--phase-timeout", type=float, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role == "sender":
        return role_sender(args)
    if args.role == "node":
        return role_node(args)
    if args.role == "load":
        return role_load(args)
    if args.role == "bare-server":
        return role_bare_server(args)
    if args.code and Path(args.code).resolve() != CODE:
        # Run again on that checkout's interpreter and code; the children inherit both.
        code = Path(args.code).resolve()
        python = code / ".venv" / "bin" / "python"
        if not python.exists():
            print(f"error: {python} does not exist (run `make setup` in {code})", file=sys.stderr)
            return 1
        env = dict(os.environ, E2E_CODE=str(code), PYTHONPATH=str(code))
        os.execve(str(python), [str(python), __file__, *(argv or sys.argv[1:])], env)

    if args.workers < 1 or (args.workers > 1 and (args.store == "sqlite" or args.via != "api")):
        ap.error("--workers N > 1 needs --store postgresql and --via api")
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
    print(f"  code          {CODE} at {code_version()}")
    print(
        f"  notices       {args.n:,} (throughput), {args.idle} (idle), "
        f"{args.rate:,}/s x {args.rate_seconds:g} s (paced); {args.concurrency} concurrent submitters"
    )
    if args.experiment:
        print(f"  EXPERIMENTS   {', '.join(args.experiment)} (patched; not the repository's code)")

    print(f"  store         {args.store}, {args.workers} sender process(es)")
    work = Path(tempfile.mkdtemp(prefix="exchange-node-e2e-"))
    os.chmod(work, 0o700)
    suites = list(SUITES) if args.suite == "both" else [args.suite]
    failed = False
    databases = contextlib.ExitStack()
    try:
        if args.store == "postgresql":
            global NEW_DATABASE
            NEW_DATABASE = databases.enter_context(postgresql_databases(args.pg_url))
        for suite in suites:
            args.envelope_bytes = envelope_size(suite)
            run_suite(args, suite, work)
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        databases.close()
        print(f"\nload average at the end: {_crypto_bench().machine.load_average()}")
        if args.keep or failed:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def sender_db(s: BenchNode) -> str:
    """What the load process reads the sender's deliveries from: its file or URL."""
    from exchange_node.config import load_config

    return load_config(s.config).store.url or str(s.data / "node.sqlite")


def worker_of(s: BenchNode, i: int) -> BenchNode:
    """Another process of node ``s``: its config with its own ports, the same data
    directory and database."""
    w = BenchNode(s.node_id, s.country, s.dir / f"worker-{i}", free_port(), free_port())
    w.dir.mkdir()
    text = s.config.read_text().replace('data_dir = "data"', f'data_dir = "{s.data}"', 1)
    text = text.replace(f'127.0.0.1:{s.peer_port}"', f'127.0.0.1:{w.peer_port}"', 1)
    text = text.replace(f'127.0.0.1:{s.local_port}"', f'127.0.0.1:{w.local_port}"', 1)
    w.config.write_text(text)
    return w


@contextlib.contextmanager
def postgresql_databases(pg_url: str | None) -> Iterator[Callable[[], str]]:
    """A function making a new database on ``pg_url``'s server, or on a throwaway one;
    every database made is dropped (and the server stopped) at the end."""
    import psycopg

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg_harness import PgServer, start_server

    root = None
    if pg_url:
        server = PgServer(pg_url)
    else:
        # Its own directory in /tmp: the server's user must reach it.
        root = Path(tempfile.mkdtemp(prefix="exn-bench-pg-"))
        server = start_server(root)
    made: list[str] = []
    base, _, _ = server.admin_url.rpartition("/")

    def new() -> str:
        name = f"exn_e2e_{os.getpid()}_{len(made)}"
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{base}/{name}"

    try:
        yield new
    finally:
        if root is not None:
            server.pg_ctl("stop", "-m", "fast", "-w")
            shutil.rmtree(root, ignore_errors=True)
        else:
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                for name in made:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def code_version() -> str:
    """The commit of the code measured, and whether its work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(CODE), "log", "-1", "--format=%h %s"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(CODE), "status", "--porcelain", "--", "exchange_node"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "(not a git checkout)"
    return head + (" (exchange_node/ modified)" if dirty else "")


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
