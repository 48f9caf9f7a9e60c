"""The store interface the rest of the node programs against.

THE INVARIANT: one operation, one transaction. Everything an operation changes (state
rows, index rows, outbox rows, case rows) and the audit leaves recording it commit in ONE
transaction of ONE database, or not at all. After a crash, a full disk or a refusal at
any point, a restart finds the operation whole or absent: never a notice indexed but not
queued, never a delivered message without its ``envelope.sent`` leaf, never a stored
envelope without its ``envelope.received`` leaf. Nothing provisional lives outside the
transaction: a step checked against the store is checked inside it.

How an operation keeps it:

- a composite operation runs as ``await store.transaction(work, label=...)``: ``work``
  gets a transaction object whose methods write (``enqueue``, ``accept``,
  ``index_notices``, ``insert_case_event``, ``record_receipt``, ``audit``, ...) and
  read what the transaction sees; ``work`` may be run again after a rollback, so it
  changes nothing outside the transaction;
- a single write that records a change passes its leaves as ``audit=`` (or a function
  of its result that builds them);
- leaves that record no other change (a lookup, a refused call) go through
  ``append_audit``.

Each transaction is labelled: ``store/faults.py`` kills the process at its commit points
for the crash tests (``tests/test_crash_points.py``).

Two implementations share one text of every query:
:class:`exchange_node.store.sqlite.SqliteStore` (embedded, one process) and
:class:`exchange_node.store.postgresql.PostgresStore` (a server shared by several node
processes), which runs SqliteStore's own methods on a connection adapter. New SQL must
therefore be portable: the rules are in :mod:`exchange_node.store.migrations`. Rows cross this boundary as the frozen
dataclasses of :mod:`exchange_node.store.records`, never as driver rows; no SQL exists
outside ``store/`` (the audit log's tree, ``audit/log.py``, aside: it runs on the
connection the store hands it).

Sync or async, and what "durable" means:

- **Writes are ``async``.** When the awaited call returns, the change is committed and
  fsynced: a power cut right afterwards cannot lose it. The node may therefore
  acknowledge a local submission or answer ACCEPTED as soon as the call returns.
  Cancelling the awaiting task does not withdraw a write already handed to the store: it
  may still be committed.
- **Reads are plain (synchronous) methods.** They are indexed point or range queries,
  fast enough to run on the event loop, and see every write whose call has returned.
  Call them on the thread that opened the store (the event loop's), not from worker
  threads.
- **Concurrent writes are committed in groups**: writes awaited at the same time share
  one transaction and one fsync, each still all-or-nothing on its own. Writes are applied
  in the order they were called.
- Errors are :class:`exchange_node.errors.ExchangeError` subclasses with stable codes;
  a failing write leaves the store unchanged (all of that call or none of it) and does not
  affect other callers' writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from exchange_node.errors import ExchangeError
from exchange_node.store.records import (
    CaseEventRow,
    CaseRow,
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

T = TypeVar("T")


def connection_locks(conn: Any) -> str:
    """What makes a read lock its rows until COMMIT on this connection (a
    read-modify-write): `` FOR UPDATE`` on a server (``PgConnection.row_lock``), nothing
    on SQLite, whose write transaction holds the one write lock from its BEGIN
    IMMEDIATE."""
    return getattr(conn, "row_lock", "")


class StoreError(ExchangeError):
    """The database itself failed (I/O error, disk full, locked, corrupt, closed).

    Not the caller's fault; nothing of the failed call was written. Codes:
    ``store_unavailable`` (retry later), ``store_closed``, ``store_schema_too_new``,
    ``store_not_ours``, ``store_dir_missing``, ``store_sqlite_too_old``.
    """

    status = 503


@runtime_checkable
class Store(Protocol):
    """Everything the node keeps durably. See the module docstring for sync/async rules."""

    # --- units of work ---------------------------------------------------------------------

    def attach_audit(self, appender: Callable[[Any, Sequence[Any]], range]) -> None:
        """Where transactions append leaves (``AuditLog.append_on``), set once by the
        composition root."""
        ...

    async def transaction(
        self, work: Callable[[Any], T], *, label: str, weight: int = 1, background: bool = False
    ) -> T:
        """Run ``work(tx)`` in one transaction; its result once committed. All or nothing.
        ``background`` work (catch-up, retention) waits while other work is waiting."""
        ...

    async def append_audit(self, events: Sequence[Any]) -> range:
        """Leaves that record no other change, in a transaction of their own."""
        ...

    # --- documents index and cases (reads; writes go through a transaction) --------------

    def notice(self, notice_id: str) -> NoticeRow | None: ...

    def notice_superseded_by(self, notice_id: str) -> str | None: ...

    def notices_for_document(self, issuing_state: str, number: str) -> list[NoticeRow]: ...

    def count_notices(self) -> int: ...

    def case(self, case_ref: str) -> CaseRow | None: ...

    def case_events(self, case_ref: str) -> list[CaseEventRow]: ...

    def case_page(
        self, *, before: tuple[int, str] | None = None, limit: int = 100
    ) -> list[CaseRow]:
        """Cases newest first, after the keyset ``before`` = (opened_at, case_ref)."""
        ...

    # --- outbox (FIFO per peer) -----------------------------------------------------------

    async def enqueue(self, items: Sequence[OutboxItem]) -> list[int]:
        """Queue envelopes, all or none; returns their outbox ids in item order.

        Durable on return. Raises ``NotFoundError(peer_not_found)`` for an unknown peer,
        ``ConflictError(message_id_exists)`` if (peer, message id) is already queued or
        sent, ``ValidationError`` for a malformed item.
        """
        ...

    def pending(self, peer_id: str, limit: int, lane: Lane | None = None) -> list[OutboxRow]:
        """Up to ``limit`` queued rows for the peer, oldest (lowest id) first: of one
        ``lane`` (the worker sends each on its own), or of both when None."""
        ...

    async def record_receipt(
        self,
        peer_id: str,
        receipt: ReceiptRecord,
        outcomes: Sequence[tuple[int, Outcome, str | None]],
    ) -> int:
        """Store a peer's signed receipt and apply its outcomes, in one transaction.

        ``outcomes`` holds (outbox id, outcome, reason). ACCEPTED and DUPLICATE rows become
        ``delivered`` (payload erased), REJECTED rows ``dead`` with the reason. Rows no
        longer queued are left as they are (the first receipt wins). Returns the receipt
        id. Raises ``ValidationError(outbox_id_unknown)`` if an id is not this peer's.
        """
        ...

    async def record_attempt(
        self, peer_id: str, outbox_ids: Sequence[int], at: int, error: str | None
    ) -> None:
        """Count one delivery attempt on these queued rows (``error`` None on success)."""
        ...

    async def replace_envelope(self, outbox_id: int, envelope: bytes) -> None:
        """Replace a queued or dead row's envelope (re-sealed after a key rotation)."""
        ...

    async def retry_dead_letter(self, outbox_id: int, *, audit: Any = ()) -> OutboxRow:
        """Put a dead row back in its queue at its original position (id order), its
        acknowledgement (if any) gone; returns the row as it was (dead)."""
        ...

    async def acknowledge_dead_letter(
        self, outbox_id: int, actor: str, at: int, *, audit: Any = ()
    ) -> OutboxRow:
        """Mark a dead row as dealt with by ``actor``: kept, but no longer counted or
        listed as a dead letter needing a person."""
        ...

    def queue_stats(self) -> list[QueueStats]:
        """Per-peer queue summary, ordered by peer id."""
        ...

    def message_status(self, message_id: bytes) -> list[DeliveryRow]:
        """One row per recipient of the message, ordered by peer id; empty if unknown."""
        ...

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
        """Sent messages' rows (one per recipient), newest first, before ``before_id``."""
        ...

    def get_receipt(self, receipt_id: int) -> StoredReceipt | None: ...

    def get_outbox(self, outbox_id: int) -> OutboxRow | None:
        """One outbox row; its sealed envelope is kept after delivery as evidence."""
        ...

    def dead_letters(
        self, peer_id: str | None = None, limit: int = 1000, *, acknowledged: bool = False
    ) -> list[OutboxRow]:
        """Dead rows not acknowledged (oldest first), for one peer or all; with
        ``acknowledged`` the acknowledged ones too."""
        ...

    def dead_letter_page(
        self,
        *,
        peer_id: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        include_acknowledged: bool = False,
    ) -> list[DeadLetter]:
        """Dead rows after ``after_id`` in id order; unacknowledged ones only by default."""
        ...

    # --- inbox -------------------------------------------------------------------------

    async def accept(self, items: Sequence[InboxItem]) -> list[InboxOutcome]:
        """De-duplicate and store verified envelopes; one outcome per item, in order.

        ACCEPTED rows are durable on return. De-duplication by (sender, message id) holds
        for the retention window even after the inbox rows themselves were purged.
        """
        ...

    def inbox_feed(
        self, after_cursor: int, limit: int, kinds: Sequence[str] | None = None
    ) -> list[InboxRow]:
        """Rows with cursor > ``after_cursor``, ascending, optionally only these kinds."""
        ...

    def get_inbox(self, sender: str, message_id: bytes) -> InboxRow | None: ...

    async def purge_before(self, t: int, *, seen_before: int | None = None) -> PurgeResult:
        """Retention: drop inbox rows received before ``t``; drop de-duplication entries,
        sent receipts and idempotency records first seen before ``seen_before`` (default
        ``t``)."""
        ...

    # --- receipts this node sent ---------------------------------------------------------

    async def store_sent_receipt(
        self, peer_id: str, batch_id: bytes, receipt: bytes, at: int | None = None
    ) -> bytes:
        """Keep the receipt answering a peer's batch; returns the receipt stored for that
        batch (the first one, if the batch was already answered)."""
        ...

    def get_sent_receipt(self, peer_id: str, batch_id: bytes) -> bytes | None: ...

    # --- idempotency keys of the local API -----------------------------------------------

    def idempotency_record(self, token_id: int, key: str) -> IdempotencyRecord | None:
        """The answer kept for a token's ``Idempotency-Key``, or None. Records are only
        written inside the transaction of the submission they answer
        (``tx.remember_idempotency``), so a record means the submission is stored, and
        the other way round; a second record for the same (token, key) is refused with
        ``ConflictError(idempotency_key_exists)`` and rolls that transaction back."""
        ...

    # --- peers -------------------------------------------------------------------------

    async def upsert_peer(
        self,
        node_id: str,
        card: bytes,
        fingerprint: str,
        at: int,
        policy: Sequence[str] | None = None,
    ) -> PeerRecord:
        """Pin a peer's card, or replace the pinned card. ``policy`` None keeps the current
        policy (empty for a new peer)."""
        ...

    def get_peer(self, node_id: str) -> PeerRecord | None: ...

    def list_peers(self) -> list[PeerRecord]: ...

    async def remove_peer(self, node_id: str, force: bool = False) -> int:
        """Unpin a peer. Refuses with ``ConflictError(peer_has_queued_messages)`` while it
        has queued messages, unless ``force``: they then become dead letters with reason
        ``peer_removed``. Returns how many were so marked."""
        ...

    async def set_paused(self, node_id: str, paused: bool, at: int) -> None: ...

    async def set_policy(self, node_id: str, kinds: Sequence[str], at: int) -> None: ...

    async def touch_contact(self, peer_id: str, at: int, error: str | None) -> None:
        """Record a contact: success (``error`` None) or failure with its error text."""
        ...

    # --- tokens ------------------------------------------------------------------------

    async def create_token(
        self, name: str, role: str, secret: str, at: int, *, expires_at: int | None = None
    ) -> TokenRecord:
        """Store a token under the SHA-256 of ``secret``; the secret itself is not kept.
        ``expires_at`` (ms, after ``at``): when it stops being accepted; None: never."""
        ...

    def find_active_token(self, secret_hash: bytes) -> TokenRecord | None:
        """The token not revoked with that hash, expired or not (the caller refuses an
        expired one with its own code)."""
        ...

    def list_tokens(self, include_revoked: bool = False) -> list[TokenRecord]: ...

    async def revoke_token(self, name_or_id: str | int, at: int) -> TokenRecord: ...

    def get_token(self, token_id: int) -> TokenRecord | None: ...

    # --- console sessions (revoking a token deletes its sessions) ------------------------

    async def create_console_session(self, session: ConsoleSession) -> ConsoleSession:
        """Keep a new session, deleting expired ones."""
        ...

    def console_session(self, id_hash: bytes) -> ConsoleSession | None: ...

    async def touch_console_session(self, id_hash: bytes, at: int) -> None: ...

    async def delete_console_session(self, id_hash: bytes) -> bool: ...

    # --- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None: ...

    async def set_meta(self, key: str, value: bytes) -> None: ...

    # --- several processes on one database (PostgreSQL; SQLite: one process) -----------

    async def claim_delivery(self, peer_id: str, owner: str, ttl_s: float) -> bool:
        """Hold the lease on ``peer_id``'s queue for ``ttl_s`` more seconds (claim or
        renew); False while another live process holds it (``delivery/leases.py``)."""
        ...

    async def release_delivery(self, peer_ids: Sequence[str], owner: str) -> None: ...

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Hear what other processes change (``outbox:<peer>``, ``peers``, ``tokens``,
        ``meta``; ``*`` after an interruption) on the caller's loop; returns the stop."""
        ...

    def audit_connection(self) -> Any:
        """The connection ``AuditLog(store.path, connection=...)`` reads through, or
        None: the log opens the database file itself."""
        ...

    # --- operations ----------------------------------------------------------------------

    # --- witnessing (writes go through a transaction: ``witness_log``,
    # ``set_witness_log``, ``add_cosignature``) ----------------------------------------

    def witness_logs(self) -> list[WitnessLogRow]:
        """As a witness: the latest checkpoint cosigned per log origin."""
        ...

    def cosignatures(self, tree_size: int | None = None) -> list[CosignatureRow]:
        """Witnesses' cosignatures on this node's own checkpoints."""
        ...

    def cosigned_size(self, witness: str, key_id: bytes) -> int:
        """The largest size of our checkpoints that witness key has cosigned (0: none)."""
        ...

    def writer_stats(self) -> WriterStats: ...

    def wal_bytes(self) -> int | None:
        """The size of the write-ahead log file now; None where the database server
        keeps its own."""
        ...

    async def info(self) -> StoreInfo: ...

    async def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it; False if readers
        kept part of it from being copied (try again later)."""
        ...

    async def integrity_check(self) -> list[str]:
        """Problems found by a full integrity check; empty when the database is sound."""
        ...

    async def close(self) -> None:
        """Finish every queued write, then close. Later calls raise ``store_closed``."""
        ...
