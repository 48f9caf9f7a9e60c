"""Group commit: queued jobs share one transaction; a failing job fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from exchange_node.store import StoreError
from exchange_node.store.writer import GroupCommitWriter


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    conn.close()
    return str(path)


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _stored(path: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]
    finally:
        conn.close()


def _insert(x: int):
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (x) VALUES (?)", (x,))
        return x

    return job


async def _hold_writer(writer: GroupCommitWriter) -> tuple[asyncio.Future, threading.Event]:
    """Occupy the writer thread so that the next submissions wait in its queue."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    future = writer.submit(blocker)
    await asyncio.to_thread(started.wait, 10)
    return future, release


async def test_jobs_waiting_together_commit_in_one_transaction(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    futures = [writer.submit(_insert(i)) for i in range(50)]
    release.set()
    results = await asyncio.gather(held, *futures)
    stats = writer.stats()
    await writer.close()
    assert results[1:] == list(range(50))
    assert (stats.transactions, stats.jobs, stats.largest_group) == (2, 51, 50)
    assert _stored(db_path) == list(range(50))


async def test_jobs_of_one_turn_of_the_loop_share_a_transaction_on_an_idle_writer(db_path):
    # Submitted by the handlers of one turn of the event loop, each of which lets other
    # threads run after its submission (as writing its response does), while the
    # writer thread waits for work: handed over together at the end of the turn, one
    # commit for all, not a first one for the first job alone.
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    await writer.submit(_insert(100))
    before = writer.stats()
    futures = []
    for i in range(20):
        futures.append(writer.submit(_insert(i)))
        time.sleep(0.002)  # releases the GIL: the writer thread could run now
    assert writer.stats().queued == 20  # counted while they wait for the turn to end
    assert await asyncio.gather(*futures) == list(range(20))
    after = writer.stats()
    await writer.close()
    assert (after.transactions - before.transactions, after.jobs - before.jobs) == (1, 20)
    assert after.queued == 0
    assert _stored(db_path) == [*range(20), 100]


async def test_group_size_is_capped(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path), max_group=16)
    writer.start()
    held, release = await _hold_writer(writer)
    futures = [writer.submit(_insert(i)) for i in range(50)]
    release.set()
    await asyncio.gather(held, *futures)
    stats = writer.stats()
    await writer.close()
    assert stats.transactions == 1 + 4  # the blocker, then 16 + 16 + 16 + 2
    assert stats.largest_group == 16


async def test_failing_job_is_rolled_back_alone_and_reported_to_its_caller(db_path):
    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (x) VALUES (2)")
        raise ValueError("refused")

    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    ok1, bad, ok3 = (writer.submit(_insert(1)), writer.submit(insert_then_fail),
                     writer.submit(_insert(3)))  # fmt: skip
    release.set()
    await held
    assert await ok1 == 1
    with pytest.raises(ValueError, match="refused"):
        await bad
    assert await ok3 == 3
    stats = writer.stats()
    await writer.close()
    # The group is rolled back (counted, as the failed job's) and the others run again
    # together: the blocker's transaction, the rolled-back one, theirs.
    assert (stats.transactions, stats.failed_jobs) == (1 + 1 + 1, 1)
    assert _stored(db_path) == [1, 3]


async def test_driver_error_reaches_its_caller_as_store_error(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    await writer.submit(_insert(7))
    with pytest.raises(StoreError) as err:
        await writer.submit(_insert(7))  # primary key violation
    await writer.close()
    assert err.value.code == "store_unavailable"
    assert isinstance(err.value.__cause__, sqlite3.IntegrityError)


async def test_job_that_ends_the_transaction_fails_alone_and_the_others_still_commit(db_path):
    def rogue(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # ends the whole group's transaction

    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    ok1, bad, ok3 = writer.submit(_insert(1)), writer.submit(rogue), writer.submit(_insert(3))
    release.set()
    await held
    outcomes = await asyncio.gather(ok1, bad, ok3, return_exceptions=True)
    await writer.close()
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], Exception)
    assert _stored(db_path) == [1, 3]


async def test_close_finishes_queued_jobs_then_refuses_new_ones(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    futures = [writer.submit(_insert(i)) for i in range(5)]
    await writer.close()
    assert await asyncio.gather(*futures) == list(range(5))
    with pytest.raises(StoreError) as err:
        writer.submit(_insert(9))
    assert err.value.code == "store_closed"


async def test_connection_failure_is_raised_by_start(tmp_path):
    def broken() -> sqlite3.Connection:
        raise StoreError("store_unavailable", "cannot open")

    writer = GroupCommitWriter(broken)
    with pytest.raises(StoreError):
        writer.start()


async def test_group_is_capped_by_total_weight_of_its_jobs(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path), max_group=16)
    writer.start()
    held, release = await _hold_writer(writer)
    futures = [writer.submit(_insert(i), weight=w) for i, w in enumerate([10, 6, 10, 40, 1])]
    release.set()
    await asyncio.gather(held, *futures)
    stats = writer.stats()
    await writer.close()
    # groups: [blocker] [10 + 6] [10] [40, alone though over the cap] [1]
    assert (stats.transactions, stats.jobs) == (5, 6)
    assert _stored(db_path) == [0, 1, 2, 3, 4]


async def test_job_outside_transactions_runs_between_groups_in_queue_order(db_path):
    seen_in_transaction = []

    def probe(conn: sqlite3.Connection) -> int:
        seen_in_transaction.append(conn.in_transaction)
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]

    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    before = [writer.submit(_insert(i)) for i in range(3)]
    counted = writer.submit(probe, transactional=False)
    after = [writer.submit(_insert(i)) for i in range(3, 5)]
    release.set()
    await asyncio.gather(held, *before, *after)
    assert await counted == 3
    await writer.close()
    assert seen_in_transaction == [False]


def _logged(x: int, log: list[int]):
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (x) VALUES (?)", (x,))
        log.append(x)
        return x

    return job


async def test_a_background_job_waits_while_other_jobs_wait_and_commits_alone(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    log: list[int] = []
    late = writer.submit(_logged(1, log), background=True)
    early = [writer.submit(_logged(x, log)) for x in (2, 3)]
    release.set()
    await asyncio.gather(held, late, *early)
    stats = writer.stats()
    await writer.close()
    # The two submitted after it commit first, together; the background job after them,
    # in a transaction of its own.
    assert log == [2, 3, 1]
    assert (stats.transactions, stats.largest_group) == (3, 2)
    assert _stored(db_path) == [1, 2, 3]


async def test_background_jobs_keep_their_order_and_are_not_starved(db_path):
    from exchange_node.store.writer import FOREGROUND_RUN

    writer = GroupCommitWriter(lambda: _connect(db_path), max_group=1)  # a group per job
    writer.start()
    held, release = await _hold_writer(writer)
    log: list[int] = []
    background = [writer.submit(_logged(100 + i, log), background=True) for i in range(2)]
    others = [writer.submit(_logged(i, log)) for i in range(10)]
    release.set()
    await asyncio.gather(held, *background, *others)
    await writer.close()
    n = FOREGROUND_RUN
    assert log == [*range(n), 100, *range(n, 2 * n), 101, *range(2 * n, 10)]


async def test_close_runs_the_background_jobs_queued_before_it(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    writer.start()
    held, release = await _hold_writer(writer)
    futures = [writer.submit(_insert(i), background=True) for i in range(3)]
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.01)
    release.set()
    await closing
    assert await asyncio.gather(*futures) == [0, 1, 2]
    assert _stored(db_path) == [0, 1, 2]


async def test_between_groups_the_hook_is_told_whether_other_jobs_wait(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))
    seen: list[tuple[bool, bool, list[int]]] = []  # (waiting, in a transaction, rows)

    def hook(conn: sqlite3.Connection, waiting: bool) -> None:
        rows = [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]
        seen.append((waiting, conn.in_transaction, rows))

    writer.set_between_groups(hook)
    writer.start()
    held, release = await _hold_writer(writer)
    late = writer.submit(_insert(2), background=True)
    early = writer.submit(_insert(1))
    await asyncio.sleep(
        0
    )  # handed over to the writer (at the end of a turn), behind the held group
    release.set()
    await asyncio.gather(held, early, late)
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:  # the hook runs after the answer
        await asyncio.sleep(0.01)
    await writer.close()
    # After the held group, job 1 waits; after job 1 only a background job is left,
    # which counts as nobody waiting; after it, nothing (the stop of close() is no
    # job). Each time the hook sees what was committed, outside any transaction.
    assert seen == [(True, False, []), (False, False, [1]), (False, False, [1, 2])]


async def test_a_hook_that_raises_between_groups_fails_no_job(db_path):
    writer = GroupCommitWriter(lambda: _connect(db_path))

    def hook(conn: sqlite3.Connection, waiting: bool) -> None:
        conn.execute("BEGIN")
        raise RuntimeError("the hook's own failure")

    writer.set_between_groups(hook)
    writer.start()
    assert await writer.submit(_insert(1)) == 1
    assert await writer.submit(_insert(2)) == 2  # the hook's open transaction was undone
    await writer.close()
    assert _stored(db_path) == [1, 2]
