"""Which B-trees a submission writes: the WAL frames of each transaction, by table and index.

    .venv/bin/python bench/wal_pages.py [--before 10000] [--transactions 100] [--per 7]

A node like ``bench/submit.py``'s (one pinned peer, paused: acceptance only) first takes
``--before`` notices in batches of 100, so its indexes have the depth of a node in use.
Then ``--transactions`` requests of ``--per`` notices each (a single ``POST
/api/v1/notices`` for 1, ``POST /api/v1/notice-batches`` otherwise; 7 is about what the
store writer groups into one transaction under 16 concurrent single POSTs) are posted one
at a time, and the frames each one appended to ``node.sqlite-wal`` are read from the
file itself (a frame is one 4 KiB page: SQLite's WAL format) and mapped to the B-tree
owning that page (``dbstat``).

Every page a transaction changes is written to the WAL once, then again by the
checkpoint, and each costs the writer thread system time: fewer B-trees touched, and
keys that grow at the right edge (ordered ids, docs/protocol.md 8.5) rather than random
ones, mean fewer pages. Counts, not timings: they do not move when the machine is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import secrets
import sqlite3
import struct
import tempfile
from pathlib import Path

import aiohttp
import machine  # bench/machine.py: the scripts run from bench/
import structlog
import submit  # bench/submit.py: the same node, peer and notices

_WAL_HEADER = 32
_FRAME_HEADER = 24


def wal_frames(wal: Path) -> tuple[bytes, list[int]]:
    """The salt of ``wal`` and the page number of each of its valid frames, in order."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < _WAL_HEADER:
        return b"", []
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    pages, off = [], _WAL_HEADER
    while off + _FRAME_HEADER + page_size <= len(data):
        if data[off + 8 : off + 16] != salt:  # left over from before the last reset
            break
        pages.append(struct.unpack(">I", data[off : off + 4])[0])
        off += _FRAME_HEADER + page_size
    return salt, pages


async def measure(data: Path, before: int, transactions: int, per: int) -> None:
    from exchange_node.node import Node

    config = submit.Config(
        node=submit.NodeSection(
            id="JPN-ISA", country="JPN", data_dir=str(data), suite="mlkem768-x25519"
        ),
        peer_api=submit.PeerApiSection(listen="127.0.0.1:0", allow_plain_http=True),
        local_api=submit.LocalApiSection(listen="127.0.0.1:0"),
    )
    node = await Node.open(config)
    secret = "xn_" + secrets.token_urlsafe(32)
    await node.store.create_token("bench", "document_officer", secret, node.now_ms())
    await node.start()
    url = f"http://127.0.0.1:{node.local_port}/api/v1"
    numbers = submit.Numbers()
    db = data / "node.sqlite"
    wal = Path(f"{db}-wal")
    written: collections.Counter[int] = collections.Counter()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as http:

            async def post(k: int) -> None:
                if k == 1:
                    r = await http.post(f"{url}/notices", json=numbers.notice())
                else:
                    notices = [numbers.notice() for _ in range(k)]
                    r = await http.post(f"{url}/notice-batches", json={"notices": notices})
                if r.status != 202:
                    raise SystemExit(f"the node answered {r.status}: {await r.text()}")

            for _ in range(before // 100):
                await post(100)
            for _ in range(transactions):
                salt0, before_pages = wal_frames(wal)
                await post(per)
                salt1, after_pages = wal_frames(wal)
                # A checkpoint in between restarts the WAL: then all its frames are new.
                written.update(after_pages[len(before_pages) :] if salt0 == salt1 else after_pages)
    finally:
        await node.stop()
    with sqlite3.connect(db) as conn:
        owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    by_tree: collections.Counter[str] = collections.Counter()
    for page, n in written.items():
        by_tree[owner.get(page, "(freed since)")] += n
    n = transactions * per
    print(
        f"{before:,} notices before; {transactions} transactions of {per}: "
        f"{sum(written.values()) / n:.2f} WAL frames (4 KiB pages) per notice"
    )
    for name, k in by_tree.most_common():
        print(f"  {k / n:6.2f}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=int, default=10_000, help="notices taken first")
    ap.add_argument("--transactions", type=int, default=100, help="requests measured")
    ap.add_argument("--per", type=int, default=7, help="notices per request (1: single POST)")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    print(machine.text())
    with tempfile.TemporaryDirectory() as tmp:
        data = submit.make_nodes(Path(tmp), submit.SUITES["mlkem768-x25519"])
        asyncio.run(measure(data, args.before, args.transactions, args.per))


if __name__ == "__main__":
    main()
