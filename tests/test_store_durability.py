"""Acknowledged writes survive a kill; concurrent writes share transactions."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exchange_node.errors import ConflictError
from exchange_node.store import OutboxItem, SqliteStore

REPO = Path(__file__).resolve().parent.parent
PEER = "PHL-DFA"

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from exchange_node.store import OutboxItem, SqliteStore

    async def main():
        store = await SqliteStore.open(sys.argv[1])
        await store.upsert_peer("PHL-DFA", b"card", "fp", at=1)

        async def submit(n):
            [oid] = await store.enqueue(
                [OutboxItem("PHL-DFA", os.urandom(16), b"envelope", b"payload", n)]
            )
            print(oid, flush=True)  # acknowledged: the write has returned

        n = 0
        while True:
            await asyncio.gather(*(submit(n + k) for k in range(25)))
            n += 25

    asyncio.run(main())
    """
)


def item(n: int) -> OutboxItem:
    return OutboxItem(PEER, n.to_bytes(16, "big"), b"envelope", b"payload", n)


def test_every_acknowledged_enqueue_survives_sigkill(tmp_path):
    path = tmp_path / "node.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    acknowledged = []
    try:
        while len(acknowledged) < 300:
            line = child.stdout.readline()
            assert line, "child exited early"
            acknowledged.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    # Lines printed before the kill were acknowledged too; a cut-off last line was not.
    acknowledged += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]

    conn = sqlite3.connect(path)
    try:
        stored = {r[0] for r in conn.execute("SELECT id FROM outbox")}
    finally:
        conn.close()
    assert set(acknowledged) <= stored


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(tmp_path / "node.db")
    await s.upsert_peer(PEER, b"card", "fp", at=1)
    yield s
    await s.close()


async def _queue_behind_a_lock(store: SqliteStore, calls):
    """Start ``calls`` while another connection holds the write lock, then release it, so
    that they are all waiting for the writer at the same time (as under load)."""
    lock = sqlite3.connect(store.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        tasks = [asyncio.create_task(call) for call in calls]
        for _ in range(3):
            await asyncio.sleep(0)  # every task hands its job to the writer
    finally:
        lock.execute("COMMIT")
        lock.close()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_concurrent_enqueues_commit_in_far_fewer_transactions_than_calls(store):
    before = store.writer_stats()
    results = await _queue_behind_a_lock(store, [store.enqueue([item(n)]) for n in range(200)])
    after = store.writer_stats()
    assert all(isinstance(r, list) for r in results)
    assert after.jobs - before.jobs == 200
    assert after.transactions - before.transactions <= 2
    assert len(store.pending(PEER, 1000)) == 200


async def test_failing_enqueue_in_a_group_leaves_the_others_committed(store):
    await store.enqueue([item(0)])
    before = store.writer_stats()
    calls = [store.enqueue([item(n)]) for n in range(1, 5)]
    calls.insert(2, store.enqueue([item(5), item(0)]))  # item 0 exists: refused whole
    results = await _queue_behind_a_lock(store, calls)
    after = store.writer_stats()
    assert isinstance(results[2], ConflictError)
    assert [r for i, r in enumerate(results) if i != 2] == [[2], [3], [4], [5]]
    assert after.transactions - before.transactions <= 2
    stored = [r.message_id for r in store.pending(PEER, 10)]
    assert stored == [item(n).message_id for n in range(5)]
