"""Console audit page at scale: a node whose log holds a million entries, pages timed.

    .venv/bin/python bench/console_audit.py                    # 1 million entries
    .venv/bin/python bench/console_audit.py --leaves 200000    # smaller, quicker

Builds the log in the node's own database (bulk appends, about a minute for a million),
starts the node, signs in to its console as an auditor and times each kind of page the
auditors use, over HTTP as a browser gets them: the newest page, a page deep in the
log (keyset: ``before``), filters by kind, actor, peer and a date range, and a
document's entries ("who looked up this passport", by the indexed ``subject_hash``
column since schema 10). Prints the median and worst of ``--samples`` requests each.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import machine  # bench/machine.py: the scripts run from bench/

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from exchange_node.audit.leaf import AuditEvent, LeafKind, keyed_hash  # noqa: E402
from exchange_node.audit.log import AuditLog  # noqa: E402
from exchange_node.config import (  # noqa: E402
    Config,
    LocalApiSection,
    NodeSection,
    PeerApiSection,
)
from exchange_node.identity import create_identity  # noqa: E402
from exchange_node.node import Node, prepare_database  # noqa: E402
from exchange_node.protocol.keys import Suite  # noqa: E402
from exchange_node.services import LOOKUP_KEY_FILE, load_subject_key  # noqa: E402

NODE = "JPN-ISA"
DAY = 86_400_000
T0 = 1_780_000_000_000  # 2026-05-28


def events(key: bytes, start: int, n: int, span_ms: int) -> list[AuditEvent]:
    """Sends, receipts and lookups by 50 desks, spread evenly over ``span_ms``."""
    out = []
    for i in range(start, start + n):
        t = T0 + i * span_ms // max(1, n + start)
        if i % 4 == 3:
            out.append(
                AuditEvent(
                    time=t,
                    kind=LeafKind.DOCUMENT_LOOKUP,
                    actor=f"border-desk-{i % 50}",
                    subject_hash=keyed_hash(key, f"PHL:P{i % 100_000:07d}"),
                    attrs={"found": "true"},
                )
            )
        else:
            out.append(
                AuditEvent(
                    time=t,
                    kind=LeafKind.ENVELOPE_SENT if i % 2 else LeafKind.RECEIPT_RECEIVED,
                    actor=NODE,
                    peer=("PHL-DFA", "IOM-MNL", "THA-IMM")[i % 3],
                    message_id=f"{i:032x}",
                )
            )
    return out


def build(data: Path, n: int) -> float:
    database = prepare_database(data)
    key = load_subject_key(data / "keys" / LOOKUP_KEY_FILE)
    started = time.perf_counter()
    with AuditLog(database, node_id=NODE) as log:
        done = 0
        while done < n:
            k = min(20_000, n - done)
            log.append_many(events(key, done, k, 180 * DAY))
            done += k
    return time.perf_counter() - started


async def measure(root: Path, n: int, samples: int) -> None:
    data = root / "data"
    create_identity(
        data, node_id=NODE, country="JPN", display_name=NODE,
        endpoint="http://127.0.0.1:1", suite=Suite.X25519, now_ms=T0 - DAY,
    )  # fmt: skip
    print(f"building {n:,} entries ...", flush=True)
    print(f"built in {build(data, n):.1f} s")
    config = Config(
        node=NodeSection(id=NODE, country="JPN", data_dir=str(data), suite="x25519"),
        peer_api=PeerApiSection(
            listen="127.0.0.1:0", public_endpoint="http://127.0.0.1:1", allow_plain_http=True
        ),
        local_api=LocalApiSection(listen="127.0.0.1:0"),
    )
    node = await Node.open(config)
    await node.start()
    try:
        secret = "xn_" + secrets.token_urlsafe(32)
        await node.store.create_token("bench-auditor", "auditor", secret, node.now_ms())
        base = f"http://127.0.0.1:{node.local_port}/console"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(base + "/sign-in") as r:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
            async with http.post(base + "/sign-in", data={"csrf": csrf, "token": secret}) as r:
                assert r.status == 200, r.status
            middle = n // 2
            pages = {
                "newest page": "",
                f"deep page (before={middle:,})": f"before={middle}",
                "kind=document.lookup": "kind=document.lookup",
                "kind=auth.failed (rare)": "kind=auth.failed",
                "actor=border-desk-7": "actor=border-desk-7",
                "peer=IOM-MNL": "peer=IOM-MNL",
                "one week (dates)": "since=2026-08-01&until=2026-08-07",
                "a document, any time": "kind=document.lookup&doc_state=PHL&doc_number=P0004243",
                "a document, one month": "kind=document.lookup&doc_state=PHL&doc_number=P0004243"
                "&since=2026-08-01&until=2026-08-31",
            }
            print(f"\n## /console/audit with {node.audit.size:,} entries ({samples} requests each)")
            for name, query in pages.items():
                times = []
                for _ in range(samples):
                    t = time.perf_counter()
                    async with http.get(f"{base}/audit?{query}") as r:
                        body = await r.text()
                        assert r.status == 200, (name, r.status)
                    times.append(time.perf_counter() - t)
                rows = body.count('<tr><td class="n">')
                print(
                    f"{name:<34} median {statistics.median(times) * 1e3:7.1f} ms, "
                    f"max {max(times) * 1e3:7.1f} ms, {rows} rows"
                )
    finally:
        await node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--dir", help="where to build the log (default: a temporary folder)")
    args = ap.parse_args()
    print(machine.text())
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(measure(Path(tmp), args.leaves, args.samples))


if __name__ == "__main__":
    main()
