"""Several node processes on one PostgreSQL database, and the database going away.

- Two ``serve`` processes of the same node share its database. Each peer's queue is
  leased to one of them (delivery/leases.py); the holder is SIGKILLed by the fault hook
  at a commit point of its first receipt, and the other takes the lease over and
  delivers the rest: every notice arrives once, in queue order, and the audit tree all
  three writers appended to verifies.
- The server is restarted while a node submits: /readyz says 503 while the store cannot
  write, the node reconnects by itself, and every acknowledged submission is stored
  and delivered.

PostgreSQL only (SQLite serves one process): these tests use the harness's server.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.node import open_audit_log, open_store
from exchange_node.store.records import OutboxState
from tests import node_helpers
from tests.node_helpers import (
    fraud_notice,
    make_net,
    settled,
    start_serve,
    stop_process,
    wait_for,
)
from tests.pg_harness import selected_backends

JPN, PHL = "JPN-ISA", "PHL-DFA"
HELPER = [sys.executable, node_helpers.__file__]
N = 60


@pytest.fixture
async def net(tmp_path, request):
    if "postgresql" not in selected_backends(request.config):
        pytest.skip("PostgreSQL is not among the selected --store-backend")
    pg_server = request.getfixturevalue("pg_server")
    node_helpers.NEW_DATABASE = lambda: pg_server.url(pg_server.create_database())
    try:
        net = await make_net(tmp_path, [JPN, PHL], options={JPN: {"batch_size": 5}})
    finally:
        node_helpers.NEW_DATABASE = None
    yield net
    await net.stop_all()


def second_config(nd, port: int):
    """A config for another process of the same node: same database and data
    directory, its own listening ports."""
    text = nd.config_path.read_text()
    text = text.replace('data_dir = "data"', f'data_dir = "{nd.data}"')
    peer_listen = f'listen = "127.0.0.1:{nd.peer_port}"'
    assert peer_listen in text
    text = text.replace(peer_listen, f'listen = "127.0.0.1:{port}"')
    path = nd.dir / "second" / "node.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


async def lease_owner(store, peer_id: str) -> str | None:
    rows = store._read("SELECT owner FROM delivery_leases WHERE peer_id = ?", (peer_id,))
    return rows[0][0] if rows else None


def pid_of(owner: str | None) -> int | None:
    return int(owner.split(":")[1]) if owner else None


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_the_lease_holder_killed_mid_stream_is_taken_over_nothing_lost_doubled_or_reordered(
    net, point
):
    phl = await net[PHL].start()
    jpn_cfg = net[JPN].config()
    a = start_serve(net[JPN], "--crash-at", f"receipt.settle:{point}", script=HELPER)
    b = None
    store = await open_store(jpn_cfg)
    try:
        await wait_for(lambda: lease_owner(store, PHL), what="the first process holding the lease")
        assert pid_of(await lease_owner(store, PHL)) == a.pid
        b = start_serve(
            net[JPN],
            config=second_config(net[JPN], node_helpers.free_port()),
            ready=net[JPN].dir / "second" / "ready.json",
        )
        # A third writer: this process submits (as the local API of either would).
        submitter = await net[JPN].open()
        sent = await submitter.submit_many([(fraud_notice(f"P{i:07d}"), [PHL]) for i in range(N)])
        await net[JPN].stop()
        ids = [s.message_id for group in sent for s in group]

        assert await asyncio.to_thread(a.wait, 30) == -signal.SIGKILL
        await wait_for(lambda: settled(store, ids), timeout=60, what="delivery by the other")
        assert pid_of(await lease_owner(store, PHL)) == b.pid
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                stop_process(proc)

    rows = [store.message_status(mid)[0] for mid in ids]
    assert {r.state for r in rows} == {OutboxState.DELIVERED}
    # Every notice once at the peer, in the order it was queued.
    feed = [r for r in phl.store.inbox_feed(0, 10_000) if r.sender == JPN]
    outbox_order = [r.message_id for r in sorted(rows, key=lambda r: r.outbox_id)]
    kinds_seen = [r.message_id for r in feed if r.message_id in set(ids)]
    assert kinds_seen == outbox_order and len(set(kinds_seen)) == N
    # One tree, whichever process appended: it verifies, and each message's
    # submission is audited once.
    audit = open_audit_log(jpn_cfg, store)
    try:
        report = audit.verify(net[JPN].keys().local.signing_key.private.public_key())
        assert report.ok, report.problems
        submitted = [leaf.record for leaf in audit.query(kind=LeafKind.NOTICE_SUBMITTED,
                                                           limit=10_000)]  # fmt: skip
        assert sorted(r.message_id for r in submitted) == sorted(m.hex() for m in ids)
    finally:
        audit.close()
        await store.close()


async def readyz(node) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{node.local_port}/readyz") as resp,
    ):
        await resp.read()
        return resp.status


async def test_a_database_restart_during_traffic_is_ridden_out_and_loses_nothing_acknowledged(
    net, pg_server
):
    if pg_server.data_dir is None:
        pytest.skip("restarts only the harness's own server")
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    acknowledged: list[bytes] = []
    failures = 0

    async def traffic() -> None:
        nonlocal failures
        i = 0
        while True:
            try:
                (s,) = await jpn.submit(fraud_notice(f"R{i:07d}"), [PHL])
                acknowledged.append(s.message_id)
            except Exception:  # the store is down: not acknowledged, not counted
                failures += 1
            i += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(traffic())
    try:
        await wait_for(lambda: len(acknowledged) >= 5, what="traffic before the restart")
        await asyncio.to_thread(pg_server.pg_ctl, "stop", "-m", "fast", "-w")
        try:
            await wait_for(lambda: failures > 0, what="a refused submission")
            assert await readyz(jpn) == 503
        finally:
            await asyncio.to_thread(pg_server.pg_ctl, "start", "-w", "-l", str(pg_server.log))
        before = len(acknowledged)
        await wait_for(lambda: len(acknowledged) > before + 5, what="traffic after the restart")

        async def ready() -> bool:
            return await readyz(jpn) == 200

        await wait_for(ready, what="/readyz 200 again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    await wait_for(lambda: settled(jpn.store, acknowledged), timeout=60, what="delivery")
    received = {r.message_id for r in phl.store.inbox_feed(0, 10_000) if r.sender == JPN}
    assert set(acknowledged) <= received
