"""The embedded store: one SQLite file in WAL mode, committed in groups.

Writes go through a :class:`~exchange_node.store.writer.GroupCommitWriter` (one thread,
one write connection, ``synchronous=FULL``: a COMMIT has reached the disk when the
awaited write returns). Reads use a second connection on the event-loop thread; WAL lets
them run while the writer commits. A third, on a thread of its own
(:class:`WalCheckpointer`), copies committed pages from the WAL into the database file,
so that the writer's COMMIT only appends to the WAL and syncs it; the writer finishes a
checkpoint itself, between groups, when the WAL has grown long (only the writer can start
it over). See :mod:`exchange_node.store.base` for the contract.

Reads must be called from the thread that opened the store (the event loop).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields, replace
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import structlog

from exchange_node.errors import ConflictError, NotFoundError, ValidationError
from exchange_node.store.base import StoreError, connection_locks
from exchange_node.store.migrations import migrate
from exchange_node.store.protection import PURGED_REASON, ProtectionReads, ProtectionWrites
from exchange_node.store.records import (
    ENVELOPE_HASH_LEN,
    MESSAGE_ID_LEN,
    TOKEN_ROLES,
    CaseEventRow,
    CaseRow,
    CatchUpProgress,
    CatchUpRow,
    CatchUpSelection,
    ConsoleSession,
    CosignatureRow,
    DeadLetter,
    DeliveryRow,
    IdempotencyRecord,
    InboxItem,
    InboxOutcome,
    InboxRow,
    Lane,
    NoticeRow,
    OutboxItem,
    OutboxRow,
    OutboxState,
    Outcome,
    PeerRecord,
    PurgeResult,
    QueueStats,
    ReceiptRecord,
    StoredReceipt,
    StoreInfo,
    TokenRecord,
    WitnessLogRow,
    WriterStats,
)
from exchange_node.store.writer import DEFAULT_MAX_GROUP, GroupCommitWriter

AuditAppender = Callable[[sqlite3.Connection, Sequence[Any]], range]

Leaves = Sequence[Any] | Callable[[Any], Sequence[Any]]
"""The audit events a write method commits with its change (``audit=``): a list, or a
function of the method's result that returns it (when the leaf names what the write
found, e.g. the token a revocation by id hit)."""
"""Appends audit events as leaves on the connection given, inside its open transaction
(``AuditLog.append_on``); attached by the composition root with :meth:`SqliteStore.attach_audit`."""

T = TypeVar("T")

_log = structlog.get_logger("exchange_node.store")

MIN_SQLITE = (3, 37, 0)
"""STRICT tables need SQLite 3.37."""

BUSY_TIMEOUT_MS = 10_000

WAL_CHECKPOINT_INTERVAL_S = 1.0
"""How often the checkpointer copies the WAL into the database file."""

WAL_RESTART_PAGES = 4_096
"""WAL pages (16 MiB at 4 KiB) past which the writer finishes a checkpoint between two
groups, once no live job is waiting: the WAL then starts over at the next transaction.
The checkpointer alone cannot bring that about, since the writer keeps appending while
it copies."""

WAL_FORCE_PAGES = 16_384
"""WAL pages past which the writer finishes a checkpoint between two groups even while
jobs wait: under writes that never pause, the WAL stays bounded."""

WRITER_AUTOCHECKPOINT_PAGES = 32_768
"""WAL pages (128 MiB) past which a COMMIT checkpoints by itself (SQLite's own rule, at
1,000 by default): a fallback only, should the checkpointer stop."""
MAX_READ_LIMIT = 10_000
PURGE_CHUNK = 5_000
"""Rows deleted per transaction by ``purge_before``, so retention never holds the write
lock for long."""

TOKEN_SECRET_MIN_CHARS = 22
"""A token secret is hashed with plain SHA-256, which is only sound for high-entropy
secrets: at least 128 bits (``secrets.token_urlsafe(16)`` is 22 characters)."""

_OUTCOMES = frozenset(o.value for o in Outcome)

REASON_PEER_REMOVED = "peer_removed"
REASON_UNSPECIFIED = "unspecified"


def _nothing() -> None:
    pass


def hash_token_secret(secret: str) -> bytes:
    """The SHA-256 under which a token secret is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


class _GroupLeaves:
    """The audit leaves of one group commit, appended in ONE ``append_on`` just before
    its COMMIT (a handful of statements per group instead of per operation). Each
    ``note`` returns the seqs its leaves will have: counted on from the tree size read
    once per group, in note order, which is append order. Writer thread only."""

    __slots__ = ("_appender", "_pending", "_base")

    def __init__(self) -> None:
        self._appender: AuditAppender | None = None
        self._pending: list[Any] = []
        self._base: int | None = None

    def begin(self) -> None:
        self._pending = []
        self._base = None

    def note(self, conn: sqlite3.Connection, events: Sequence[Any]) -> range:
        if not events:
            return range(0)
        if self._appender is None:
            raise StoreError("audit_not_attached", "no audit log is attached to this store")
        if self._base is None:
            self._base = self._appender(conn, ()).start  # the tree size this group sees
        start = self._base + len(self._pending)
        self._pending.extend(events)
        return range(start, start + len(events))

    def mark(self) -> int:
        return len(self._pending)

    def undo_to(self, mark: int) -> None:
        """Forget the leaves noted since ``mark`` (their part was rolled back)."""
        del self._pending[mark:]

    def flush(self, conn: sqlite3.Connection) -> None:
        if self._pending:
            assert self._appender is not None
            self._appender(conn, self._pending)
            self._pending = []


class SqliteTransaction(ProtectionWrites):
    """The writes of one unit of work, on the writer's connection inside one transaction.

    Handed to the function given to :meth:`SqliteStore.transaction`, and valid only while
    it runs (on the writer thread). Everything it writes, audit leaves included, commits
    together or not at all; reads through it see the transaction's own writes. The
    function may be run again after a rollback, so it must not change anything outside
    the transaction: it returns what the caller needs, and the caller acts on it once
    the awaited call returns.
    """

    __slots__ = ("_conn", "_leaves")

    def __init__(self, conn: sqlite3.Connection, leaves: _GroupLeaves) -> None:
        self._conn = conn
        self._leaves = leaves

    def audit(self, events: Sequence[Any]) -> range:
        """Append ``events`` as audit leaves in this transaction; their seqs. (They are
        written just before the COMMIT, with the rest of the group's leaves.)"""
        return self._leaves.note(self._conn, events)

    def enqueue(self, items: Sequence[OutboxItem]) -> list[int]:
        for i, item in enumerate(items):
            _check_outbox_item(item, f"items[{i}]")
        return _enqueue(self._conn, tuple(items)) if items else []

    def follow_catchup(self, outbox_ids: Sequence[int]) -> None:
        """Move these queued rows to their peer's catch-up lane if that lane holds queued
        rows, so they go out after them (a correction must not overtake the notice it
        supersedes; docs/protocol.md 11.1)."""
        self._conn.executemany(
            "UPDATE outbox SET catchup = 1 WHERE id = ? AND state = 'queued' AND EXISTS "
            "(SELECT 1 FROM outbox q WHERE q.peer_id = outbox.peer_id "
            "AND q.state = 'queued' AND q.catchup = 1)",
            [(i,) for i in outbox_ids],
        )

    def accept(self, items: Sequence[InboxItem]) -> list[InboxOutcome]:
        for i, item in enumerate(items):
            _check_inbox_item(item, f"items[{i}]")
        return _accept(self._conn, tuple(items)) if items else []

    def record_receipt(
        self,
        peer_id: str,
        receipt: ReceiptRecord,
        outcomes: Sequence[tuple[int, Outcome, str | None]],
    ) -> int:
        return _record_receipt(self._conn, peer_id, receipt, _checked_outcomes(outcomes))

    def store_sent_receipt(self, peer_id: str, batch_id: bytes, receipt: bytes, at: int) -> bytes:
        _check_bytes(batch_id, "batch_id")
        _check_bytes(receipt, "receipt")
        return _store_sent_receipt(self._conn, peer_id, batch_id, receipt, at)

    def touch_contact(self, peer_id: str, at: int) -> None:
        """Record a successful contact with the peer."""
        _update_peer(self._conn, peer_id, _CONTACT_OK, (at,))

    def index_notices(self, rows: Sequence[NoticeRow], at: int) -> None:
        """Index notices; a notice id already indexed keeps its first row."""
        if rows:
            self._conn.executemany(_NOTICE_INSERT, [(*_notice_values(r), at) for r in rows])

    def notice(self, notice_id: str) -> NoticeRow | None:
        return _notice(self._conn, notice_id)

    def notice_superseded_by(self, notice_id: str) -> str | None:
        return _superseded_by(self._conn, notice_id)

    def case(self, case_ref: str) -> CaseRow | None:
        rows = _rows(self._conn, _CASE_SELECT, (case_ref,))
        return CaseRow(*rows[0]) if rows else None

    def case_events(self, case_ref: str) -> list[CaseEventRow]:
        return [CaseEventRow(*r) for r in _rows(self._conn, _CASE_EVENTS_SELECT, (case_ref,))]

    def insert_case(self, case: CaseRow, first_event: CaseEventRow) -> None:
        """A new case with its opening event. ``ConflictError(case_exists)`` if known."""
        try:
            self._conn.execute(
                "INSERT INTO cases (case_ref, opened_by, participants, personal, opened_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (case.case_ref, case.opened_by, case.participants, case.personal, case.opened_at),
            )
        except sqlite3.IntegrityError:
            raise ConflictError(
                "case_exists", f"case {case.case_ref} is already known", "case_ref"
            ) from None
        self.insert_case_event(first_event)

    def insert_case_event(self, event: CaseEventRow) -> None:
        """The next step of a case. ``ConflictError(case_changed)`` if its sequence is
        taken (another step was recorded first)."""
        try:
            self._conn.execute(_CASE_EVENT_INSERT, _case_event_values(event))
        except sqlite3.IntegrityError:
            raise ConflictError(
                "case_changed",
                f"another step was recorded on case {event.case_ref} at the same moment; "
                "read the case again and retry",
                "case_ref",
            ) from None

    # --- catch-up (delivery/catchup.py) ----------------------------------------------------

    def catchup(self, peer_id: str) -> CatchUpRow | None:
        return _catchup(self._conn, peer_id)

    def begin_catchup(
        self,
        peer_id: str,
        me: str,
        kinds: Sequence[str],
        todo: CatchUpSelection,
        at: int,
    ) -> CatchUpRow:
        """Start (or start again) ``peer_id``'s catch-up from the first notice: every
        notice of ``me`` in effect that ``todo`` selects, up to the last one indexed now
        (later corrections included). ``kinds`` become the kinds caught up on. Done at
        once when there is nothing to send."""
        high_water = _rows(self._conn, "SELECT coalesce(max(rowid), 0) FROM doc_notices", ())[0][0]
        where, args = _catchup_where(me, todo, 0, high_water)
        total = _rows(self._conn, f"SELECT count(*) FROM doc_notices n WHERE {where}", args)[0][0]
        self._conn.execute(
            "INSERT INTO catchup (peer_id, state, kinds, todo, cursor, high_water, total, "
            "queued, started_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, 0, ?, ?) "
            "ON CONFLICT (peer_id) DO UPDATE SET state = excluded.state, kinds = excluded.kinds, "
            "todo = excluded.todo, cursor = 0, high_water = excluded.high_water, "
            "total = excluded.total, queued = 0, started_at = excluded.started_at, "
            "updated_at = excluded.updated_at, paused_ms = 0, paused_at = NULL",
            (
                peer_id,
                "running" if total else "done",
                json.dumps(sorted(kinds)),
                json.dumps(sorted(todo.names)),
                high_water,
                total,
                at,
                at,
            ),
        )
        row = _catchup(self._conn, peer_id)
        assert row is not None
        return row

    def set_catchup_kinds(self, peer_id: str, kinds: Sequence[str], at: int) -> None:
        """The kinds ``peer_id`` counts as caught up on (a policy lost some)."""
        self._conn.execute(
            "UPDATE catchup SET kinds = ?, updated_at = ? WHERE peer_id = ?",
            (json.dumps(sorted(kinds)), at, peer_id),
        )

    def set_catchup_state(self, peer_id: str, state: str, at: int) -> CatchUpRow:
        """Pause or resume a catch-up. ``NotFoundError(catchup_not_found)`` if there is
        none; ``ConflictError(catchup_done)`` if it has finished."""
        row = _catchup(self._conn, peer_id)
        if row is None:
            raise NotFoundError("catchup_not_found", f"no catch-up is known for {peer_id}", "peer")
        if row.state == "done":
            raise ConflictError(
                "catchup_done", f"the catch-up of {peer_id} has finished; restart it instead"
            )
        # The time paused is kept, so the time left counts the time running only.
        paused_ms, paused_at = row.paused_ms, row.paused_at
        if state == "paused" and row.state != "paused":
            paused_at = at
        elif state != "paused" and row.state == "paused":
            paused_ms += max(0, at - (row.paused_at if row.paused_at is not None else at))
            paused_at = None
        self._conn.execute(
            "UPDATE catchup SET state = ?, updated_at = ?, paused_ms = ?, paused_at = ? "
            "WHERE peer_id = ?",
            (state, at, paused_ms, paused_at, peer_id),
        )
        return replace(row, state=state, updated_at=at, paused_ms=paused_ms, paused_at=paused_at)

    def advance_catchup(
        self,
        peer_id: str,
        *,
        started_at: int,
        from_cursor: int,
        to_cursor: int,
        outbox_ids: Sequence[int],
        done: bool,
        at: int,
    ) -> None:
        """Record a chunk queued: mark its outbox rows, move the cursor. Refused with
        ``ConflictError(catchup_changed)`` unless the run that began at ``started_at``
        is still running at ``from_cursor`` (an operator paused or restarted it
        meanwhile)."""
        row = _catchup(self._conn, peer_id)
        if (
            row is None
            or row.state != "running"
            or row.cursor != from_cursor
            or row.started_at != started_at
        ):
            raise ConflictError(
                "catchup_changed", f"the catch-up of {peer_id} changed while a chunk was sealed"
            )
        self._conn.executemany(
            "UPDATE outbox SET catchup = 1 WHERE id = ?", [(i,) for i in outbox_ids]
        )
        self._conn.execute(
            "UPDATE catchup SET cursor = ?, queued = queued + ?, state = ?, updated_at = ? "
            "WHERE peer_id = ?",
            (to_cursor, len(outbox_ids), "done" if done else "running", at, peer_id),
        )

    def mark_catchup_requested(self, peer_id: str, at: int) -> None:
        """The peer asked for this catch-up (``requested_at``)."""
        self._conn.execute("UPDATE catchup SET requested_at = ? WHERE peer_id = ?", (at, peer_id))

    def delete_catchup(self, peer_id: str) -> None:
        self._conn.execute("DELETE FROM catchup WHERE peer_id = ?", (peer_id,))

    def get_meta(self, key: str, *, lock: bool = False) -> bytes | None:
        """A meta value as this transaction sees it; ``lock``: no other process may
        change it until this one commits (a read-modify-write; SQLite's write lock
        already covers it)."""
        sql = "SELECT value FROM meta WHERE key = ?" + (
            connection_locks(self._conn) if lock else ""
        )
        rows = _rows(self._conn, sql, (key,))
        return bytes(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: bytes) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the unit that an exception undoes alone: everything written inside
        the block is rolled back if it raises (the exception goes on), kept otherwise."""
        mark = self._leaves.mark()
        self._conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self._leaves.undo_to(mark)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK TO part")
                self._conn.execute("RELEASE part")
            raise
        self._conn.execute("RELEASE part")

    def remember_idempotency(self, record: IdempotencyRecord) -> None:
        """Keep the answer of a keyed request with the change it answers. Raises
        ``ConflictError(idempotency_key_exists)`` if the token already used the key
        (the whole transaction is then rolled back: nothing is submitted twice)."""
        _check_idempotency(record)
        try:
            self._conn.execute(_IDEMPOTENCY_INSERT, _idempotency_values(record))
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                "idempotency_key_exists",
                "this token already made a request with this Idempotency-Key",
                "Idempotency-Key",
            ) from exc

    def idempotency_record(self, token_id: int, key: str) -> IdempotencyRecord | None:
        rows = _rows(self._conn, _IDEMPOTENCY_SELECT, (token_id, key))
        return IdempotencyRecord(*rows[0]) if rows else None

    # --- witnessing (audit/cosigner.py, audit/witnesses.py) --------------------------------

    def witness_log(self, origin: str) -> WitnessLogRow | None:
        """As a witness: the latest checkpoint cosigned for ``origin``, as this
        transaction sees it (the check of a new one and its storing are one step)."""
        rows = _rows(self._conn, _WITNESS_LOG_SELECT, (origin,))
        return WitnessLogRow(*rows[0]) if rows else None

    def set_witness_log(self, row: WitnessLogRow) -> None:
        self._conn.execute(_WITNESS_LOG_UPSERT, (row.origin, row.log_peer, row.tree_size,
                           row.root, row.note, row.updated_at))  # fmt: skip

    def add_cosignature(self, row: CosignatureRow) -> bool:
        """Keep a witness's cosignature on one of our checkpoints; False (nothing
        written) if that witness key's cosignature of that size is already kept."""
        cur = self._conn.execute(
            "INSERT INTO audit_cosignatures (tree_size, witness, key_id, timestamp, line,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tree_size, witness, key_id) DO NOTHING",
            (row.tree_size, row.witness, row.key_id, row.timestamp, row.line, row.received_at),
        )
        return cur.rowcount == 1


class SqliteStore(ProtectionReads):
    """SQLite implementation of :class:`exchange_node.store.base.Store`.

    Open with ``store = await SqliteStore.open(path)`` (or ``async with`` on the result),
    close with ``await store.close()``.
    """

    def __init__(self, path: str, writer: GroupCommitWriter, reader: sqlite3.Connection) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._writer = writer
        self._db = reader
        self._closed = False
        self._leaves = _GroupLeaves()
        writer.set_group_hooks(begin=self._leaves.begin, before_commit=self._leaves.flush)
        self._checkpointer: WalCheckpointer | None = None  # SQLite's, set by open()

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        checkpoint_interval_s: float = WAL_CHECKPOINT_INTERVAL_S,
    ) -> SqliteStore:
        """Open (creating with mode 0600 if missing) and migrate the database at ``path``.

        The parent directory must exist. Raises ``StoreError`` with code
        ``store_dir_missing``, ``store_schema_too_new``, ``store_not_ours``,
        ``store_sqlite_too_old`` or ``store_unavailable``.
        """
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                "store_sqlite_too_old",
                f"SQLite {sqlite3.sqlite_version} is linked into this Python; exchange-node "
                f"needs {'.'.join(map(str, MIN_SQLITE))} or newer",
            )
        spath = _create_in_existing_dir(path)
        writer = GroupCommitWriter(partial(_connect_writer, spath), max_group=max_group)
        await asyncio.to_thread(writer.start)
        try:
            reader = _connect(spath)
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await writer.close()
            raise
        store = cls(spath, writer, reader)
        store._checkpointer = WalCheckpointer(spath, checkpoint_interval_s)
        writer.set_between_groups(store._checkpointer.between_groups)
        store._checkpointer.start()
        return store

    @staticmethod
    def prepare(path: str | os.PathLike[str]) -> None:
        """Create (mode 0600) and migrate the database at ``path`` without opening a
        store: for tools that work on the file directly. Same errors as :meth:`open`."""
        _connect_writer(_create_in_existing_dir(path)).close()

    @staticmethod
    def backup_file(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
        """Copy the database at ``source`` into the new file ``dest`` (0600) with SQLite's
        online backup API, in one step: a consistent snapshot (one read transaction),
        taken while a running node keeps writing. Raises FileExistsError if ``dest``
        exists, ``StoreError`` if ``source`` cannot be read."""
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            src = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError("store_unavailable", f"cannot read {source}: {exc}") from exc
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise StoreError("store_unavailable", f"cannot back up {source}: {exc}") from exc
        finally:
            src.close()
        with open(dest, "rb") as f:
            os.fsync(f.fileno())

    async def close(self) -> None:
        """Finish every queued write, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
        await self._writer.close()
        self._db.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def path(self) -> str:
        return self._path

    async def claim_delivery(self, peer_id: str, owner: str, ttl_s: float) -> bool:
        """Whether this process may deliver ``peer_id``'s queue: always, one process owns
        a SQLite database (a PostgreSQL store leases queues to several)."""
        return True

    async def release_delivery(self, peer_ids: Sequence[str], owner: str) -> None:
        """Nothing is leased here (see :meth:`claim_delivery`)."""

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """No other process writes a SQLite store: nothing to hear (the periodic
        watch picks up what the command line changes). Returns a no-op stop."""
        return _nothing

    def audit_connection(self) -> None:
        """What ``AuditLog(store.path, connection=...)`` reads through: None here, the
        log opens the database file itself (a PostgreSQL store returns a connection)."""
        return None

    # --- units of work -----------------------------------------------------------------------

    def attach_audit(self, appender: AuditAppender) -> None:
        """Let transactions append audit leaves (the audit log's tables are in this
        database, created by migration 3)."""
        self._leaves._appender = appender

    async def transaction(
        self,
        work: Callable[[SqliteTransaction], T],
        *,
        label: str,
        weight: int = 1,
        background: bool = False,
    ) -> T:
        """Run ``work`` in one transaction and return its result once committed.

        All or nothing: when the call returns, every write ``work`` made through its
        :class:`SqliteTransaction` (state, index and outbox rows, audit leaves) is
        committed and fsynced; when it raises, none is. ``label`` names the operation
        for fault injection (``store/faults.py``); ``weight`` is about how many rows it
        writes (group-commit sizing); ``background`` work (catch-up, retention) yields to
        the rest (``store/writer.py``).
        """
        leaves = self._leaves
        return await self._write(lambda conn: work(SqliteTransaction(conn, leaves)),
                                 weight=weight, label=label, background=background)  # fmt: skip

    async def append_audit(self, events: Sequence[Any]) -> range:
        """Append audit leaves that record no other change (lookups, refusals, logins)."""
        return await self.transaction(lambda tx: tx.audit(events), label="audit.append",
                                      weight=len(events))  # fmt: skip

    # --- documents index ---------------------------------------------------------------------

    def notice(self, notice_id: str) -> NoticeRow | None:
        rows = self._read(
            f"SELECT {_NOTICE_COLS} FROM doc_notices WHERE notice_id = ?", (notice_id,)
        )
        return NoticeRow(*rows[0]) if rows else None

    def notice_superseded_by(self, notice_id: str) -> str | None:
        rows = self._read(_SUPERSEDED_BY, (notice_id,))
        return rows[0][0] if rows else None

    def notices_for_document(self, issuing_state: str, number: str) -> list[NoticeRow]:
        rows = self._read(
            f"SELECT {_NOTICE_COLS} FROM doc_notices WHERE issuing_state = ? AND number = ?",
            (issuing_state, number),
        )
        return [NoticeRow(*r) for r in rows]

    def case(self, case_ref: str) -> CaseRow | None:
        rows = self._read(_CASE_SELECT, (case_ref,))
        return CaseRow(*rows[0]) if rows else None

    def case_page(
        self, *, before: tuple[int, str] | None = None, limit: int = 100
    ) -> list[CaseRow]:
        """Cases newest first (opened_at, then reference), after the keyset ``before``
        (the last row of the previous page); served by the ``cases_opened`` index."""
        _check_limit(limit)
        cols = "case_ref, opened_by, participants, personal, opened_at"
        if before is None:
            rows = self._read(
                f"SELECT {cols} FROM cases ORDER BY opened_at DESC, case_ref DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = self._read(
                f"SELECT {cols} FROM cases WHERE opened_at < ? OR (opened_at = ? AND case_ref < ?)"
                " ORDER BY opened_at DESC, case_ref DESC LIMIT ?",
                (before[0], before[0], before[1], limit),
            )
        return [CaseRow(*r) for r in rows]

    def case_events(self, case_ref: str) -> list[CaseEventRow]:
        return [CaseEventRow(*r) for r in self._read(_CASE_EVENTS_SELECT, (case_ref,))]

    def count_notices(self) -> int:
        return self._read("SELECT count(*) FROM doc_notices")[0][0]

    async def index_notices(self, rows: Sequence[NoticeRow], at: int) -> None:
        """Index notices in a transaction of their own (imports, tests)."""
        await self.transaction(lambda tx: tx.index_notices(rows, at), label="notice.index",
                               weight=len(rows))  # fmt: skip

    # --- idempotency keys of the local API --------------------------------------------------

    def idempotency_record(self, token_id: int, key: str) -> IdempotencyRecord | None:
        """The answer kept for ``token_id``'s ``key``, or None (never used, or purged).
        Records are written with the change they answer: ``tx.remember_idempotency``."""
        rows = self._read(_IDEMPOTENCY_SELECT, (token_id, key))
        return IdempotencyRecord(*rows[0]) if rows else None

    # --- catch-up ---------------------------------------------------------------------------

    def catchup(self, peer_id: str) -> CatchUpRow | None:
        rows = self._read(f"SELECT {_CATCHUP_COLS} FROM catchup WHERE peer_id = ?", (peer_id,))
        return _catchup_row(rows[0]) if rows else None

    def catchups(self) -> list[CatchUpRow]:
        rows = self._read(f"SELECT {_CATCHUP_COLS} FROM catchup ORDER BY peer_id")
        return [_catchup_row(r) for r in rows]

    def catchup_progress(self) -> list[CatchUpProgress]:
        """Every peer's catch-up with the outbox rows of its current run counted (still
        queued, dead): rows an earlier run queued before a restart are not its own."""
        counted = {
            peer: (pending, dead)
            for peer, pending, dead in self._read(
                "SELECT o.peer_id, sum(CASE WHEN o.state = 'queued' THEN 1 ELSE 0 END), "
                "sum(CASE WHEN o.state = 'dead' THEN 1 ELSE 0 END) FROM outbox o "
                "JOIN catchup c ON c.peer_id = o.peer_id "
                "WHERE o.catchup = 1 AND o.state != 'delivered' AND o.created_at >= c.started_at "
                "GROUP BY o.peer_id"
            )
        }
        return [CatchUpProgress(row, *counted.get(row.peer_id, (0, 0))) for row in self.catchups()]

    def catchup_chunk(
        self, row: CatchUpRow, me: str, todo: CatchUpSelection, limit: int
    ) -> tuple[list[NoticeRow], int, bool]:
        """The next ``limit`` notices of ``row``'s catch-up, oldest first, with the cursor
        after them and whether they are the last (the scan reached the index's end)."""
        _check_limit(limit)
        end = self._read("SELECT coalesce(max(rowid), 0) FROM doc_notices")[0][0]
        found = self._read(*catchup_chunk_query(me, todo, row.cursor, row.high_water, limit))
        notices = [NoticeRow(*r[1:]) for r in found]
        if len(found) < limit:
            return notices, max(end, row.cursor, found[-1][0] if found else 0), True
        return notices, found[-1][0], False

    def catchup_queued(self, peer_id: str) -> int:
        """Rows queued on the peer's catch-up lane (a few batches at most: the catch-up
        paces itself by this count)."""
        return self._read(CATCHUP_QUEUED_SQL, (peer_id,))[0][0]

    # --- outbox ----------------------------------------------------------------------------

    async def enqueue(self, items: Sequence[OutboxItem], *, audit: Leaves = ()) -> list[int]:
        for i, item in enumerate(items):
            _check_outbox_item(item, f"items[{i}]")
        if not items:
            return []
        return await self._write(
            partial(_enqueue, items=tuple(items)), weight=len(items), audit=audit, label="enqueue"
        )

    def pending(self, peer_id: str, limit: int, lane: Lane | None = None) -> list[OutboxRow]:
        _check_limit(limit)
        rows = self._read(PENDING_SQL[lane], (peer_id, limit))
        return [_outbox_row(r) for r in rows]

    async def record_receipt(
        self,
        peer_id: str,
        receipt: ReceiptRecord,
        outcomes: Sequence[tuple[int, Outcome, str | None]],
    ) -> int:
        checked = _checked_outcomes(outcomes)
        return await self._write(
            partial(_record_receipt, peer_id=peer_id, receipt=receipt, outcomes=checked),
            weight=len(checked),
        )

    async def record_attempt(
        self, peer_id: str, outbox_ids: Sequence[int], at: int, error: str | None
    ) -> None:
        args = [(at, error, outbox_id, peer_id) for outbox_id in outbox_ids]
        if not args:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?, "
                "last_error = ? WHERE id = ? AND peer_id = ? AND state = 'queued'",
                args,
            )

        await self._write(job, weight=len(args))

    async def replace_envelope(self, outbox_id: int, envelope: bytes) -> None:
        _check_bytes(envelope, "envelope")

        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE outbox SET envelope = ? WHERE id = ? AND state IN ('queued', 'dead')",
                (envelope, outbox_id),
            )
            if cur.rowcount == 0:
                _outbox_state_or_raise(conn, outbox_id)
                raise ConflictError(
                    "outbox_row_delivered",
                    f"outbox row {outbox_id} is already delivered; its envelope is evidence "
                    "and cannot be replaced",
                    "outbox_id",
                )

        await self._write(job)

    async def retry_dead_letter(self, outbox_id: int, *, audit: Leaves = ()) -> OutboxRow:
        """Queue a dead letter again, as it was sealed (a peer that finds it expired asks
        for a fresh seal, as for any queued envelope); an acknowledgement of it goes.
        ``audit``: leaves, or a function of the dead row (as it was) that builds them.
        Raises ``outbox_id_unknown``, ``outbox_row_not_dead``, ``record_purged`` (the
        letter of an erased record is never sent again), ``peer_not_found``."""

        def job(conn: sqlite3.Connection) -> OutboxRow:
            row = self._dead_row(conn, outbox_id)
            if row.reason == PURGED_REASON:
                raise ConflictError(
                    "record_purged",
                    f"outbox row {outbox_id} belongs to a record that was erased; it is not "
                    "sent again",
                    "outbox_id",
                )
            if not _rows(conn, "SELECT 1 FROM peers WHERE node_id = ?", (row.peer_id,)):
                raise _peer_not_found(row.peer_id)
            conn.execute(
                "UPDATE outbox SET state = 'queued', outcome = NULL, reason = NULL, "
                "receipt_id = NULL, acknowledged_at = NULL, acknowledged_by = NULL "
                "WHERE id = ?",
                (outbox_id,),
            )
            return row

        return await self._write(job, audit=audit, label="outbox.retry_dead_letter")

    async def acknowledge_dead_letter(
        self, outbox_id: int, actor: str, at: int, *, audit: Leaves = ()
    ) -> OutboxRow:
        """Mark a dead letter as dealt with by ``actor``: it stays (evidence of what was
        refused) but no longer counts in status, metrics and the dead-letter list. Raises
        ``outbox_id_unknown``, ``outbox_row_not_dead``,
        ``dead_letter_already_acknowledged``."""

        def job(conn: sqlite3.Connection) -> OutboxRow:
            row = self._dead_row(conn, outbox_id)
            cur = conn.execute(
                "UPDATE outbox SET acknowledged_at = ?, acknowledged_by = ? "
                "WHERE id = ? AND acknowledged_at IS NULL",
                (at, actor, outbox_id),
            )
            if cur.rowcount == 0:
                raise ConflictError(
                    "dead_letter_already_acknowledged",
                    f"dead letter {outbox_id} is already acknowledged",
                    "outbox_id",
                )
            return row

        return await self._write(job, audit=audit, label="outbox.acknowledge_dead_letter")

    @staticmethod
    def _dead_row(conn: sqlite3.Connection, outbox_id: int) -> OutboxRow:
        state = _outbox_state_or_raise(conn, outbox_id)
        if state != OutboxState.DEAD:
            raise ConflictError(
                "outbox_row_not_dead",
                f"outbox row {outbox_id} is {state}, not a dead letter",
                "outbox_id",
            )
        rows = _rows(conn, f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?", (outbox_id,))
        return _outbox_row(rows[0])

    def queue_stats(self) -> list[QueueStats]:
        rows = self._read(
            """
            SELECT ids.peer_id,
                   coalesce(c.queued, 0),
                   coalesce(c.dead, 0) - (SELECT count(*) FROM outbox a
                     WHERE a.peer_id = ids.peer_id AND a.state = 'dead'
                       AND a.acknowledged_at IS NOT NULL),
                   coalesce(c.delivered, 0),
                   p.node_id IS NOT NULL, coalesce(p.paused, 0),
                   p.last_contact_at, p.last_error, p.last_error_at,
                   (SELECT o.created_at FROM outbox o
                     WHERE o.peer_id = ids.peer_id AND o.state = 'queued'
                     ORDER BY o.id LIMIT 1)
            FROM (SELECT node_id AS peer_id FROM peers
                  UNION SELECT peer_id FROM outbox_counts) AS ids
            LEFT JOIN outbox_counts c ON c.peer_id = ids.peer_id
            LEFT JOIN peers p ON p.node_id = ids.peer_id
            ORDER BY ids.peer_id
            """
        )
        return [
            QueueStats(
                peer_id=r[0],
                depth=r[1],
                dead=r[2],
                delivered=r[3],
                known=bool(r[4]),
                paused=bool(r[5]),
                last_contact_at=r[6],
                last_error=r[7],
                last_error_at=r[8],
                oldest_queued_at=r[9],
            )
            for r in rows
        ]

    def message_status(self, message_id: bytes) -> list[DeliveryRow]:
        rows = self._read(
            "SELECT id, peer_id, message_id, created_at, state, outcome, reason, attempts, "
            "last_attempt_at, last_error, delivered_at, receipt_id FROM outbox "
            "WHERE message_id = ? ORDER BY peer_id",
            (message_id,),
        )
        return [_delivery_row(r) for r in rows]

    def delivery_page(
        self,
        *,
        peer_id: str | None = None,
        state: OutboxState | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[DeliveryRow]:
        """Sent messages' rows (one per recipient), newest first, before ``before_id``
        (keyset on the outbox id; ``outbox_peer`` serves a peer's pages)."""
        _check_limit(limit)
        where, args = [], []
        for clause, value in (
            ("peer_id = ?", peer_id),
            ("state = ?", None if state is None else str(state)),
            ("created_at >= ?", since),
            ("created_at < ?", until),
            ("id < ?", before_id),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self._read(
            "SELECT id, peer_id, message_id, created_at, state, outcome, reason, attempts, "
            "last_attempt_at, last_error, delivered_at, receipt_id FROM outbox"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [_delivery_row(r) for r in rows]

    def get_receipt(self, receipt_id: int) -> StoredReceipt | None:
        rows = self._read(
            "SELECT id, peer_id, batch_id, receipt, received_at FROM receipts WHERE id = ?",
            (receipt_id,),
        )
        return StoredReceipt(*rows[0]) if rows else None

    def get_outbox(self, outbox_id: int) -> OutboxRow | None:
        rows = self._read(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?", (outbox_id,))
        return _outbox_row(rows[0]) if rows else None

    def dead_letters(
        self, peer_id: str | None = None, limit: int = 1000, *, acknowledged: bool = False
    ) -> list[OutboxRow]:
        """Dead letters still needing a person, oldest first (``acknowledged``: also
        those an operator has acknowledged)."""
        where = "state = 'dead'"
        args: tuple = ()
        if peer_id is not None:
            where += " AND peer_id = ?"
            args = (peer_id,)
        if not acknowledged:
            where += " AND acknowledged_at IS NULL"
        rows = self._read(
            f"SELECT {_OUTBOX_COLS} FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
        )
        return [_outbox_row(r) for r in rows]

    def dead_letter_page(
        self,
        *,
        peer_id: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        include_acknowledged: bool = False,
    ) -> list[DeadLetter]:
        """Dead rows in id order after ``after_id`` (keyset pages on the ``outbox_dead``
        index), those still waiting for a person unless ``include_acknowledged``."""
        _check_limit(limit)
        where, args = ["state = 'dead'"], []
        if peer_id is not None:
            where.append("peer_id = ?")
            args.append(peer_id)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        if not include_acknowledged:
            where.append("acknowledged_at IS NULL")
        rows = self._read(
            f"SELECT {_OUTBOX_COLS}, acknowledged_at, acknowledged_by FROM outbox "
            f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*args, limit),
        )
        return [DeadLetter(_outbox_row(r[:-2]), r[-2], r[-1]) for r in rows]

    # --- inbox -----------------------------------------------------------------------------

    async def accept(self, items: Sequence[InboxItem]) -> list[InboxOutcome]:
        for i, item in enumerate(items):
            _check_inbox_item(item, f"items[{i}]")
        if not items:
            return []
        return await self._write(partial(_accept, items=tuple(items)), weight=len(items))

    def inbox_feed(
        self, after_cursor: int, limit: int, kinds: Sequence[str] | None = None
    ) -> list[InboxRow]:
        _check_limit(limit)
        if kinds is None:
            rows = self._read(
                f"SELECT {_INBOX_COLS} FROM inbox WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (after_cursor, limit),
            )
        else:
            kinds = list(kinds)
            if not kinds:
                return []
            marks = ",".join("?" * len(kinds))
            rows = self._read(
                f"SELECT {_INBOX_COLS} FROM inbox WHERE cursor > ? AND kind IN ({marks}) "
                "ORDER BY cursor LIMIT ?",
                (after_cursor, *kinds, limit),
            )
        return [InboxRow(*r) for r in rows]

    def get_inbox(self, sender: str, message_id: bytes) -> InboxRow | None:
        rows = self._read(
            f"SELECT {_INBOX_COLS} FROM inbox WHERE sender = ? AND message_id = ?",
            (sender, message_id),
        )
        return InboxRow(*rows[0]) if rows else None

    async def purge_before(self, t: int, *, seen_before: int | None = None) -> PurgeResult:
        """Retention, in chunks of :data:`PURGE_CHUNK` rows per transaction.

        De-duplication entries are never dropped before the inbox row they describe:
        the effective cut-off for ``seen`` is ``min(t, seen_before)``.
        """
        seen_cut = t if seen_before is None else min(t, seen_before)
        statements = (
            ("DELETE FROM inbox WHERE cursor IN (SELECT cursor FROM inbox "
             "WHERE received_at < ? LIMIT ?)", t),
            ("DELETE FROM seen WHERE (sender, message_id) IN (SELECT sender, message_id "
             "FROM seen WHERE first_seen < ? LIMIT ?)", seen_cut),
            ("DELETE FROM sent_receipts WHERE id IN (SELECT id FROM sent_receipts "
             "WHERE created_at < ? LIMIT ?)", seen_cut),
            ("DELETE FROM idempotency_keys WHERE id IN (SELECT id FROM idempotency_keys "
             "WHERE created_at < ? LIMIT ?)", seen_cut),
        )  # fmt: skip
        counts = []
        for sql, cut in statements:
            total = 0
            while True:
                n = await self._write(
                    partial(_delete_chunk, sql=sql, cut=cut), weight=PURGE_CHUNK, background=True
                )
                total += n
                if n < PURGE_CHUNK:
                    break
            counts.append(total)
        return PurgeResult(
            inbox=counts[0], seen=counts[1], sent_receipts=counts[2], idempotency_keys=counts[3]
        )

    # --- receipts this node sent ---------------------------------------------------------------

    async def store_sent_receipt(
        self, peer_id: str, batch_id: bytes, receipt: bytes, at: int | None = None
    ) -> bytes:
        _check_bytes(batch_id, "batch_id")
        _check_bytes(receipt, "receipt")
        created = _now_ms() if at is None else at

        return await self._write(
            partial(
                _store_sent_receipt, peer_id=peer_id, batch_id=batch_id, receipt=receipt, at=created
            )
        )

    def get_sent_receipt(self, peer_id: str, batch_id: bytes) -> bytes | None:
        rows = self._read(
            "SELECT receipt FROM sent_receipts WHERE peer_id = ? AND batch_id = ?",
            (peer_id, batch_id),
        )
        return rows[0][0] if rows else None

    # --- peers -------------------------------------------------------------------------------

    async def upsert_peer(
        self,
        node_id: str,
        card: bytes,
        fingerprint: str,
        at: int,
        policy: Sequence[str] | None = None,
        *,
        audit: Leaves = (),
    ) -> PeerRecord:
        _check_text(node_id, "node_id")
        _check_bytes(card, "card")
        _check_text(fingerprint, "fingerprint")
        policy_json = None if policy is None else _policy_json(policy)

        def job(conn: sqlite3.Connection) -> PeerRecord:
            conn.execute(
                "INSERT INTO peers (node_id, card, fingerprint, added_at, updated_at, policy) "
                "VALUES (?, ?, ?, ?, ?, coalesce(?, '[]')) "
                "ON CONFLICT (node_id) DO UPDATE SET card = excluded.card, "
                "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at, "
                "policy = coalesce(?, peers.policy)",
                (node_id, card, fingerprint, at, at, policy_json, policy_json),
            )
            return _peer_row(_rows(conn, f"SELECT {_PEER_COLS} FROM peers WHERE node_id = ?",
                                   (node_id,))[0])  # fmt: skip

        return await self._write(job, audit=audit, label="peer.upsert")

    def get_peer(self, node_id: str) -> PeerRecord | None:
        rows = self._read(f"SELECT {_PEER_COLS} FROM peers WHERE node_id = ?", (node_id,))
        return _peer_row(rows[0]) if rows else None

    def list_peers(self) -> list[PeerRecord]:
        return [_peer_row(r) for r in self._read(f"SELECT {_PEER_COLS} FROM peers ORDER BY 1")]

    async def remove_peer(self, node_id: str, force: bool = False, *, audit: Leaves = ()) -> int:
        def job(conn: sqlite3.Connection) -> int:
            if not _rows(conn, "SELECT 1 FROM peers WHERE node_id = ?", (node_id,)):
                raise _peer_not_found(node_id)
            queued = _rows(
                conn,
                "SELECT count(*) FROM outbox WHERE peer_id = ? AND state = 'queued'",
                (node_id,),
            )[0][0]
            if queued and not force:
                raise ConflictError(
                    "peer_has_queued_messages",
                    f"peer {node_id} still has {queued} queued message(s); wait until they "
                    "are delivered, or remove it with force to turn them into dead letters "
                    f"(reason {REASON_PEER_REMOVED})",
                    "node_id",
                )
            conn.execute(
                "UPDATE outbox SET state = 'dead', reason = ? "
                "WHERE peer_id = ? AND state = 'queued'",
                (REASON_PEER_REMOVED, node_id),
            )
            conn.execute("DELETE FROM peers WHERE node_id = ?", (node_id,))
            # Pinned again later, the peer is caught up again.
            conn.execute("DELETE FROM catchup WHERE peer_id = ?", (node_id,))
            return queued

        return await self._write(job, audit=audit, label="peer.remove")

    async def set_paused(self, node_id: str, paused: bool, at: int, *, audit: Leaves = ()) -> None:
        await self._update_peer(
            node_id, "paused = ?, updated_at = ?", (1 if paused else 0, at), audit
        )

    async def set_policy(
        self, node_id: str, kinds: Sequence[str], at: int, *, audit: Leaves = ()
    ) -> None:
        await self._update_peer(
            node_id, "policy = ?, updated_at = ?", (_policy_json(kinds), at), audit
        )

    async def touch_contact(self, peer_id: str, at: int, error: str | None) -> None:
        if error is None:
            await self._update_peer(peer_id, _CONTACT_OK, (at,))
        else:
            await self._update_peer(peer_id, "last_error = ?, last_error_at = ?", (error, at))

    async def _update_peer(
        self, node_id: str, assignments: str, args: tuple[Any, ...], audit: Leaves = ()
    ) -> None:
        await self._write(
            partial(_update_peer, node_id=node_id, assignments=assignments, args=args),
            audit=audit,
            label="peer.update",
        )

    # --- tokens ------------------------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        role: str,
        secret: str,
        at: int,
        *,
        expires_at: int | None = None,
        audit: Leaves = (),
    ) -> TokenRecord:
        _check_text(name, "name", max_len=64)
        if expires_at is not None and expires_at <= at:
            raise ValidationError(
                "token_expiry_invalid", "a token must expire after it is created", "expires_at"
            )
        if role not in TOKEN_ROLES:
            raise ValidationError(
                "token_role_unknown",
                f"role {role!r} is not one of {', '.join(sorted(TOKEN_ROLES))}",
                "role",
            )
        if not isinstance(secret, str) or len(secret) < TOKEN_SECRET_MIN_CHARS:
            raise ValidationError(
                "token_secret_too_short",
                f"a token secret needs at least {TOKEN_SECRET_MIN_CHARS} random characters "
                "(128 bits); generate it with secrets.token_urlsafe(32)",
                "secret",
            )
        secret_hash = hash_token_secret(secret)

        def job(conn: sqlite3.Connection) -> TokenRecord:
            if _rows(conn, "SELECT 1 FROM tokens WHERE name = ? AND revoked_at IS NULL", (name,)):
                raise ConflictError(
                    "token_name_taken",
                    f"an active token is already named {name!r}; revoke it or pick another name",
                    "name",
                )
            try:
                token_id = conn.execute(
                    "INSERT INTO tokens (name, role, secret_hash, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (name, role, secret_hash, at, expires_at),
                ).fetchone()[0]
            except sqlite3.IntegrityError as exc:
                raise ConflictError(
                    "token_secret_reused", "generate a fresh secret for every token", "secret"
                ) from exc
            return TokenRecord(token_id, name, role, secret_hash, at, None, expires_at)

        return await self._write(job, audit=audit, label="token.create")

    def find_active_token(self, secret_hash: bytes) -> TokenRecord | None:
        rows = self._read(
            f"SELECT {_TOKEN_COLS} FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL",
            (secret_hash,),
        )
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        return [
            TokenRecord(*r)
            for r in self._read(f"SELECT {_TOKEN_COLS} FROM tokens {where} ORDER BY id")
        ]

    async def revoke_token(
        self, name_or_id: str | int, at: int, *, audit: Leaves = ()
    ) -> TokenRecord:
        def job(conn: sqlite3.Connection) -> TokenRecord:
            if isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
                rows = _rows(conn, f"SELECT {_TOKEN_COLS} FROM tokens WHERE id = ?", (name_or_id,))
            else:
                rows = _rows(
                    conn,
                    f"SELECT {_TOKEN_COLS} FROM tokens WHERE name = ? AND revoked_at IS NULL",
                    (name_or_id,),
                )
            if not rows:
                raise NotFoundError(
                    "token_not_found", f"no active token {name_or_id!r}", "name_or_id"
                )
            token = TokenRecord(*rows[0])
            if token.revoked_at is not None:
                raise ConflictError(
                    "token_already_revoked", f"token {token.id} is already revoked", "name_or_id"
                )
            conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (at, token.id))
            # A revoked token's console sessions end with it.
            conn.execute("DELETE FROM console_sessions WHERE token_id = ?", (token.id,))
            return TokenRecord(token.id, token.name, token.role, token.secret_hash,
                               token.created_at, at)  # fmt: skip
            return replace(token, revoked_at=at)

        return await self._write(job, audit=audit, label="token.revoke")

    def get_token(self, token_id: int) -> TokenRecord | None:
        rows = self._read(f"SELECT {_TOKEN_COLS} FROM tokens WHERE id = ?", (token_id,))
        return TokenRecord(*rows[0]) if rows else None

    # --- console sessions ---------------------------------------------------------------------

    async def create_console_session(
        self, session: ConsoleSession, *, audit: Leaves = ()
    ) -> ConsoleSession:
        """Keep a new session; sessions past their expiry are deleted in the same step."""

        def job(conn: sqlite3.Connection) -> ConsoleSession:
            conn.execute(
                "DELETE FROM console_sessions WHERE expires_at <= ?", (session.created_at,)
            )
            conn.execute(
                "INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, "
                "last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (session.id_hash, session.token_id, session.csrf, session.created_at,
                 session.last_seen_at, session.expires_at),
            )  # fmt: skip
            return session

        return await self._write(job, audit=audit, label="console.session_create")

    def console_session(self, id_hash: bytes) -> ConsoleSession | None:
        rows = self._read(
            "SELECT id_hash, token_id, csrf, created_at, last_seen_at, expires_at "
            "FROM console_sessions WHERE id_hash = ?",
            (id_hash,),
        )
        return ConsoleSession(*rows[0]) if rows else None

    async def touch_console_session(self, id_hash: bytes, at: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?", (at, id_hash)
            ),
            label="console.session_touch",
        )

    async def delete_console_session(self, id_hash: bytes, *, audit: Leaves = ()) -> bool:
        """End a session (sign-out, expiry); False if there was none."""

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))
            return cur.rowcount > 0

        return await self._write(job, audit=audit, label="console.session_delete")

    # --- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    async def set_meta(self, key: str, value: bytes, *, audit: Leaves = ()) -> None:
        _check_text(key, "key")
        if not isinstance(value, bytes):
            raise ValidationError("meta_value_invalid", "meta values are bytes", "value")

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await self._write(job, audit=audit, label="meta.set")

    # --- operations --------------------------------------------------------------------------

    # --- witnessing -----------------------------------------------------------------------

    def witness_logs(self) -> list[WitnessLogRow]:
        """As a witness: every log cosigned, by origin."""
        rows = self._read(f"{_WITNESS_LOG_COLUMNS} ORDER BY origin")
        return [WitnessLogRow(*r) for r in rows]

    def cosignatures(self, tree_size: int | None = None) -> list[CosignatureRow]:
        """Witnesses' cosignatures on this node's checkpoints (of one size, or all),
        by size then witness."""
        sql = "SELECT tree_size, witness, key_id, timestamp, line, received_at FROM audit_cosignatures"
        args: tuple[Any, ...] = ()
        if tree_size is not None:
            sql, args = sql + " WHERE tree_size = ?", (tree_size,)
        rows = self._read(sql + " ORDER BY tree_size, witness, key_id", args)
        return [CosignatureRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    def cosigned_size(self, witness: str, key_id: bytes) -> int:
        """The largest size of our checkpoints this witness key has cosigned (0: none)."""
        rows = self._read(
            "SELECT max(tree_size) FROM audit_cosignatures WHERE witness = ? AND key_id = ?",
            (witness, key_id),
        )
        return int(rows[0][0] or 0)

    def writer_stats(self) -> WriterStats:
        return self._writer.stats()

    def wal_bytes(self) -> int | None:
        """The size of the write-ahead log file now (None: the database server's own)."""
        try:
            return os.path.getsize(self._path + "-wal")
        except FileNotFoundError:
            return 0

    async def info(self) -> StoreInfo:
        def job(conn: sqlite3.Connection) -> StoreInfo:
            def pragma(name: str) -> Any:
                return conn.execute(f"PRAGMA {name}").fetchall()[0][0]

            try:
                wal_bytes = os.path.getsize(self._path + "-wal")
            except FileNotFoundError:
                wal_bytes = 0
            return StoreInfo(
                path=self._path,
                schema_version=pragma("user_version"),
                sqlite_version=sqlite3.sqlite_version,
                journal_mode=pragma("journal_mode"),
                synchronous={0: "off", 1: "normal", 2: "full", 3: "extra"}[pragma("synchronous")],
                page_count=pragma("page_count"),
                page_size=pragma("page_size"),
                wal_bytes=wal_bytes,
            )

        return await self._write(job, transactional=False)

    async def checkpoint(self) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
            return busy == 0

        return await self._write(job, transactional=False)

    async def integrity_check(self) -> list[str]:
        """Runs on a worker thread with its own read-only connection (may take a while)."""
        if self._closed:
            raise _closed_error()

        def check() -> list[str]:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
            try:
                problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
                problems = [p for p in problems if p != "ok"]
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
                    problems.append(f"{table} row {rowid} refers to a missing {parent} row")
                return problems
            finally:
                conn.close()

        return await asyncio.to_thread(check)

    # --- plumbing ----------------------------------------------------------------------------

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        weight: int = 1,
        transactional: bool = True,
        label: str = "",
        audit: Leaves = (),
        background: bool = False,
    ) -> T:
        if self._closed:
            raise _closed_error()
        if audit:
            fn = self._with_leaves(fn, audit)
        return await self._writer.submit(
            fn, weight=weight, transactional=transactional, label=label, background=background
        )

    def _with_leaves(self, fn: Callable[[sqlite3.Connection], T], audit: Leaves):
        leaves = self._leaves
        if leaves._appender is None:
            raise StoreError("audit_not_attached", "no audit log is attached to this store")

        def job(conn: sqlite3.Connection) -> T:
            result = fn(conn)
            leaves.note(conn, audit(result) if callable(audit) else audit)
            return result

        return job

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read(sql, args)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._closed:
            raise _closed_error()
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(
                "store_unavailable",
                f"the database could not be read ({type(exc).__name__}: {exc})",
            ) from exc


# --- write jobs (run on the writer thread) ----------------------------------------------------


def _enqueue(conn: sqlite3.Connection, items: tuple[OutboxItem, ...]) -> list[int]:
    for peer_id in {item.peer_id for item in items}:
        if not _rows(conn, "SELECT 1 FROM peers WHERE node_id = ?", (peer_id,)):
            raise _peer_not_found(peer_id)
    ids = []
    for item in items:
        try:
            outbox_id = conn.execute(
                "INSERT INTO outbox (peer_id, message_id, envelope, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (item.peer_id, item.message_id, item.envelope, item.payload, item.created_at),
            ).fetchone()[0]
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                "message_id_exists",
                f"message {item.message_id.hex()} is already in the outbox for peer "
                f"{item.peer_id}; use a fresh message id",
                "message_id",
            ) from exc
        ids.append(outbox_id)
    return ids


def _record_receipt(
    conn: sqlite3.Connection,
    peer_id: str,
    receipt: ReceiptRecord,
    outcomes: list[tuple[int, Outcome, str | None]],
) -> int:
    receipt_id = conn.execute(
        "INSERT INTO receipts (peer_id, batch_id, receipt, received_at) VALUES (?, ?, ?, ?) "
        "RETURNING id",
        (peer_id, receipt.batch_id, receipt.receipt, receipt.received_at),
    ).fetchone()[0]
    for outbox_id, outcome, reason in outcomes:
        rows = _rows(
            conn, "SELECT state FROM outbox WHERE id = ? AND peer_id = ?", (outbox_id, peer_id)
        )
        if not rows:
            raise ValidationError(
                "outbox_id_unknown",
                f"outbox row {outbox_id} was not queued for peer {peer_id}",
                "outcomes",
            )
        if rows[0][0] != OutboxState.QUEUED:
            continue  # an earlier receipt already settled it: the first one wins
        if outcome is Outcome.REJECTED:
            conn.execute(
                "UPDATE outbox SET state = 'dead', outcome = 'rejected', reason = ?, "
                "receipt_id = ? WHERE id = ?",
                (reason or REASON_UNSPECIFIED, receipt_id, outbox_id),
            )
        else:
            # Delivered: the payload is no longer needed for re-sealing, so erase it.
            conn.execute(
                "UPDATE outbox SET state = 'delivered', outcome = ?, reason = ?, "
                "delivered_at = ?, receipt_id = ?, payload = NULL WHERE id = ?",
                (outcome.value, reason, receipt.received_at, receipt_id, outbox_id),
            )
    return receipt_id


def _accept(conn: sqlite3.Connection, items: tuple[InboxItem, ...]) -> list[InboxOutcome]:
    outcomes = []
    for item in items:
        seen = _rows(
            conn,
            "SELECT envelope_hash, cursor FROM seen WHERE sender = ? AND message_id = ?",
            (item.sender, item.message_id),
        )
        if seen:
            if seen[0][0] == item.envelope_hash:
                outcomes.append(InboxOutcome(Outcome.DUPLICATE, cursor=seen[0][1]))
            else:
                outcomes.append(InboxOutcome(Outcome.REJECTED, reason="message_id_reused"))
            continue
        cursor = conn.execute(
            "INSERT INTO inbox (sender, message_id, envelope_hash, kind, header, body, "
            "signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING cursor",
            (
                item.sender,
                item.message_id,
                item.envelope_hash,
                item.kind,
                item.header,
                item.body,
                item.signature,
                item.received_at,
            ),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO seen (sender, message_id, envelope_hash, first_seen, cursor) "
            "VALUES (?, ?, ?, ?, ?)",
            (item.sender, item.message_id, item.envelope_hash, item.received_at, cursor),
        )
        outcomes.append(InboxOutcome(Outcome.ACCEPTED, cursor=cursor))
    return outcomes


_CONTACT_OK = "last_contact_at = ?, last_error = NULL, last_error_at = NULL"


def _update_peer(
    conn: sqlite3.Connection, node_id: str, assignments: str, args: tuple[Any, ...]
) -> None:
    cur = conn.execute(f"UPDATE peers SET {assignments} WHERE node_id = ?", (*args, node_id))
    if cur.rowcount == 0:
        raise _peer_not_found(node_id)


def _checked_outcomes(
    outcomes: Sequence[tuple[int, Outcome, str | None]],
) -> list[tuple[int, Outcome, str | None]]:
    checked = []
    for i, (outbox_id, outcome, reason) in enumerate(outcomes):
        if not isinstance(outbox_id, int) or outcome not in _OUTCOMES:
            raise ValidationError(
                "outcome_invalid",
                "each outcome is (outbox id, accepted|duplicate|rejected, reason or None)",
                f"outcomes[{i}]",
            )
        checked.append((outbox_id, Outcome(outcome), reason))
    return checked


def _store_sent_receipt(
    conn: sqlite3.Connection, peer_id: str, batch_id: bytes, receipt: bytes, at: int
) -> bytes:
    conn.execute(
        "INSERT INTO sent_receipts (peer_id, batch_id, receipt, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (peer_id, batch_id) DO NOTHING",
        (peer_id, batch_id, receipt, at),
    )
    return _rows(
        conn,
        "SELECT receipt FROM sent_receipts WHERE peer_id = ? AND batch_id = ?",
        (peer_id, batch_id),
    )[0][0]


_NOTICE_COLS = (
    "notice_id, sender_node, sender_country, kind, issuing_state, document_type, number, "
    "issued_at_ms, supersedes, detection_place, detected_at_ms, detection_auth, "
    "effective_at_ms, remarks, reason, message_id"
)
_notice_values = attrgetter(*(f.name for f in fields(NoticeRow)))
_NOTICE_INSERT = (
    f"INSERT INTO doc_notices ({_NOTICE_COLS}, indexed_at) VALUES ({', '.join('?' * 17)}) "
    "ON CONFLICT (notice_id) DO NOTHING"
)


def _notice(conn: sqlite3.Connection, notice_id: str) -> NoticeRow | None:
    rows = _rows(conn, f"SELECT {_NOTICE_COLS} FROM doc_notices WHERE notice_id = ?", (notice_id,))
    return NoticeRow(*rows[0]) if rows else None


_CASE_SELECT = (
    "SELECT case_ref, opened_by, participants, personal, opened_at FROM cases WHERE case_ref = ?"
)
_CASE_EVENT_COLS = (
    "case_ref, sequence, event_id, kind, actor, actor_role, at_ms, note, performed_by, "
    "message_ids, recorded_at"
)
_CASE_EVENTS_SELECT = (
    f"SELECT {_CASE_EVENT_COLS} FROM case_events WHERE case_ref = ? ORDER BY sequence"
)
_CASE_EVENT_INSERT = f"INSERT INTO case_events ({_CASE_EVENT_COLS}) VALUES ({', '.join('?' * 11)})"
_case_event_values = attrgetter(*(f.name for f in fields(CaseEventRow)))

_SUPERSEDED_BY = (
    "SELECT notice_id FROM doc_notices WHERE supersedes = ? ORDER BY issued_at_ms, "
    "notice_id LIMIT 1"
)


def _superseded_by(conn: sqlite3.Connection, notice_id: str) -> str | None:
    rows = _rows(conn, _SUPERSEDED_BY, (notice_id,))
    return rows[0][0] if rows else None


_IDEMPOTENCY_COLS = "token_id, key, request_hash, method, path, status, response, created_at"
_IDEMPOTENCY_SELECT = (
    f"SELECT {_IDEMPOTENCY_COLS} FROM idempotency_keys WHERE token_id = ? AND key = ?"
)
_IDEMPOTENCY_INSERT = (
    f"INSERT INTO idempotency_keys ({_IDEMPOTENCY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_idempotency_values = attrgetter(*(f.name for f in fields(IdempotencyRecord)))


_CATCHUP_COLS = (
    "peer_id, state, kinds, todo, cursor, high_water, total, queued, started_at, updated_at, "
    "requested_at, paused_ms, paused_at"
)


def _catchup_row(r: tuple[Any, ...]) -> CatchUpRow:
    kinds = tuple(json.loads(r[2])) if r[2] is not None else None
    return CatchUpRow(r[0], r[1], kinds, tuple(json.loads(r[3])), *r[4:])


def _catchup(conn: sqlite3.Connection, peer_id: str) -> CatchUpRow | None:
    rows = _rows(conn, f"SELECT {_CATCHUP_COLS} FROM catchup WHERE peer_id = ?", (peer_id,))
    return _catchup_row(rows[0]) if rows else None


def catchup_chunk_query(
    me: str, todo: CatchUpSelection, cursor: int, high_water: int, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """The read of a catch-up's next chunk: at most ``limit`` notices past ``cursor``,
    with their rowids, in rowid order."""
    where, args = _catchup_where(me, todo, cursor, None, high_water)
    sql = (
        f"SELECT n.rowid, {_NOTICE_COLS} FROM doc_notices n WHERE {where} ORDER BY n.rowid LIMIT ?"
    )
    return sql, (*args, limit)


def _catchup_where(
    me: str,
    todo: CatchUpSelection,
    after: int,
    upto: int | None,
    corrections_after: int | None = None,
) -> tuple[str, list[Any]]:
    """The notices of ``me`` still in effect (not a withdrawal, superseded by nothing)
    that ``todo`` selects, with rowid in (``after``, ``upto``]; with
    ``corrections_after``, corrections past that rowid too, whatever ``upto``."""
    picks = []
    args: list[Any] = [me, after]
    if todo.kinds:
        picks.append(f"(n.supersedes IS NULL AND n.kind IN ({', '.join('?' * len(todo.kinds))}))")
        args += todo.kinds
    if todo.corrections:
        picks.append("n.supersedes IS NOT NULL")
    # ``|| ''`` keeps the planner off the (sender_node, issued_at_ms) index: through it
    # a chunk read sorts every notice of the node (2.5 s per chunk at a million), where
    # the rowid range from the cursor stops after one chunk's worth.
    where = (
        "n.sender_node || '' = ? AND n.rowid > ? AND n.kind != 'WITHDRAWAL' "
        f"AND ({' OR '.join(picks) or '1 = 0'}) "
        "AND NOT EXISTS (SELECT 1 FROM doc_notices s WHERE s.supersedes = n.notice_id)"
    )
    if upto is not None:
        where += " AND n.rowid <= ?"
        args.append(upto)
    elif corrections_after is not None:
        where += " AND (n.rowid <= ? OR n.supersedes IS NOT NULL)"
        args.append(corrections_after)
    return where, args


def _delete_chunk(conn: sqlite3.Connection, sql: str, cut: int) -> int:
    return conn.execute(sql, (cut, PURGE_CHUNK)).rowcount


# --- connections ---------------------------------------------------------------------------


def _create_in_existing_dir(path: str | os.PathLike[str]) -> str:
    """``path`` as a string, the file created (0600) if missing; its directory must exist."""
    p = Path(path)
    if not p.parent.is_dir():
        raise StoreError(
            "store_dir_missing",
            f"directory {p.parent} does not exist; create it (mode 0700) or fix the path",
            "store.path",
        )
    _create_private(str(p))
    return str(p)


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (SQLite gives the -wal and
    -shm files the same mode). An existing file readable by others (as earlier releases
    made them, or a copy) is made private, with its -wal and -shm files."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for side in (path, path + "-wal", path + "-shm"):
            with suppress(FileNotFoundError):
                if os.stat(side).st_mode & 0o077:
                    os.chmod(side, 0o600)
        return
    except OSError as exc:
        code = "store_dir_missing" if exc.errno == errno.ENOENT else "store_unavailable"
        raise StoreError(code, f"cannot create {path}: {exc.strerror}", "store.path") from exc
    os.close(fd)


class WalCheckpointer:
    """Copies committed pages from the WAL into the database file, on a thread and a
    connection of its own, every ``interval_s``; the writer finishes the job between
    groups when the WAL has grown long (:meth:`between_groups`).

    At SQLite's default the COMMIT that takes the WAL past 1,000 pages checkpoints: it
    writes pages all over the database file and syncs it, a few hundred milliseconds on
    a database of a few GB, and every live notice waiting for that writer waits too.
    Here the thread's PASSIVE checkpoint never waits for the writer or the readers and
    never blocks them; what a reader still needs stays in the WAL until the next pass.
    But the writer keeps appending while the thread copies, and the WAL starts over only
    at a write transaction that finds it copied whole, so under steady writes the thread
    alone never shortens it. The writer therefore runs a PASSIVE checkpoint itself between
    two groups, once the thread's latest pass saw the WAL past ``WAL_RESTART_PAGES`` and
    copied all it saw: what is left to copy is what was committed since that pass, and
    nothing is appended meanwhile. It does so only when no live job is waiting, unless
    the WAL is past ``WAL_FORCE_PAGES``. A pass that could not copy everything (a reader
    holds an old snapshot, an export say) leaves the backlog to the thread's next pass,
    not to the writer. Durability does not depend on any of this (a COMMIT is durable
    once in the WAL).

    ``passes`` and ``finished`` count the thread's and the writer's checkpoints;
    ``last`` is SQLite's (busy, WAL frames, frames checkpointed) of the thread's latest;
    ``error`` the thread's latest failure (None once a pass succeeded).
    """

    def __init__(self, path: str, interval_s: float = WAL_CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)
        self.passes = 0
        self.finished = 0
        self.last: tuple[int, int, int] | None = None
        self.error: str | None = None
        # What the latest checkpoint, by either thread, saw: WAL frames, and whether the
        # thread copied them all. A hint only: either thread may overwrite the other's.
        self._hint: tuple[int, bool] = (0, False)
        self._writer_failed = False
        self.restart_pages = WAL_RESTART_PAGES
        self.force_pages = WAL_FORCE_PAGES

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(self._interval_s):
                if conn is None and (conn := self._connect()) is None:
                    continue  # tried again at the next pass
                try:
                    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # a full disk, say: the next pass tries again
                    self._failed(str(exc))
                    continue
                if busy:  # the writer is finishing one
                    continue
                self.last, self.error = (busy, frames, done), None
                self.passes += 1
                # The WAL's length: the writer appended while this copied, so the WAL
                # only starts over after the writer's own checkpoint.
                self._hint = (frames, done == frames)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")  # the database file is synced
            conn.execute("PRAGMA checkpoint_fullfsync = ON")
        except sqlite3.Error as exc:
            self._failed(str(exc))
            return None
        return conn

    def _failed(self, error: str) -> None:
        if self.error is None:  # once per run of failures
            _log.warning("store.checkpoint_failed", error=error)
        self.error = error

    def between_groups(self, conn: sqlite3.Connection, waiting: bool) -> None:
        """The writer's part, on its thread between two groups (see the class)."""
        frames, copied = self._hint
        if not copied or frames < self.restart_pages:
            return
        if waiting and frames < self.force_pages:
            return
        try:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the thread's next pass tries again
            if not self._writer_failed:
                _log.warning("store.checkpoint_failed", error=str(exc), by="writer")
            self._writer_failed = True
            return
        self._writer_failed = False
        if busy:  # the thread is at it: its pass says again how long the WAL is
            return
        self.finished += 1
        # Copied whole with nothing appended since: the WAL starts over at the writer's
        # next transaction (unless a reader still reads from it: the thread's next pass
        # then says so).
        self._hint = (0 if done == frames else frames, False)


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, cached_statements=256)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA trusted_schema = OFF")
        # Lookups at millions of documents are random B-tree reads: a larger page
        # cache and memory-mapped reads keep them off the read() system call.
        conn.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB per connection
        conn.execute("PRAGMA mmap_size = 4294967296")
    except sqlite3.Error as exc:
        raise StoreError("store_unavailable", f"cannot open {path}: {exc}", "store.path") from exc
    return conn


def _connect_writer(path: str) -> sqlite3.Connection:
    """The write connection: WAL, fsync on every COMMIT, schema migrated."""
    conn = _connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if mode != "wal":
            raise StoreError(
                "store_unavailable",
                f"{path} cannot use write-ahead logging (journal mode {mode}); put the "
                "database on a local file system",
                "store.path",
            )
        # FULL: the WAL is fsynced at every COMMIT, so an acknowledged write survives a
        # power cut (NORMAL would only protect against application crashes).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: F_FULLFSYNC, no-op elsewhere
        conn.execute("PRAGMA checkpoint_fullfsync = ON")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        # Checkpoints are the WalCheckpointer's, off the COMMIT; this bound only applies
        # should it stop.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
        # Deleted rows are overwritten with zeros, not left in free pages: an erased
        # record's wrapped key and ciphertext are gone from the file, not just unlinked
        # (exchange_node/record_keys.py). The write-ahead log still holds old page
        # images until a checkpoint resets it; erasure checkpoints afterwards.
        conn.execute("PRAGMA secure_delete = ON")
        migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError("store_unavailable", f"cannot open {path}: {exc}", "store.path") from exc
    except BaseException:
        conn.close()
        raise
    return conn


# --- helpers -------------------------------------------------------------------------------

_OUTBOX_COLS = (
    "id, peer_id, message_id, envelope, payload, created_at, state, outcome, reason, "
    "attempts, last_attempt_at, last_error, delivered_at, receipt_id"
)
_QUEUED = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE peer_id = ? AND state = 'queued'"
PENDING_SQL: dict[Lane | None, str] = {
    None: f"{_QUEUED} ORDER BY id LIMIT ?",
    # The lane is a literal, not a parameter: only then do both planners read the
    # partial index of queued rows by lane (migration 12) and skip the other lane's rows.
    Lane.LIVE: f"{_QUEUED} AND catchup = 0 ORDER BY id LIMIT ?",
    Lane.CATCHUP: f"{_QUEUED} AND catchup = 1 ORDER BY id LIMIT ?",
}
"""A peer's next queued rows, oldest first: of one lane, or of both (``None``)."""
CATCHUP_QUEUED_SQL = (
    "SELECT count(*) FROM outbox WHERE peer_id = ? AND state = 'queued' AND catchup = 1"
)
_INBOX_COLS = (
    "cursor, sender, message_id, envelope_hash, kind, header, body, signature, received_at"
)
_PEER_COLS = (
    "node_id, card, fingerprint, added_at, updated_at, paused, last_contact_at, last_error, "
    "last_error_at, policy"
)
_TOKEN_COLS = "id, name, role, secret_hash, created_at, revoked_at, expires_at"


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    # fetchall() finishes the statement, so no read transaction is left open behind it.
    return conn.execute(sql, args).fetchall()


def _delivery_row(r: tuple[Any, ...]) -> DeliveryRow:
    return DeliveryRow(
        outbox_id=r[0],
        peer_id=r[1],
        message_id=r[2],
        created_at=r[3],
        state=OutboxState(r[4]),
        outcome=None if r[5] is None else Outcome(r[5]),
        reason=r[6],
        attempts=r[7],
        last_attempt_at=r[8],
        last_error=r[9],
        delivered_at=r[10],
        receipt_id=r[11],
    )


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        peer_id=r[1],
        message_id=r[2],
        envelope=r[3],
        payload=r[4],
        created_at=r[5],
        state=OutboxState(r[6]),
        outcome=None if r[7] is None else Outcome(r[7]),
        reason=r[8],
        attempts=r[9],
        last_attempt_at=r[10],
        last_error=r[11],
        delivered_at=r[12],
        receipt_id=r[13],
    )


def _peer_row(r: tuple[Any, ...]) -> PeerRecord:
    return PeerRecord(
        node_id=r[0],
        card=r[1],
        fingerprint=r[2],
        added_at=r[3],
        updated_at=r[4],
        paused=bool(r[5]),
        last_contact_at=r[6],
        last_error=r[7],
        last_error_at=r[8],
        policy=tuple(json.loads(r[9])),
    )


def _outbox_state_or_raise(conn: sqlite3.Connection, outbox_id: int) -> OutboxState:
    rows = _rows(conn, "SELECT state FROM outbox WHERE id = ?", (outbox_id,))
    if not rows:
        raise NotFoundError("outbox_id_unknown", f"no outbox row {outbox_id}", "outbox_id")
    return OutboxState(rows[0][0])


def _peer_not_found(node_id: str) -> NotFoundError:
    return NotFoundError(
        "peer_not_found", f"no pinned peer {node_id!r}; pin its node card first", "peer_id"
    )


def _closed_error() -> StoreError:
    return StoreError("store_closed", "the store is closed")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _policy_json(kinds: Sequence[str]) -> str:
    if isinstance(kinds, str):
        raise ValidationError("policy_invalid", "policy is a list of notice kinds", "policy")
    for i, kind in enumerate(kinds):
        _check_text(kind, f"policy[{i}]")
    return json.dumps(sorted(set(kinds)))


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_READ_LIMIT:
        raise ValidationError(
            "limit_invalid", f"limit must be between 1 and {MAX_READ_LIMIT}", "limit"
        )


def _check_text(value: object, field: str, max_len: int = 256) -> None:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValidationError(
            "text_invalid", f"{field} must be a non-empty string of at most {max_len} characters",
            field,
        )  # fmt: skip


def _check_bytes(value: object, field: str, length: int | None = None) -> None:
    if not isinstance(value, bytes) or not value:
        raise ValidationError("bytes_invalid", f"{field} must be non-empty bytes", field)
    if length is not None and len(value) != length:
        raise ValidationError(
            "bytes_invalid", f"{field} must be exactly {length} bytes, not {len(value)}", field
        )


def _check_int(value: object, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError("time_invalid", f"{field} must be unix milliseconds", field)


def _check_outbox_item(item: OutboxItem, where: str) -> None:
    _check_text(item.peer_id, f"{where}.peer_id")
    _check_bytes(item.message_id, f"{where}.message_id", MESSAGE_ID_LEN)
    _check_bytes(item.envelope, f"{where}.envelope")
    _check_bytes(item.payload, f"{where}.payload")
    _check_int(item.created_at, f"{where}.created_at")


def _check_idempotency(record: IdempotencyRecord) -> None:
    if not isinstance(record.token_id, int):
        raise ValidationError("token_id_invalid", "token_id is a token's id", "token_id")
    _check_text(record.key, "key", max_len=255)
    _check_bytes(record.request_hash, "request_hash", 32)
    _check_text(record.method, "method", max_len=16)
    _check_text(record.path, "path", max_len=1024)
    if not isinstance(record.status, int) or not 200 <= record.status <= 299:
        raise ValidationError("status_invalid", "only a success (2xx) is remembered", "status")
    _check_bytes(record.response, "response")
    _check_int(record.created_at, "created_at")


def _check_inbox_item(item: InboxItem, where: str) -> None:
    _check_text(item.sender, f"{where}.sender")
    _check_bytes(item.message_id, f"{where}.message_id", MESSAGE_ID_LEN)
    _check_bytes(item.envelope_hash, f"{where}.envelope_hash", ENVELOPE_HASH_LEN)
    _check_text(item.kind, f"{where}.kind", max_len=64)
    _check_bytes(item.header, f"{where}.header")
    _check_bytes(item.body, f"{where}.body")
    _check_bytes(item.signature, f"{where}.signature")
    _check_int(item.received_at, f"{where}.received_at")


_WITNESS_LOG_COLUMNS = (
    "SELECT origin, log_peer, tree_size, root, note, updated_at FROM witness_logs"
)
_WITNESS_LOG_SELECT = _WITNESS_LOG_COLUMNS + " WHERE origin = ?"
_WITNESS_LOG_UPSERT = (
    "INSERT INTO witness_logs (origin, log_peer, tree_size, root, note, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET"
    " log_peer = excluded.log_peer, tree_size = excluded.tree_size, root = excluded.root,"
    " note = excluded.note, updated_at = excluded.updated_at"
)
