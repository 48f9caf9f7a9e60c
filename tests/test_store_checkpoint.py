"""WAL checkpoints run on a thread of their own, not inside the writer's COMMIT, and
the writer starts the WAL over between groups once it has grown long.

A checkpoint at COMMIT (SQLite's default, every 1,000 WAL pages) writes pages all over a
large database file and syncs it: the commit, and every notice waiting for it, waited
hundreds of milliseconds during a large catch-up. A checkpointer thread alone cannot keep
the WAL short under steady writes, since the WAL starts over only at a write
transaction that finds it copied whole.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time

from exchange_node.store.records import NoticeRow
from exchange_node.store.sqlite import WRITER_AUTOCHECKPOINT_PAGES, SqliteStore, WalCheckpointer

NOW = 1_800_000_000_000


def _rows(start: int, n: int) -> list[NoticeRow]:
    return [
        NoticeRow(
            notice_id=secrets.token_hex(16),
            sender_node="PHL-DFA",
            sender_country="PHL",
            kind="STOLEN",
            issuing_state="PHL",
            document_type="P",
            number=f"P{i:08d}",
            issued_at_ms=NOW + i,
            supersedes=None,
            detection_place=None,
            detected_at_ms=None,
            detection_auth=None,
            effective_at_ms=NOW + i,
            remarks="",
            reason="",
            message_id=None,
        )  # fmt: skip
        for i in range(start, start + n)
    ]


async def _wait(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _small_thresholds(tmp_path, interval_s: float) -> tuple[str, SqliteStore]:
    """A store whose writer finishes checkpoints past 300 WAL pages (1,200 while jobs
    wait), not 4,096 and 16,384: small enough for a test to write past."""
    path = str(tmp_path / "node.db")
    store = await SqliteStore.open(path, checkpoint_interval_s=interval_s)
    store._checkpointer.restart_pages, store._checkpointer.force_pages = 300, 1_200
    return path, store


def _wal_pages(path: str, store: SqliteStore) -> int:
    return os.path.getsize(path + "-wal") // store._read("PRAGMA page_size")[0][0]


async def test_the_writer_leaves_the_wal_to_the_checkpointer(tmp_path):
    path = str(tmp_path / "node.db")
    store = await SqliteStore.open(path, checkpoint_interval_s=3600)  # no pass in this test
    try:
        setting = await store._writer.submit(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0], transactional=False
        )
        assert setting == WRITER_AUTOCHECKPOINT_PAGES
        for k in range(60):  # many small commits, as a node makes them
            await store.index_notices(_rows(100 * k, 100), NOW)
        # Every commit's pages are still in the WAL: none of the commits checkpointed
        # (at SQLite's default the WAL would have started over at about 1,000 pages).
        assert _wal_pages(path, store) > 1_500
        assert store._checkpointer.finished == 0  # the thread never said it was long
    finally:
        await store.close()


async def test_the_checkpointer_copies_every_committed_page_into_the_database(tmp_path):
    path = str(tmp_path / "node.db")
    store = await SqliteStore.open(path, checkpoint_interval_s=3600)
    checkpointer = WalCheckpointer(path, interval_s=0.02)
    try:
        for k in range(20):
            await store.index_notices(_rows(100 * k, 100), NOW)
        checkpointer.start()
        await _wait(lambda: checkpointer.passes >= 1, "a checkpoint pass")
        busy, frames, done = checkpointer.last
        assert (busy, done) == (0, frames) and frames > 100  # all of it, nothing left
        # The writer carries on meanwhile and what it commits is copied at the next pass.
        await store.index_notices(_rows(5_000, 100), NOW)
        passes = checkpointer.passes
        await _wait(lambda: checkpointer.passes > passes + 1, "two more passes")
        assert checkpointer.last[0] == 0 and checkpointer.last[1] == checkpointer.last[2]
        assert checkpointer.error is None
        # The database file alone, without its WAL, holds everything.
        alone = tmp_path / "alone.db"
        alone.write_bytes((tmp_path / "node.db").read_bytes())
        conn = sqlite3.connect(alone)
        try:
            assert conn.execute("SELECT COUNT(*) FROM doc_notices").fetchone()[0] == 2_100
        finally:
            conn.close()
    finally:
        checkpointer.stop()
        await store.close()


async def test_under_writes_that_never_pause_the_writer_keeps_the_wal_short(tmp_path):
    path, store = await _small_thresholds(tmp_path, 0.01)
    checkpointer = store._checkpointer
    try:
        # All queued at once: the writer commits group after group with no pause, so
        # the thread never finds the WAL copied whole before the writer appends again.
        n = 1500
        await asyncio.gather(*(store.index_notices(_rows(20 * k, 20), NOW) for k in range(n)))
        # 30,000 notices, about 11,500 WAL pages without the writer's part (measured):
        # with it, the writer finished checkpoints while jobs waited, each time the
        # WAL was past the force threshold, and the WAL started over.
        assert checkpointer.finished >= 2
        assert _wal_pages(path, store) < 4_000
        assert store._read("SELECT COUNT(*) FROM doc_notices")[0][0] == 20 * n
    finally:
        await store.close()


async def test_a_backlog_a_long_reader_held_back_is_left_to_the_thread(tmp_path):
    path, store = await _small_thresholds(tmp_path, 0.02)
    checkpointer = store._checkpointer
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        await store.index_notices(_rows(0, 100), NOW)
        reader.execute("BEGIN")  # an export, say: a snapshot held open
        reader.execute("SELECT COUNT(*) FROM doc_notices").fetchone()
        for k in range(1, 80):
            await store.index_notices(_rows(100 * k, 100), NOW)
        passes = checkpointer.passes
        await _wait(lambda: checkpointer.passes > passes + 2, "passes behind the reader")
        busy, frames, done = checkpointer.last
        assert frames > 1_200 and done < frames  # held back by the reader
        await store.index_notices(_rows(10_000, 100), NOW)
        # The writer did not take the backlog on: nothing it could copy whole.
        assert checkpointer.finished == 0
        reader.execute("COMMIT")
        await _wait(lambda: checkpointer.last[1] == checkpointer.last[2], "the thread's copy")
        for k in range(200):  # then, at one of its next groups, the writer finishes it
            await store.index_notices(_rows(20_000 + 10 * k, 10), NOW)
            if checkpointer.finished:
                break
            await asyncio.sleep(0.02)
        assert checkpointer.finished > 0
    finally:
        reader.close()
        await store.close()


async def test_a_store_checkpoints_by_itself_and_stops_with_it(tmp_path):
    store = await SqliteStore.open(tmp_path / "node.db", checkpoint_interval_s=0.02)
    checkpointer = store._checkpointer
    await store.index_notices(_rows(0, 500), NOW)
    await _wait(lambda: checkpointer.last is not None and checkpointer.last[2] > 0, "a pass")
    await store.close()
    assert not checkpointer._thread.is_alive()
