"""Audit log benchmark: append rates, proof times at scale, full verification.

    .venv/bin/python bench/audit.py                 # 1 million leaves
    .venv/bin/python bench/audit.py --ten-million   # 10 million (about 10 GB of disk)
    .venv/bin/python bench/audit.py --leaves 200000 --dir /path/on/the/disk/to/measure

Targets (docs/DESIGN.md): at least 10,000 appends a second; an inclusion proof at
10 million leaves in under 10 ms. Every append is durable (WAL, synchronous=FULL), so
single appends are bounded by the disk's fsync rate; the node batches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import machine  # bench/machine.py: the scripts run from bench/

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from exchange_node.audit import merkle  # noqa: E402
from exchange_node.audit.leaf import AuditEvent, LeafKind, keyed_hash  # noqa: E402
from exchange_node.audit.log import AuditLog  # noqa: E402
from exchange_node.store.sqlite import SqliteStore  # noqa: E402

NODE = "JPN-ISA"
T0 = 1_700_000_000_000
SUBJECT_KEY = b"s" * 32


def events(start: int, n: int) -> list[AuditEvent]:
    """Realistic leaves: sends, receipts and lookups with ids and keyed hashes."""
    out = []
    for i in range(start, start + n):
        if i % 4 == 3:
            out.append(
                AuditEvent(
                    time=T0 + i,
                    kind=LeafKind.DOCUMENT_LOOKUP,
                    actor="border-system-1",
                    subject_hash=keyed_hash(SUBJECT_KEY, f"JPN:P:TK{i:07d}"),
                    attrs={"result": "stolen"},
                )
            )
        else:
            out.append(
                AuditEvent(
                    time=T0 + i,
                    kind=LeafKind.ENVELOPE_SENT if i % 2 else LeafKind.RECEIPT_RECEIVED,
                    actor=NODE,
                    peer="PHL-DFA",
                    message_id=f"{i:032x}",
                )
            )
    return out


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({n:,} in {seconds:.2f} s)"


def ms(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return (
        f"mean {statistics.fmean(s) * 1e3:.3f} ms, p50 {s[len(s) // 2] * 1e3:.3f} ms,"
        f" p99 {p99 * 1e3:.3f} ms, max {s[-1] * 1e3:.3f} ms"
    )


def bench_appends(directory: Path) -> None:
    print("\n## appends (each call durable: one transaction, WAL, synchronous=FULL)")
    with AuditLog(directory / "appends.db", node_id=NODE) as log:
        single = events(0, 3000)
        t = time.perf_counter()
        for e in single:
            log.append(e)
        print(f"single append():                   {rate(len(single), time.perf_counter() - t)}")
        for size in (100, 1000):
            batch = events(0, size)
            rounds = max(1, 50_000 // size)
            t = time.perf_counter()
            for _ in range(rounds):
                log.append_many(batch)
            dt = time.perf_counter() - t
            print(f"append_many, batches of {size:>5}:     {rate(rounds * size, dt)}")

    async def concurrent(path: Path, n: int, tasks: int) -> float:
        """The node's path: leaves appended in store transactions, group-committed."""
        async with await SqliteStore.open(path) as store:
            with AuditLog(path, node_id=NODE) as node_log:
                store.attach_audit(node_log.append_on)
                evs = events(0, n)
                per = n // tasks

                async def worker(k: int) -> None:
                    for e in evs[k * per : (k + 1) * per]:
                        await store.append_audit([e])

                t = time.perf_counter()
                await asyncio.gather(*(worker(k) for k in range(tasks)))
                return time.perf_counter() - t

    for tasks in (1, 100):
        n = 3000 if tasks == 1 else 50_000
        dt = asyncio.run(concurrent(directory / f"node-{tasks}.sqlite", n, tasks))
        print(f"store.append_audit, {tasks:>3} concurrent tasks:  {rate(n, dt)}")


def build(log: AuditLog, n: int) -> float:
    """The bulk path: large append_many batches (one transaction each)."""
    t = time.perf_counter()
    batch = 20_000
    done = log.size
    last = time.perf_counter()
    while done < n:
        k = min(batch, n - done)
        log.append_many(events(done, k))
        done += k
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"  ... {done:,} leaves, {done / (last - t):,.0f}/s", flush=True)
    return time.perf_counter() - t


def bench_scale(directory: Path, n: int, samples: int) -> None:
    print(f"\n## {n:,} leaves")
    key = Ed25519PrivateKey.generate()
    path = directory / "big.db"
    with AuditLog(path, node_id=NODE, signing_key=key) as log:
        dt = build(log, n)
        print(f"build (append_many, batches of 20,000): {rate(n, dt)}")
        size = os.path.getsize(path) + os.path.getsize(f"{path}-wal")
        print(f"file size: {size / 2**20:,.0f} MiB ({size / n:.0f} bytes/leaf)")
        t = time.perf_counter()
        cp = log.sign_checkpoint(now=T0)
        print(f"sign checkpoint: {(time.perf_counter() - t) * 1e3:.2f} ms")
        rng = random.Random(1)
        inc, con = [], []
        for _ in range(samples):
            seq = rng.randrange(n)
            t = time.perf_counter()
            proof = log.inclusion_proof(seq)
            inc.append(time.perf_counter() - t)
            merkle.verify_inclusion(
                seq, n, merkle.leaf_hash(proof.leaf), proof.hashes, cp.root_hash
            )
        for _ in range(samples):
            old = rng.randint(1, n)
            t = time.perf_counter()
            p = log.consistency_proof(old)
            con.append(time.perf_counter() - t)
            merkle.verify_consistency(old, n, p.old_root, cp.root_hash, p.hashes)
        print(f"inclusion proof + checkpoint ({samples} random leaves): {ms(inc)}")
        print(f"consistency proof + checkpoint ({samples} random sizes): {ms(con)}")
        t = time.perf_counter()
        report = log.verify(key.public_key())
        dt = time.perf_counter() - t
        print(f"full verify: {dt:.1f} s ({n / dt:,.0f} leaves/s), ok={report.ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--ten-million", action="store_true", help="10,000,000 leaves")
    ap.add_argument("--samples", type=int, default=1000, help="proofs to time")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the files")
    ap.add_argument("--skip-appends", action="store_true")
    args = ap.parse_args()
    n = 10_000_000 if args.ten_million else args.leaves
    print("# audit log benchmark")
    print(machine.text())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="audit-bench-") as d:
        print(f"directory: {d}")
        if not args.skip_appends:
            bench_appends(Path(d))
        bench_scale(Path(d), n, args.samples)


if __name__ == "__main__":
    main()
