"""Where a node's CPU goes, from a py-spy profile: samples by thread and by kind of work.

Usage: python bench/spy_summary.py PROFILE.raw.txt [--scale THREAD=MS ...] [--top N]

PROFILE is what ``bench/e2e.py --profile py-spy`` writes (``py-spy record --threads
--format raw``: one folded stack a line, thread first, sample count last). Each sample
is put in the first CATEGORIES entry with a pattern found anywhere in its stack, so a
category higher in the list wins (a log call inside the seal counts as logging).

``--scale "event loop (main)=0.61"`` turns one thread's shares into milliseconds per
notice, from the CPU per notice e2e.py measured for that thread in the same run. Only
sensible for a thread that waits in epoll when idle (the event loop): py-spy counts a
thread blocked in the kernel on I/O (the store writer in fsync) as busy, so that
thread's COMMIT share is mostly waiting, not CPU; ``--trace`` gives its CPU by stage.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

# (category, patterns): a pattern is a substring of one frame, "function (path:line)".
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("logging (structlog)", ("structlog/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("payload at rest (AtRest.encrypt)", ("AtRest.encrypt",)),
    ("seal (HPKE + Ed25519)", ("seal_for ", "envelope.py")),
    ("API token check", ("TokenCache.find", "hash_token_secret")),
    ("API body: read + JSON decode + schema (msgspec)", ("_body (exchange_node/api/v1.py",)),
    ("API answer: JSON encode", ("_json (exchange_node/api/v1.py",)),
    ("domain rules + wire body (NoticeService.check)", ("NoticeService.check",)),
    ("notice id, recipients, policy", ("token_bytes", "choose_recipients", "Node.policy")),
    ("store: queue the transaction, settle futures", ("SqliteStore._write", "_settle_all")),
    ("audit leaves (writer thread)", ("AuditLog.append_on", "AuditLog.append_many")),
    ("store: outbox INSERT (writer)", ("_enqueue (",)),
    ("store: index INSERT (writer)", ("index_notices",)),
    ("store: receipt UPDATEs (writer)", ("_record_receipt", "PeerWorker._record.<locals>")),
    ("store: inbox INSERT (writer)", ("_accept (",)),
    ("store: other work in a transaction (writer)", ("SqliteStore.transaction.<locals>",)),
    ("store: BEGIN/SAVEPOINT/COMMIT (incl. fsync wait)", ("GroupCommitWriter._run_group",)),
    ("audit checkpoint / witness", ("sign_checkpoint", "_witness", "after_receipt")),
    ("delivery: outbox read on the loop", ("SqliteStore.pending", "_next_rows")),
    ("delivery: receipt verify", ("verify_receipt",)),
    ("delivery: rest of the batch cycle (HTTP client, TLS)", ("PeerWorker", "post_batch")),
    ("receiver: open envelopes", ("open_envelopes",)),
    ("receiver: validate, sign receipt, rest", ("receive_batch", "batch_handler")),
    ("API handler glue (post_notice, submit)", ("post_notice", "NoticeService.submit")),
    (
        "HTTP server (aiohttp request/response)",
        ("aiohttp/web_", "aiohttp/http_", "problem_middleware", "guarded"),
    ),
    ("event loop (asyncio: select, transports, callbacks)", ("asyncio/",)),
]
OTHER = "other"
IDLE = "idle: waiting for work (not CPU)"
# py-spy takes some waiting threads for busy ones: a sample whose innermost frame is one
# of these is a thread blocked waiting for work, and is left out of the shares.
IDLE_LEAVES = (
    "EpollSelector.select",  # the event loop in epoll_wait
    "_worker (concurrent/futures/thread.py",  # a pool thread in its queue's get()
    "GroupCommitWriter._run (",  # the store writer in its queue's get()
)
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<where>[^()]*)\)$")


def category(frames: list[str]) -> str:
    for name, patterns in CATEGORIES:
        for f in frames:
            if any(p in f for p in patterns):
                return name
    return OTHER


def thread_label(first: str) -> str:
    """``thread (1234): crypto_0`` -> ``crypto_*``; the main thread -> event loop."""
    name = first.split(": ", 1)[-1].strip()
    if name == "MainThread" or name.startswith("thread (") or name.startswith("MainThread "):
        return "event loop (main)"
    head, _, tail = name.rpartition("_")
    return f"{head}_*" if head and tail.isdigit() else name


def load(path: str) -> dict[str, Counter]:
    by_thread: dict[str, Counter] = defaultdict(Counter)
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            idle = any(p in frames[-1] for p in IDLE_LEAVES)
            by_thread[thread_label(frames[0])][IDLE if idle else category(frames[1:])] += int(count)
    return by_thread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--scale", action="append", default=[], metavar="THREAD=MS")
    ap.add_argument("--top", type=int, default=20, help="categories shown per thread")
    args = ap.parse_args(argv)
    scale = {}
    for item in args.scale:
        name, _, value = item.rpartition("=")
        scale[name] = float(value)
    by_thread = load(args.profile)
    busy = {t: sum(c.values()) - c[IDLE] for t, c in by_thread.items()}
    total = sum(busy.values()) or 1
    for thread, counts in sorted(by_thread.items(), key=lambda kv: -busy[kv[0]]):
        n = busy[thread] or 1
        ms = scale.get(thread)
        print(
            f"{thread}: {busy[thread]} busy samples ({busy[thread] / total:.0%} of all; "
            f"{counts[IDLE]} idle left out)" + (f", {ms:.2f} ms/notice" if ms else "")
        )
        shown = [(cat, c) for cat, c in counts.most_common() if cat != IDLE][: args.top]
        for cat, c in shown:
            extra = f"  {ms * c / n:6.3f} ms/notice" if ms else ""
            print(f"  {c / n:6.1%}  {cat:<55}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
