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
    print_json,
)
from exchange_node.cli.dead_letters import dead_letter_json
from exchange_node.expiry import WARNING_DAYS, all_expiries, due, local_api_cert
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.store.records import Outcome


async def cmd_status(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        stats = store.queue_stats()
        dead = store.dead_letters(limit=20)
        catchups = [c for c in store.catchup_progress() if c.row.kinds is not None]
        now = now_ms()
        reviews = len(
            store.cases_due_for_review(now, cfg.retention.case_review_days * DAY_MS)
        ) + store.count_notices_due_for_review(
            cfg.node.id, now, cfg.retention.document_review_days * DAY_MS
        )
        unconfirmed = [
            (peer, purge.record_id)
            for purge in store.purges_with_notices()
            for peer, mid in json.loads(purge.notices).items()
            if not any(
                r.peer_id == peer and r.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)
                for r in store.message_status(bytes.fromhex(mid))
            )
        ]
        peer_cards = [verify_card(p.card) for p in store.list_peers()]
    finally:
        await store.close()
    own = verify_card((cfg.data_path / "card.pb").read_bytes())
    expiring = due(all_expiries(own, peer_cards, local_api_cert(cfg)), now)
    if args.json:
        print_json(
            {
                "node": cfg.node.id,
                "peers": [_queue_json(q) for q in stats],
                "catchups": [_catchup_json(c, now) for c in catchups],
                "dead_letters": [dead_letter_json(d, False) for d in dead],
                "reviews_due": reviews,
                "purges_unconfirmed": [{"peer": p, "record": r} for p, r in unconfirmed],
                "expiring": [
                    {"node": e.owner, "what": e.what, "not_after": e.not_after_ms} for e in expiring
                ],
            }
        )
        return 0
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
            f"  {'PEER':<14} {'STATE':<8} {'QUEUED':>7} {'DELIVERED':>9} {'REMAINING':>9} "
            f"{'DEAD':>5} {'TIME LEFT':>9}"
        )
        for c in catchups:
            eta = c.eta_s(now)
            print(
                f"  {c.row.peer_id:<14} {c.row.state:<8} {c.row.queued:>7} {c.delivered:>9} "
                f"{c.remaining:>9} {c.dead:>5} {_age(now - int(eta * 1000), now) if eta else '-':>9}"
            )
    print(f"records due for periodic review: {reviews} (`data review list`)")
    for peer, record in unconfirmed:
        print(f"purge of {record}: not confirmed by {peer} yet")
    if dead:
        print("dead letters (`dead-letters retry ID` or `dead-letters acknowledge ID`):")
        for d in dead:
            print(
                f"  {d.id:>6} {d.peer_id} message {d.message_id.hex()} reason {d.reason} queued {_iso(d.created_at)}"
            )
    if expiring:
        print(f"expiring within {WARNING_DAYS} days (docs/operations.md section 5):")
        for e in expiring:
            left = "EXPIRED" if e.left_ms(now) <= 0 else f"in {_age(now, e.not_after_ms)}"
            print(f"  {e.owner} {e.what.replace('_', ' ')} {_iso(e.not_after_ms)} ({left})")
    return 0


def _queue_json(q) -> dict:
    return {
        "peer": q.peer_id,
        "paused": q.paused,
        "queued": q.depth,
        "oldest_queued_at": q.oldest_queued_at,
        "delivered": q.delivered,
        "dead": q.dead,
        "last_contact_at": q.last_contact_at,
        "last_error": q.last_error,
    }


def _catchup_json(c, now: int) -> dict:
    eta = c.eta_s(now)
    return {
        "peer": c.row.peer_id,
        "state": c.row.state,
        "queued": c.row.queued,
        "delivered": c.delivered,
        "remaining": c.remaining,
        "dead": c.dead,
        # at the rate delivered so far; null while paused or before the first receipt
        "eta_seconds": None if eta is None else round(eta),
    }


async def cmd_serve(args) -> int:
    from exchange_node.node import lock_data_dir

    cfg = _cfg(args)
    # One serve per SQLite file; on PostgreSQL several processes share the data on
    # purpose (delivery leases keep each peer's queue to one of them).
    lock = None if cfg.store.url else lock_data_dir(cfg.data_path)
    try:
        return await _serve(cfg, args.ready_file)
    finally:
        if lock is not None:
            lock.close()


async def _serve(cfg, ready_file: str | None) -> int:
    """Run the node until SIGINT or SIGTERM; a start that fails half-way (the second
    address taken) stops what it started before the error is reported."""
    from exchange_node.node import Node

    node = await Node.open(cfg)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _hangup, node)
    if ready_file:
        # Whole or absent: a watcher that sees the file never reads it half written.
        ready = Path(ready_file)
        part = ready.with_name(ready.name + ".part")
        part.write_text(json.dumps({"peer_port": node.peer_port, "local_port": node.local_port}))
        part.replace(ready)
    await stop.wait()
    await node.stop()
    return 0


def _hangup(node) -> None:
    """SIGHUP (a log rotation, ``systemctl reload``) does not stop the node, and does not
    reload the config either: it is read once, checked whole, at start-up. Say so."""
    node.log.warning(
        "node.sighup_ignored",
        message="the config is read at start-up only: restart the node to apply changes"
        " to it; peers, pauses, policies and tokens changed with the command line apply"
        " without a restart",
    )
