"""Crash campaign: a stream of notices while sender and receiver are SIGKILLed at random.

Usage: .venv/bin/python bench/crash_campaign.py [--notices N] [--rate R] [--kills K]
                                                 [--seed S] [--timeout SECONDS] [--keep]

Two nodes (JPN-ISA sends, PHL-DFA receives) run as ``exchange-node serve`` processes
with fresh identities over mutual TLS on loopback. A border system posts N notices to
JPN-ISA's local API (at most R a second), each with its own ``Idempotency-Key``; whenever a request gets no
answer (the node was killed under it) the client waits for the node to come back and
sends the same key and body again, until it is answered. Meanwhile K times, at random
moments spread over the stream, the sender or the receiver is killed with SIGKILL and
restarted. The defaults (3,000 notices, 25 kills) are the campaign that found lost
notices and missing audit leaves before every operation became one transaction.

When the stream is done and every queue is empty, both nodes are stopped and their
databases are read directly. The campaign counts:

- lost: notices acknowledged to the client that the receiver never stored;
- duplicated: a document the sender indexed twice, or the receiver stored twice;
- out of order: the receiver's inbox order differs from the sender's queue order;
- unaudited: a delivered message without its ``notice.submitted`` and ``envelope.sent``
  leaves on the sender, a stored envelope without its accepted ``envelope.received``
  leaf on the receiver;
- audit logs that do not verify.

It prints the counts and the machine, and exits 0 only if every count is 0. Bounded:
it stops by itself after ``--timeout`` seconds (a failure then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import machine  # bench/machine.py: the scripts run from bench/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from e2e import BenchNode, cli, create_node, pin, start_proc, stop_proc  # noqa: E402

from exchange_node.audit.leaf import LeafKind  # noqa: E402
from exchange_node.audit.log import AuditLog  # noqa: E402
from exchange_node.store.records import OutboxState  # noqa: E402
from exchange_node.store.sqlite import SqliteStore  # noqa: E402

JPN, PHL = "JPN-ISA", "PHL-DFA"


class Proc:
    """One node process that can be killed and restarted."""

    def __init__(self, node: BenchNode) -> None:
        self.node = node
        self.proc: subprocess.Popen | None = None
        self.up = asyncio.Event()
        self.kills = 0

    def start(self) -> None:
        ready = self.node.dir / "ready.json"
        cmd = [sys.executable, "-m", "exchange_node.cli", "--config", str(self.node.config),
               "--log-level", "warning", "serve", "--ready-file", str(ready)]  # fmt: skip
        self.proc = start_proc(cmd, self.node.dir / "node.log", ready)
        self.up.set()

    def kill(self) -> None:
        self.up.clear()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        stop_proc(self.proc)
        self.up.clear()


def notice(i: int) -> dict:
    return {
        "kind": "COUNTERFEIT",
        "document": {"issuing_state": "PHL", "document_type": "P", "document_number": f"C{i:07d}"},
        "detection": {
            "place": "JPNRT",
            "detected_at_ms": time.time_ns() // 1_000_000 - 60_000,
            "authority": "ISA Narita",
        },
        "recipients": [PHL],
    }


async def client(sender: Proc, token: str, n: int, rate: float, acked: dict[int, str]) -> int:
    """Post notices 0..n-1 in order, at most ``rate`` a second, each retried under its
    key until answered. Returns how many requests were retried."""
    url = f"http://127.0.0.1:{sender.node.local_port}/api/v1/notices"
    retries = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            body = notice(i)
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"campaign-{i}"}
            while True:
                await sender.up.wait()
                try:
                    async with session.post(url, json=body, headers=headers) as resp:
                        answer = await resp.json(content_type=None)
                        if resp.status != 202:
                            raise RuntimeError(f"notice {i}: HTTP {resp.status}: {answer}")
                        [message] = answer["messages"]
                        acked[i] = message["message_id"]
                        break
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    retries += 1
                    await asyncio.sleep(0.05)
    return retries


async def killer(procs: list[Proc], kills: int, rng: random.Random, spread: float) -> None:
    """``kills`` SIGKILLs at random moments over about ``spread`` seconds, each victim
    restarted after a short outage."""
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.2, 1.8) * spread / kills)
        victim = rng.choice(procs)
        victim.kill()
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        await asyncio.to_thread(victim.start)


async def drained(sender: Proc, timeout: float) -> None:
    """Until the sender's queue to the receiver is empty."""
    url = f"http://127.0.0.1:{sender.node.local_port}/metrics"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url) as resp:
                text = await resp.text()
            depth = [ln for ln in text.splitlines() if ln.startswith("exchange_outbox_queue_depth")]
            if depth and all(ln.rsplit(" ", 1)[1] in ("0", "0.0") for ln in depth):
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the queue did not drain")


async def read(node: BenchNode) -> tuple[SqliteStore, AuditLog]:
    path = node.data / "node.sqlite"
    return await SqliteStore.open(path), AuditLog(path, node_id=node.node_id)


async def check(jpn: BenchNode, phl: BenchNode, acked: dict[int, str]) -> dict[str, int]:
    s_store, s_audit = await read(jpn)
    r_store, r_audit = await read(phl)
    try:
        inbox = [r for r in r_store.inbox_feed(0, 10_000) if r.sender == JPN]
        stored = Counter(r.message_id.hex() for r in inbox)
        lost = sum(1 for m in acked.values() if stored[m] == 0)
        sender_docs = Counter(
            n for i in range(len(acked)) for n in [f"C{i:07d}"]
            for _ in s_store.notices_for_document("PHL", n)
        )  # fmt: skip
        receiver_docs = Counter(
            n for i in range(len(acked)) for n in [f"C{i:07d}"]
            for _ in r_store.notices_for_document("PHL", n)
        )  # fmt: skip
        duplicated = (
            sum(c - 1 for c in sender_docs.values() if c > 1)
            + sum(c - 1 for c in receiver_docs.values() if c > 1)
            + sum(c - 1 for c in stored.values() if c > 1)
        )
        # FIFO: the receiver stored them in the order the sender queued them.
        queued_order = [acked[i] for i in sorted(acked)]
        received_order = [m for m in (r.message_id.hex() for r in inbox) if m in set(queued_order)]
        out_of_order = sum(1 for a, b in zip(queued_order, received_order, strict=False) if a != b)

        def by_message(audit: AuditLog, kind: str) -> Counter:
            return Counter(leaf.record.message_id for leaf in audit.query(kind=kind, limit=10_000))

        submitted = by_message(s_audit, LeafKind.NOTICE_SUBMITTED)
        sent = {
            leaf.record.message_id
            for leaf in s_audit.query(kind=LeafKind.ENVELOPE_SENT, limit=10_000)
            if leaf.record.attrs.get("outcome") in ("accepted", "duplicate")
        }
        received = {
            leaf.record.message_id
            for leaf in r_audit.query(kind=LeafKind.ENVELOPE_RECEIVED, limit=10_000)
            if leaf.record.attrs.get("outcome") == "accepted"
        }
        unaudited = 0
        undelivered = 0
        for m in acked.values():
            [row] = s_store.message_status(bytes.fromhex(m))
            if row.state is not OutboxState.DELIVERED:
                undelivered += 1
            if submitted[m] != 1 or (row.state is OutboxState.DELIVERED and m not in sent):
                unaudited += 1
        unaudited += sum(1 for m in stored if m not in received)
        bad_logs = sum(
            0 if audit.verify(_signing_key(node)).ok else 1
            for audit, node in ((s_audit, jpn), (r_audit, phl))
        )
        return {
            "acknowledged": len(acked),
            "stored by the receiver": len(stored),
            "lost": lost,
            "undelivered": undelivered,
            "duplicated": duplicated,
            "out of order": out_of_order,
            "unaudited": unaudited,
            "audit logs failing verification": bad_logs,
        }
    finally:
        for store, audit in ((s_store, s_audit), (r_store, r_audit)):
            audit.close()
            await store.close()


def _signing_key(node: BenchNode):
    """The node's own signing key (from its identity, not from the file being checked)."""
    from exchange_node.identity import load_identity

    return load_identity(node.data).local.signing_key.private.public_key()


async def campaign(args, work: Path) -> dict[str, int]:
    rng = random.Random(args.seed)
    jpn = create_node(work, JPN, "JPN", "mlkem768-x25519", plain=False)
    phl = create_node(work, PHL, "PHL", "mlkem768-x25519", plain=False)
    pin(jpn, phl)
    pin(phl, jpn)
    # Retries come fast in a campaign: an outage lasts a fraction of a second.
    for node in (jpn, phl):
        text = re.sub(
            r"(?m)^backoff_initial_ms = .*$", "backoff_initial_ms = 50", node.config.read_text()
        )
        node.config.write_text(re.sub(r"(?m)^backoff_max_ms = .*$", "backoff_max_ms = 500", text))
    token = cli(jpn, "token", "create", "--role", "document_officer", "--name", "campaign").strip()
    sender, receiver = Proc(jpn), Proc(phl)
    receiver.start()
    sender.start()
    acked: dict[int, str] = {}
    started = time.monotonic()
    try:
        spread = 0.9 * args.notices / args.rate
        chaos = asyncio.create_task(killer([sender, receiver], args.kills, rng, spread))
        retries = await client(sender, token, args.notices, args.rate, acked)
        await chaos
        await asyncio.gather(sender.up.wait(), receiver.up.wait())
        await drained(sender, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        sender.stop()
        receiver.stop()
    counts = await check(jpn, phl, acked)
    counts["sender kills"] = sender.kills
    counts["receiver kills"] = receiver.kills
    counts["client retries"] = retries
    print(f"stream of {args.notices} notices with {args.kills} kills took {elapsed:.1f} s")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notices", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=150, help="notices offered a second")
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the nodes' directories")
    args = ap.parse_args(argv)
    print("# crash campaign")
    for name, value in machine.rows():
        print(f"{name}: {value}")
    work = Path(tempfile.mkdtemp(prefix="crash-campaign-"))
    try:
        counts = asyncio.run(asyncio.wait_for(campaign(args, work), args.timeout))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    print(json.dumps(counts, indent=2))
    failures = ("lost", "undelivered", "duplicated", "out of order", "unaudited",
                "audit logs failing verification")  # fmt: skip
    return 0 if all(counts[k] == 0 for k in failures) else 1


if __name__ == "__main__":
    sys.exit(main())
