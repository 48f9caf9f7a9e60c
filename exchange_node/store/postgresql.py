"""The PostgreSQL store: the SQLite store's SQL, on a server several node processes share.

Nothing here repeats a query. :class:`PostgresStore` *is* a
:class:`~exchange_node.store.sqlite.SqliteStore` whose connections are
:class:`PgConnection` objects: the same statements (portable, see the rules in
:mod:`exchange_node.store.migrations`) go through :func:`translate` (``?`` becomes
``%s``) to psycopg. Only what has no common spelling is here: connecting, migrating
(the version is a row, not a PRAGMA), :meth:`PostgresStore.info`,
:meth:`~PostgresStore.checkpoint` and :meth:`~PostgresStore.integrity_check`.

Durability is the server's: every write connection runs with ``synchronous_commit =
on``, so a COMMIT has reached the server's disk (and its synchronous standbys, if it
has any) when the awaited write returns. Writes still go through one
:class:`~exchange_node.store.writer.GroupCommitWriter` per process; several processes
each have their own and the server orders them (row locks; the audit tree's size row is
locked for the rest of the transaction by the first append of each group, so the tree
has one order whichever process appends).

Errors of the driver are re-raised as subclasses of the ``sqlite3`` exceptions
(:class:`PgIntegrityError` is a ``sqlite3.IntegrityError``, ...), so code written once
(``except sqlite3.IntegrityError``) and the writer's readiness logic (a refusal of the
database is a ``sqlite3.OperationalError``) mean the same on both backends.

A lost connection (server restarted, network cut) fails the write or read in flight
with ``store_unavailable``; the next one connects again by itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq

from exchange_node.store.base import StoreError
from exchange_node.store.migrations import APPLICATION_ID, SCHEMA_VERSION, postgresql_migration
from exchange_node.store.records import StoreInfo
from exchange_node.store.sqlite import SqliteStore
from exchange_node.store.writer import DEFAULT_MAX_GROUP, GroupCommitWriter

CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT = "10s"
"""How long a statement waits for a row lock another process holds (SQLite's busy
timeout): past it the write fails with ``store_unavailable``."""

SCHEMA_TABLE = "exchange_node_schema"
"""One row: the application id and the schema version (SQLite: two PRAGMAs)."""

NOTIFY_CHANNEL = "exchange_node"
"""Where the database tells every node process that rows changed (LISTEN/NOTIFY):
``outbox:<peer id>`` (new queued rows), ``peers``, ``tokens``, ``meta``."""

SERVER_ONLY: tuple[str, ...] = (
    # Which process delivers a peer's queue (one batch in flight per lane across all
    # processes): claimed with a row lock, renewed, taken over once expired. Times are
    # the server's, so processes on machines with skewed clocks agree.
    """
    CREATE TABLE IF NOT EXISTS delivery_leases (
        peer_id    TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )
    """,
    f"""
    CREATE OR REPLACE FUNCTION exchange_node_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'outbox' THEN
            PERFORM pg_notify('{NOTIFY_CHANNEL}', 'outbox:' || NEW.peer_id);
        ELSE
            PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_NAME);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    "CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT OR UPDATE OF state ON outbox "
    "FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION exchange_node_notify()",
    "CREATE OR REPLACE TRIGGER peers_notify AFTER INSERT OR UPDATE OR DELETE ON peers "
    "FOR EACH STATEMENT EXECUTE FUNCTION exchange_node_notify()",
    "CREATE OR REPLACE TRIGGER tokens_notify AFTER INSERT OR UPDATE OR DELETE ON tokens "
    "FOR EACH STATEMENT EXECUTE FUNCTION exchange_node_notify()",
    "CREATE OR REPLACE TRIGGER meta_notify AFTER INSERT OR UPDATE OR DELETE ON meta "
    "FOR EACH STATEMENT EXECUTE FUNCTION exchange_node_notify()",
)
"""What only a shared server needs, outside the numbered migrations (SQLite serves one
process): the delivery leases and the change notifications. Idempotent; applied, under
the migration lock, every time a process opens the database."""


class PgIntegrityError(sqlite3.IntegrityError):
    """A constraint refused the statement (unique, check, foreign key, not null)."""


class PgOperationalError(sqlite3.OperationalError):
    """The server refused or could not be reached (connection lost, lock timeout,
    deadlock, disk full, read-only): a storage failure, retry later."""


class PgTransientError(PgOperationalError):
    """The server aborted the transaction to let another one through (a deadlock
    between processes, a serialization failure): the writer runs the group again."""

    transient = True


TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


class PgDataError(sqlite3.DataError):
    """A value the column cannot hold."""


class PgProgrammingError(sqlite3.ProgrammingError):
    """A statement the server does not understand (a bug, or a schema too old)."""


class PgDatabaseError(sqlite3.DatabaseError):
    """Any other error the server reported."""


def _mapped(exc: psycopg.Error) -> sqlite3.Error:
    if getattr(exc, "sqlstate", None) in TRANSIENT_SQLSTATES:
        cls: type[sqlite3.Error] = PgTransientError
    elif isinstance(exc, psycopg.IntegrityError):
        cls = PgIntegrityError
    elif isinstance(exc, psycopg.DataError):
        cls = PgDataError
    elif isinstance(exc, psycopg.ProgrammingError):
        cls = PgProgrammingError
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        cls = PgOperationalError
    else:
        cls = PgDatabaseError
    err = cls(str(exc).strip())
    err.__cause__ = exc
    return err


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """A statement with ``?`` placeholders in psycopg's spelling (``%s``; a literal
    ``%`` doubled). The store's SQL never has a ``?`` inside a string literal."""
    return sql.replace("%", "%%").replace("?", "%s")


_BEGIN = {
    # The writer's and the audit log's write transactions: READ COMMITTED with row
    # locks, as SQLite's write lock is taken up front.
    "BEGIN IMMEDIATE": "BEGIN",
    # A read transaction (proofs, verification): one snapshot for all its statements.
    "BEGIN": "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
}

_IN_TRANSACTION = (
    pq.TransactionStatus.INTRANS,
    pq.TransactionStatus.INERROR,
    pq.TransactionStatus.ACTIVE,
)


class PgConnection:
    """A psycopg connection that takes the store's SQL as a ``sqlite3.Connection``
    does: ``execute``/``executemany`` with ``?`` placeholders returning a cursor,
    ``in_transaction``, errors as ``sqlite3`` exceptions. Autocommit unless a ``BEGIN``
    was executed (as ``sqlite3`` with ``isolation_level=None``).

    Connects again by itself on the next statement outside a transaction after the
    connection was lost.
    """

    row_lock = " FOR UPDATE"
    """Appended to a read that must lock what it read until COMMIT (the audit tree's
    size); SQLite connections have no such attribute (its write lock covers it)."""

    def __init__(self, conninfo: str, options: dict[str, Any], *, read_only: bool = False):
        self._conninfo = conninfo
        self._options = options
        self._read_only = read_only
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self._connect()

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="exchange-node",
                **self._options,
            )
            conn.execute("SET synchronous_commit = on")
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            if self._read_only:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        self._conn = conn

    def _live(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None and conn.info.transaction_status in _IN_TRANSACTION:
                raise PgOperationalError("the connection to PostgreSQL was lost")
            self._conn = None
            self._connect()
            conn = self._conn
            assert conn is not None
        return conn

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        return conn.info.transaction_status in _IN_TRANSACTION

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> psycopg.Cursor:
        with self._lock:
            begin = _BEGIN.get(sql.strip().upper())
            if begin is not None:
                sql = begin
            conn = self._live()
            try:
                if args:
                    return conn.execute(translate(sql), args)
                return conn.execute(sql)
            except psycopg.Error as exc:
                raise _mapped(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        with self._lock:
            conn = self._live()
            cur = conn.cursor()
            try:
                cur.executemany(translate(sql), rows)
            except psycopg.Error as exc:
                raise _mapped(exc) from exc
            return cur

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def redact(url: str) -> str:
    """The URL without a password, for messages and ``store info``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _unavailable(where: str, exc: BaseException) -> StoreError:
    err = StoreError(
        "store_unavailable",
        f"cannot use the PostgreSQL database {where}: {exc}; check that the server is up, "
        "the URL, the password and sslmode",
        "store.url",
    )
    err.__cause__ = exc
    return err


def migrate(conn: PgConnection, where: str) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`, one migration per transaction
    (DDL is transactional here). An advisory lock makes processes opening a new
    database at the same time migrate it once. Same refusals as SQLite's ``migrate``."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (APPLICATION_ID,))
            version = _schema_version(conn, where)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    "store_schema_too_new",
                    f"{where} has schema version {version} but this exchange-node "
                    f"understands versions up to {SCHEMA_VERSION}; run a release at least "
                    "as new as the one that last opened it",
                    "store.url",
                )
            if version < SCHEMA_VERSION:
                for statement in postgresql_migration(version):
                    conn.execute(statement)
                conn.execute(f"UPDATE {SCHEMA_TABLE} SET version = ?", (version + 1,))
            else:
                for statement in SERVER_ONLY:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if version == SCHEMA_VERSION:
            return version


def _schema_version(conn: PgConnection, where: str) -> int:
    """The version row, created (version 0) in an empty database; refuses a database
    of another application."""
    exists = conn.execute(f"SELECT to_regclass('{SCHEMA_TABLE}')").fetchone()[0]
    if exists is None:
        others = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone()[0]
        if others:
            raise _not_ours(where, f"{others} table(s) and no {SCHEMA_TABLE}")
        conn.execute(
            f"CREATE TABLE {SCHEMA_TABLE} (application BIGINT NOT NULL, version BIGINT NOT NULL)"
        )
        conn.execute(f"INSERT INTO {SCHEMA_TABLE} VALUES (?, 0)", (APPLICATION_ID,))
    app, version = conn.execute(f"SELECT application, version FROM {SCHEMA_TABLE}").fetchone()
    if app != APPLICATION_ID:
        raise _not_ours(where, f"application id {app:#x}")
    return version


def _not_ours(where: str, what: str) -> StoreError:
    return StoreError(
        "store_not_ours",
        f"{where} is a database of another application ({what}); point store.url at a "
        "new, empty database or an exchange-node one",
        "store.url",
    )


def _connect_writer(conninfo: str, options: dict[str, Any], where: str) -> PgConnection:
    try:
        conn = PgConnection(conninfo, options)
    except sqlite3.Error as exc:
        raise _unavailable(where, exc) from exc
    try:
        migrate(conn, where)
    except sqlite3.Error as exc:
        conn.close()
        raise _unavailable(where, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect(url: str, password: str | None = None) -> PgConnection:
    """A connection to a migrated database, for tools (the audit commands)."""
    return _connect_writer(url, connection_options(password), redact(url))


def connection_options(password: str | None) -> dict[str, Any]:
    """psycopg's keyword arguments beside the URL (the password is never in it)."""
    return {} if password is None else {"password": password}


class PostgresStore(SqliteStore):
    """:class:`~exchange_node.store.base.Store` on PostgreSQL (see the module docstring).

    Open with ``await PostgresStore.open(url, password=...)``; ``url`` is a libpq URL
    (``postgresql://user@host:5432/db?sslmode=verify-full&sslrootcert=...``).
    """

    @classmethod
    async def open(  # type: ignore[override]
        cls,
        url: str,
        *,
        password: str | None = None,
        max_group: int = DEFAULT_MAX_GROUP,
    ) -> PostgresStore:
        """Connect, and migrate the database. Raises ``StoreError`` with code
        ``store_unavailable``, ``store_schema_too_new`` or ``store_not_ours``."""
        where = redact(url)
        options = connection_options(password)
        writer = GroupCommitWriter(
            partial(_connect_writer, url, options, where), max_group=max_group
        )
        await asyncio.to_thread(writer.start)
        try:
            reader = PgConnection(url, options, read_only=True)
        except sqlite3.Error as exc:
            await writer.close()
            raise _unavailable(where, exc) from exc
        store = cls(where, writer, reader)  # type: ignore[arg-type]
        store._conninfo, store._options = url, options
        return store

    def wal_bytes(self) -> int | None:
        """The server keeps its own write-ahead log (``checkpoint_timeout``)."""
        return None

    def audit_connection(self) -> PgConnection:
        """A connection of its own for the audit log's reads, proofs and checkpoints
        (``AuditLog(..., connection=...)``); its appends go through the writer."""
        try:
            return PgConnection(self._conninfo, self._options)
        except sqlite3.Error as exc:
            raise _unavailable(self._path, exc) from exc

    @staticmethod
    def prepare(url: str, *, password: str | None = None) -> None:  # type: ignore[override]
        """Migrate the database without opening a store (offline commands)."""
        _connect_writer(url, connection_options(password), redact(url)).close()

    # --- several processes ------------------------------------------------------------

    async def claim_delivery(self, peer_id: str, owner: str, ttl_s: float) -> bool:
        """Hold (claim or renew) the lease on ``peer_id``'s queue for ``ttl_s`` more
        seconds; False while another live process holds it. ``SKIP LOCKED``: a lease
        another process is claiming or renewing right now is simply not ours."""

        def job(conn: PgConnection) -> bool:
            conn.execute(
                "INSERT INTO delivery_leases (peer_id, owner, expires_at) "
                "VALUES (?, ?, '-infinity') ON CONFLICT (peer_id) DO NOTHING",
                (peer_id, owner),
            )
            row = conn.execute(
                "SELECT owner, expires_at > clock_timestamp() FROM delivery_leases "
                "WHERE peer_id = ? FOR UPDATE SKIP LOCKED",
                (peer_id,),
            ).fetchone()
            if row is None or (row[0] != owner and row[1]):
                return False
            conn.execute(
                "UPDATE delivery_leases SET owner = ?, "
                "expires_at = clock_timestamp() + make_interval(secs => ?) WHERE peer_id = ?",
                (owner, float(ttl_s), peer_id),
            )
            return True

        return await self._write(job, label="lease.claim")  # type: ignore[arg-type]

    async def release_delivery(self, peer_ids: Sequence[str], owner: str) -> None:
        """Give up leases (a clean stop): another process takes over at once."""

        def job(conn: PgConnection) -> None:
            for peer_id in peer_ids:
                conn.execute(
                    "DELETE FROM delivery_leases WHERE peer_id = ? AND owner = ?",
                    (peer_id, owner),
                )

        if peer_ids:
            await self._write(job, label="lease.release")  # type: ignore[arg-type]

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_change(payload)`` on the caller's event loop for every change
        notification (see :data:`NOTIFY_CHANNEL`), from a thread with a connection of
        its own that reconnects after a loss and then reports ``*`` (anything may
        have changed meanwhile). Returns the function that stops it."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        conninfo, options = self._conninfo, self._options

        def run() -> None:
            lost = False
            while not stop.is_set():
                try:
                    with psycopg.connect(
                        conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **options
                    ) as conn:
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        if lost:
                            loop.call_soon_threadsafe(on_change, "*")
                        while not stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                loop.call_soon_threadsafe(on_change, note.payload)
                except (psycopg.Error, RuntimeError):
                    lost = True
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="store-listen", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=5)

        return close

    async def info(self) -> StoreInfo:
        def job(conn: PgConnection) -> StoreInfo:
            def one(sql: str) -> Any:
                return conn.execute(sql).fetchone()[0]

            page = int(one("SHOW block_size"))
            return StoreInfo(
                path=self._path,
                schema_version=one(f"SELECT version FROM {SCHEMA_TABLE}"),
                sqlite_version=f"PostgreSQL {one('SHOW server_version')}",
                journal_mode="wal",
                synchronous=one("SHOW synchronous_commit"),
                page_count=one("SELECT pg_database_size(current_database())") // page,
                page_size=page,
                wal_bytes=0,
            )

        return await self._write(job, transactional=False)  # type: ignore[arg-type]

    async def checkpoint(self) -> bool:
        """Nothing to do: the server checkpoints its write-ahead log on its own
        schedule (``checkpoint_timeout``); True."""
        if self._closed:
            raise StoreError("store_closed", "the store is closed")
        return True

    async def integrity_check(self) -> list[str]:
        """The server enforces the constraints and checks its pages; what it cannot
        know is the store's own bookkeeping: the per-peer counters the triggers keep
        must equal the outbox rows."""

        def job(conn: PgConnection) -> list[str]:
            rows = conn.execute(
                "SELECT ids.peer_id, coalesce(c.queued, 0), coalesce(c.delivered, 0), "
                "coalesce(c.dead, 0), coalesce(o.queued, 0), coalesce(o.delivered, 0), "
                "coalesce(o.dead, 0) FROM (SELECT peer_id FROM outbox_counts "
                "UNION SELECT peer_id FROM outbox) ids "
                "LEFT JOIN outbox_counts c ON c.peer_id = ids.peer_id "
                "LEFT JOIN (SELECT peer_id, count(*) FILTER (WHERE state = 'queued') queued, "
                "count(*) FILTER (WHERE state = 'delivered') delivered, "
                "count(*) FILTER (WHERE state = 'dead') dead FROM outbox GROUP BY peer_id) o "
                "ON o.peer_id = ids.peer_id ORDER BY 1"
            ).fetchall()
            return [
                f"outbox_counts of {r[0]} say {r[1:4]} (queued, delivered, dead), "
                f"the outbox holds {r[4:7]}"
                for r in rows
                if tuple(r[1:4]) != tuple(r[4:7])
            ]

        return await self._write(job, transactional=False)  # type: ignore[arg-type]


# --- moving a node from SQLite -----------------------------------------------------------------

COPY_CHUNK = 2_000

_DERIVED = frozenset({"outbox_counts"})
"""Kept by the outbox triggers: rebuilt as the outbox rows are copied, then compared."""


def copy_from_sqlite(sqlite_path: str, url: str, password: str | None = None) -> dict[str, int]:
    """Copy every row of the node database at ``sqlite_path`` (schema at this release's
    version) into the empty PostgreSQL database at ``url``, in ONE transaction, ids and
    the catch-up cursors' rowids kept; then check that each table holds as many rows as
    the file. Returns the rows copied per table. Refuses (``ConflictError
    store_target_not_empty``) a database that already holds a node's data.

    The audit log is checked by the caller (``AuditLog.verify`` with the node's keys and
    the same root on both sides): the tree is copied leaf for leaf and node for node.
    """
    from exchange_node.errors import ConflictError

    where = redact(url)
    # One read transaction: every table is copied as of the same moment.
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, isolation_level=None)
    src.execute("BEGIN")
    dst = _connect_writer(url, connection_options(password), where)
    try:
        if src.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            raise StoreError(
                "store_schema_mismatch",
                f"{sqlite_path} is not at schema version {SCHEMA_VERSION}: open it once "
                "with this release (any command does), then copy it",
                "store.path",
            )
        tables = [
            name
            for (name,) in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        copied: dict[str, int] = {}
        dst.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                if dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                    raise ConflictError(
                        "store_target_not_empty",
                        f"{where} already holds data ({table}); copy into a new, empty database",
                        "url",
                    )
            # Parents first: case events refer to cases, outbox rows to receipts.
            order = sorted(tables, key=lambda t: (t not in ("cases", "receipts"), t))
            for table in order:
                if table not in _DERIVED:
                    copied[table] = _copy_table(src, dst, table)
            _advance_identities(dst)
            for table in tables:
                want = src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                have = dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if want != have:
                    raise StoreError(
                        "store_copy_mismatch",
                        f"{table}: {want} row(s) in {sqlite_path}, {have} copied; nothing was kept",
                    )
            dst.execute("COMMIT")
        except BaseException:
            if dst.in_transaction:
                dst.execute("ROLLBACK")
            raise
        return copied
    finally:
        src.close()
        dst.close()


def _copy_table(src: sqlite3.Connection, dst: PgConnection, table: str) -> int:
    columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    if table == "doc_notices":
        columns = ["rowid", *columns]  # the catch-up cursor: explicit on PostgreSQL
    names = ", ".join(columns)
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    cur = src.execute(f"SELECT {names} FROM {table} ORDER BY 1")
    total = 0
    while rows := cur.fetchmany(COPY_CHUNK):
        if table == "audit_meta":  # untyped there, TEXT here
            rows = [(key, _meta_text(value)) for key, value in rows]
        dst.executemany(insert, rows)
        total += len(rows)
    return total


def _meta_text(value: Any) -> str:
    """An ``audit_meta`` value as the TEXT column keeps it (bytes in PostgreSQL's hex
    form, as an assignment of a bytea would store them)."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def _advance_identities(dst: PgConnection) -> None:
    """Ids the database assigns continue after the highest copied one."""
    for table, column in dst.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall():
        dst.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) "
            f"FROM {table} HAVING max({column}) IS NOT NULL"
        )
