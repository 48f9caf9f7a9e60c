"""Opening the SQLite store: file creation, schema versions, refusal of foreign files."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from exchange_node.services.catchup import CAUGHT_UP_KINDS, selection
from exchange_node.store import SqliteStore, StoreError
from exchange_node.store.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, migrate
from exchange_node.store.records import Lane
from exchange_node.store.sqlite import CATCHUP_QUEUED_SQL, PENDING_SQL, catchup_chunk_query


def _user_version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


async def test_new_database_is_migrated_to_the_current_version(tmp_path):
    path = tmp_path / "node.db"
    store = await SqliteStore.open(path)
    info = await store.info()
    await store.close()
    assert info.schema_version == SCHEMA_VERSION
    assert _user_version(path) == SCHEMA_VERSION


async def test_reopening_keeps_data_and_version(tmp_path):
    path = tmp_path / "node.db"
    store = await SqliteStore.open(path)
    await store.set_meta("node_id", b"JPN-ISA")
    await store.close()
    store = await SqliteStore.open(path)
    try:
        assert store.get_meta("node_id") == b"JPN-ISA"
        assert (await store.info()).schema_version == SCHEMA_VERSION
    finally:
        await store.close()


async def test_write_connection_uses_wal_and_full_sync(tmp_path):
    store = await SqliteStore.open(tmp_path / "node.db")
    info = await store.info()
    await store.close()
    assert (info.journal_mode, info.synchronous) == ("wal", "full")


async def test_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "node.db"
    store = await SqliteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError) as err:
        await SqliteStore.open(path)
    assert err.value.code == "store_schema_too_new"
    assert f"schema version {SCHEMA_VERSION + 1}" in err.value.message


async def test_sqlite_file_of_another_application_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 42")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as err:
        await SqliteStore.open(path)
    assert err.value.code == "store_not_ours"


async def test_new_database_file_is_readable_by_owner_only(tmp_path):
    path = tmp_path / "node.db"
    store = await SqliteStore.open(path)
    await store.set_meta("k", b"v")  # the -wal file exists while the store is open
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    await store.close()
    assert modes["node.db"] == 0o600
    assert modes["node.db-wal"] == 0o600


async def test_missing_parent_directory_is_refused(tmp_path):
    with pytest.raises(StoreError) as err:
        await SqliteStore.open(tmp_path / "absent" / "node.db")
    assert (err.value.code, err.value.field) == ("store_dir_missing", "store.path")


def test_migrations_apply_in_order_each_bumping_the_version(tmp_path):
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    steps = (("CREATE TABLE a (x INTEGER)",), ("ALTER TABLE a ADD COLUMN y INTEGER",))
    assert migrate(conn, "m.db", steps) == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert [r[1] for r in conn.execute("PRAGMA table_info(a)")] == ["x", "y"]


def test_failing_migration_leaves_the_previous_version_intact(tmp_path):
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    migrate(conn, "m.db", (("CREATE TABLE a (x INTEGER)",),))
    broken = (("CREATE TABLE a (x INTEGER)",), ("CREATE TABLE b (x)", "NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "m.db", broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "b" not in tables


async def test_closed_store_refuses_reads_and_writes(tmp_path):
    store = await SqliteStore.open(tmp_path / "node.db")
    await store.close()
    with pytest.raises(StoreError) as err:
        await store.set_meta("k", b"v")
    assert err.value.code == "store_closed"
    with pytest.raises(StoreError):
        store.get_meta("k")


async def test_integrity_check_of_a_sound_database_is_empty(tmp_path):
    store = await SqliteStore.open(tmp_path / "node.db")
    try:
        assert await store.integrity_check() == []
        assert await store.checkpoint() is True
    finally:
        await store.close()


async def test_peers_pinned_before_catch_up_existed_are_not_caught_up_again(tmp_path):
    path = tmp_path / "node.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, str(path), MIGRATIONS[:4])
        conn.execute(
            "INSERT INTO peers (node_id, card, fingerprint, added_at, updated_at) "
            "VALUES ('PHL-DFA', x'00', 'F', 1, 2)"
        )
    finally:
        conn.close()
    store = await SqliteStore.open(path)
    try:
        row = store.catchup("PHL-DFA")
        assert (row.state, row.kinds, row.cursor) == ("done", None, 0)
    finally:
        await store.close()


@pytest.mark.parametrize("lane", [None, Lane.LIVE, Lane.CATCHUP])
def test_the_workers_next_rows_read_only_queued_rows(tmp_path, lane):
    """The per-peer "next queued rows" read is served by the partial index of queued rows,
    not by an index of the peer's whole history (delivered rows are kept as evidence); a
    lane's read by the index of queued rows by lane, so the live lane's next batch does
    not step over the catch-up's rows, and needs no sort."""
    plan = _plan(tmp_path, PENDING_SQL[lane], ("PHL-DFA", 100))
    if lane is None:
        assert "USING INDEX outbox_queued (peer_id=?)" in plan
    else:
        assert "USING INDEX outbox_queued_lane (peer_id=? AND catchup=?)" in plan
    assert "TEMP B-TREE" not in plan


def test_the_catch_up_counts_its_queued_rows_by_the_lane_index(tmp_path):
    plan = _plan(tmp_path, CATCHUP_QUEUED_SQL, ("PHL-DFA",))
    assert "USING INDEX outbox_queued_lane (peer_id=? AND catchup=?)" in plan


def test_a_catch_up_chunk_is_read_from_the_cursor_in_rowid_order(tmp_path):
    """A chunk read walks the index's rowids from the cursor and stops after one chunk;
    through the (sender_node, issued_at_ms) index it would sort all of the node's
    notices for every chunk (2.5 s a chunk at a million notices)."""
    plan = _plan(
        tmp_path, *catchup_chunk_query("PHL-DFA", selection(CAUGHT_UP_KINDS), 1000, 5000, 200)
    )
    assert "SEARCH n USING INTEGER PRIMARY KEY (rowid>?)" in plan
    assert "TEMP B-TREE" not in plan


def _plan(tmp_path, sql: str, args: tuple) -> str:
    path = tmp_path / "plan.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, str(path))
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    finally:
        conn.close()
    return " ".join(str(step[-1]) for step in plan)
