"""Running the node and watching it: ``serve``, ``status``."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from exchange_node.cli.common import (
    _age,
    _cfg,
    _iso,
    _store,
    now_ms,
)


async def cmd_status(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        stats = store.queue_stats()
        dead = store.dead_letters(limit=20)
        catchups = [c for c in store.catchup_progress() if c.row.kinds is not None]
    finally:
        await store.close()
    now = now_ms()
    print(f"node {cfg.node.id}")
    print(
        f"{'PEER':<14} {'STATE':<7} {'QUEUED':>6} {'OLDEST':>9} {'DELIVERED':>9} {'DEAD':>5} {'LAST CONTACT':<12} LAST ERROR"
    )
    for q in stats:
        print(
            f"{q.peer_id:<14} {'paused' if q.paused else 'active':<7} {q.depth:>6} {_age(q.oldest_queued_at, now):>9} "
            f"{q.delivered:>9} {q.dead:>5} {_age(q.last_contact_at, now):<12} {q.last_error or ''}"
        )
    if catchups:
        print("catch-up (notices still in effect sent to a peer that joined):")
        print(
            f"  {'PEER':<14} {'STATE':<8} {'QUEUED':>7} {'DELIVERED':>9} {'REMAINING':>9} {'DEAD':>5}"
        )
        for c in catchups:
            print(
                f"  {c.row.peer_id:<14} {c.row.state:<8} {c.row.queued:>7} {c.delivered:>9} "
                f"{c.remaining:>9} {c.dead:>5}"
            )
    if dead:
        print("dead letters:")
        for d in dead:
            print(
                f"  {d.peer_id} message {d.message_id.hex()} reason {d.reason} queued {_iso(d.created_at)}"
            )
    return 0


async def cmd_serve(args) -> int:
    from exchange_node.node import Node

    cfg = _cfg(args)
    node = await Node.open(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.ready_file:
        # Whole or absent: a watcher that sees the file never reads it half written.
        ready = Path(args.ready_file)
        part = ready.with_name(ready.name + ".part")
        part.write_text(json.dumps({"peer_port": node.peer_port, "local_port": node.local_port}))
        part.replace(ready)
    await stop.wait()
    await node.stop()
    return 0
