"""The node's audit log: leaves, Merkle nodes and checkpoints on their own SQLite file.

Storage (``docs/audit-format.md`` describes it for auditors):

- ``leaves(seq, data, hash, ...)``: the exact leaf bytes, their RFC 9162 leaf hash and
  copies of a few fields for queries, ``subject_hash`` among them (``verify`` checks the
  copies against the bytes; the tree commits to the bytes only);
- ``nodes(level, idx, hash)``: the hash of every *complete* subtree above the leaves,
  the one covering leaves ``[idx * 2^level, (idx + 1) * 2^level)``. An append adds one
  leaf and on average one node (O(log n) at worst); any root, inclusion or consistency
  proof for any size reads O(log n) stored hashes, so proofs at ten million leaves need
  no rebuild;
- ``checkpoints``: every checkpoint this log signed, at most one per size;
- ``peer_checkpoints``: checkpoints witnessed from peers, including inconsistent ones
  (they are the evidence).

Durability: WAL with ``synchronous=FULL``; a call that returns has committed. Group
commit is the caller's choice: :meth:`AuditLog.append_many` writes any number of leaves
in one transaction (one fsync). The object is synchronous and quick; asyncio code calls
it directly or batches through :class:`exchange_node.audit.writer.AuditWriter`. A lock
makes it safe to share between threads; several processes may open the same file
(writes take SQLite's write lock and re-read the tree size first).
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit import leaves, merkle
from exchange_node.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    legacy_origin_for,
    node_of_origin,
    origin_for,
    parse_checkpoint,
    sign_checkpoint,
    verify_log_checkpoint,
)
from exchange_node.audit.leaf import AuditEvent, LeafKind, LeafRecord, decode_leaf, encode_leaf
from exchange_node.audit.verify import Verifier, VerifyReport
from exchange_node.errors import ConflictError, ExchangeError, NotFoundError, ValidationError
from exchange_node.store.base import connection_locks
from exchange_node.store.migrations import (
    APPLICATION_ID,
    AUDIT_COSIGNATURES,
    AUDIT_SUBJECT,
    AUDIT_TABLES,
)

FORMAT = "exchange-node-audit/1"

_SCHEMA = ";\n".join((*AUDIT_TABLES, AUDIT_COSIGNATURES)) + ";"

_QUERY_MAX = 10_000


def _corrupt(message: str, field: str | None = None) -> ExchangeError:
    return ExchangeError("audit_log_corrupt", message + "; run `exchange-node audit verify`", field)


@dataclass(frozen=True)
class StoredLeaf:
    """One leaf as stored: its index and exact bytes."""

    seq: int
    data: bytes

    @property
    def record(self) -> LeafRecord:
        return decode_leaf(self.data)


@dataclass(frozen=True)
class InclusionProof:
    """Leaf ``seq`` (bytes ``leaf``) is in the tree that ``checkpoint`` signs.

    ``hashes`` is the RFC 9162 audit path, leaf end first.
    """

    seq: int
    leaf: bytes
    hashes: tuple[bytes, ...]
    checkpoint: SignedCheckpoint

    @property
    def tree_size(self) -> int:
        return self.checkpoint.tree_size


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old_size`` leaves with ``old_root`` is a prefix of the tree that
    ``checkpoint`` signs. ``old_checkpoint`` is this log's own signed checkpoint at
    ``old_size`` when it has one."""

    old_size: int
    old_root: bytes
    hashes: tuple[bytes, ...]
    checkpoint: SignedCheckpoint
    old_checkpoint: SignedCheckpoint | None


PeerStatus = Literal["first", "consistent", "unchanged", "stale", "inconsistent"]


@dataclass(frozen=True)
class PeerCheckpointResult:
    """What :meth:`AuditLog.record_peer_checkpoint` concluded.

    ``inconsistent`` means the peer signed two checkpoints that cannot both be true (a
    fork or a rewritten log) or could not prove they can: raise the alarm. ``reason``
    is a stable code, ``audit_seq`` the ``checkpoint.inconsistent`` leaf appended.
    """

    peer: str
    status: PeerStatus
    old_size: int | None
    new_size: int
    reason: str = ""
    audit_seq: int | None = None

    @property
    def consistent(self) -> bool:
        return self.status != "inconsistent"


@dataclass(frozen=True)
class LeafFilter:
    """Filters for :meth:`AuditLog.query`. Times are unix ms; ``since`` is inclusive,
    ``until`` exclusive; ``after_seq`` continues a previous page."""

    since: int | None = None
    until: int | None = None
    peer: str | None = None
    kind: str | None = None
    message_id: str | None = None
    actor: str | None = None
    after_seq: int | None = None
    limit: int | None = None  # None: 1,000 for query, everything for iter_query
    # The console's newest-first pages: leaves before ``before_seq``, highest seq first.
    before_seq: int | None = None
    newest_first: bool = False
    # Leaves about one document or case (its keyed hash), by the indexed column.
    subject_hash: str | None = None


ConsistencyProofFn = Callable[[int, int], Sequence[bytes]]


class AuditLog:
    """An append-only, RFC 9162 Merkle-tree audit log with signed checkpoints.

    ``node_id`` names the log (origin ``exchange-node.example/<node_id>``, which is also
    the checkpoint key name; a log created before that origin keeps
    ``exchange-node/<node_id>/audit`` until it is opened with its signing key, which
    changes it once, recorded by an ``audit.origin_changed`` leaf). ``signing_key`` may
    be omitted for reading, proving and verifying; signing checkpoints and recording
    peer checkpoints then raise.
    ``create=False`` refuses to create a missing file (``audit_log_missing``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        node_id: str,
        signing_key: Ed25519PrivateKey | None = None,
        create: bool = True,
        connection: Any = None,
    ) -> None:
        self.path = Path(path)
        self.node_id = node_id
        self.origin = origin_for(node_id)
        self._key = signing_key
        self._lock = threading.RLock()
        if connection is not None:
            # The store's database on a server (``Store.audit_connection``): the tables
            # come with its migration 3; the connection speaks the same SQL.
            self._db = connection
        else:
            self._db = self._open_file(create)
        self._frontier: merkle.Frontier | None = None
        self._writer_frontier: merkle.Frontier | None = None  # append_on's, one thread
        self._last_signed: tuple[int, bytes] | None = None
        # Why the database refused the latest write transaction (disk full, read-only
        # file system, ...); None once a later one committed. Read for readiness.
        self.write_failure: str | None = None
        with self._transaction():
            self._init_meta()

    def _open_file(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise NotFoundError("audit_log_missing", f"no audit log at {self.path}", "path")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # Acknowledged entries must survive power loss: FULL syncs the WAL on commit.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        # Appends rewrite the same tail pages commit after commit; a larger WAL lets a
        # checkpoint copy each page once instead of many times (measured: +30% appends).
        db.execute("PRAGMA wal_autocheckpoint=4000")
        db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        _add_subject_column(db)
        return db

    @classmethod
    def open(cls, path: str | Path, signing_key: Ed25519PrivateKey | None = None) -> AuditLog:
        """Open an existing log, whichever node it belongs to (tools, auditors).

        Raises ``audit_log_missing`` if there is no file, ``audit_log_format`` if it is
        not an audit log.
        """
        path = Path(path)
        if not path.is_file():
            raise NotFoundError("audit_log_missing", f"no audit log at {path}", "path")
        try:
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
                row = db.execute("SELECT value FROM audit_meta WHERE key = 'origin'").fetchone()
            db.close()
        except sqlite3.DatabaseError:
            row = None
        node_id = node_of_origin(str(row[0]) if row else "")
        if node_id is None:
            raise ValidationError("audit_log_format", f"{path} is not an audit log", "path")
        return cls(path, node_id=node_id, signing_key=signing_key, create=False)

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_meta(self) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM audit_meta").fetchall())
        if not rows and connection_locks(self._db):
            # Two processes opening a new database at once: one writes the meta rows.
            self._db.execute("LOCK TABLE audit_meta IN EXCLUSIVE MODE")
            rows = dict(self._db.execute("SELECT key, value FROM audit_meta").fetchall())
        if not rows:
            self._db.executemany(
                "INSERT INTO audit_meta(key, value) VALUES (?, ?)",
                [("format", FORMAT), ("origin", self.origin), ("tree_size", 0)],
            )
            rows = {"format": FORMAT, "origin": self.origin}
        if rows.get("format") != FORMAT:
            raise ValidationError(
                "audit_log_format", f"{self.path} is not an audit log in {FORMAT}", "path"
            )
        stored = rows.get("origin")
        if stored != self.origin and stored == legacy_origin_for(self.node_id):
            if self._key is None:
                self.origin = str(stored)  # read as it is; the node changes it
            else:
                self._change_origin(str(stored))
        elif stored != self.origin:
            raise ValidationError(
                "audit_log_origin_mismatch",
                f"{self.path} belongs to {stored!r}, not {self.origin!r}",
                "node_id",
            )
        self._record_public_key()

    def _change_origin(self, legacy: str) -> None:
        """Sign from now on under the current origin; recorded by a leaf in the same
        transaction. Checkpoints signed before keep the legacy origin and verify as they
        are (``verify_log_checkpoint``); the tree is the same."""
        self._db.execute("UPDATE audit_meta SET value = ? WHERE key = 'origin'", (self.origin,))
        frontier = merkle.Frontier(
            self._stored_size(),
            [self._node(lv, i) for lv, i in merkle.frontier_nodes(self._stored_size())],
        )
        _append_rows(self._db, frontier, [leaves.origin_changed(_now_ms(), legacy, self.origin)])

    def _record_public_key(self) -> None:
        if self._key is not None:
            pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            # Recorded for bundles' convenience only; verification takes the key from
            # the caller, never from the file it is checking.
            self._db.execute(
                "INSERT INTO audit_meta(key, value) VALUES ('public_key', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (pub,),
            )

    def stored_public_key(self) -> bytes | None:
        """The public key last used to sign here, as recorded in the file (untrusted)."""
        row = self._db.execute("SELECT value FROM audit_meta WHERE key = 'public_key'").fetchone()
        return _meta_bytes(row[0]) if row else None

    class _Txn:
        def __init__(self, log: AuditLog, write: bool) -> None:
            self.log, self.write = log, write

        def __enter__(self) -> None:
            self.log._lock.acquire()
            try:
                self.log._db.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
            except BaseException as exc:
                self._outcome(exc)
                self.log._lock.release()
                raise

        def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
            try:
                try:
                    self.log._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                except BaseException as ending:
                    self._outcome(ending)
                    raise
                self._outcome(exc)
            finally:
                self.log._lock.release()

        def _outcome(self, exc: BaseException | None) -> None:
            """Note how a write transaction ended: committed (None), refused by the
            database, or failed for another reason (says nothing either way)."""
            if not self.write:
                return
            if exc is None:
                self.log.write_failure = None
            elif _storage_failure(exc):
                self.log.write_failure = f"{type(exc).__name__}: {exc}"

    def _transaction(self, write: bool = True) -> AuditLog._Txn:
        return AuditLog._Txn(self, write)

    # -- tree access --------------------------------------------------------------

    def _stored_size(self, lock: bool = False) -> int:
        """The committed tree size; ``lock``: locked until COMMIT (write transactions
        on a server, so appends from several processes take turns)."""
        sql = _TREE_SIZE + (connection_locks(self._db) if lock else "")
        return int(self._db.execute(sql).fetchone()[0])

    def _node(self, level: int, idx: int) -> bytes:
        return _node_on(self._db, level, idx)

    def _subtree_hash(self, start: int, end: int) -> bytes:
        return merkle.fold_right([self._node(lv, i) for lv, i in merkle.range_nodes(start, end)])

    def _root_at(self, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.fold_right([self._node(lv, i) for lv, i in merkle.frontier_nodes(size)])

    def _current_frontier(self, lock: bool = False) -> merkle.Frontier:
        """The in-memory frontier, reloaded if another writer grew the log."""
        size = self._stored_size(lock)
        if self._frontier is None or self._frontier.size != size:
            nodes = merkle.frontier_nodes(size)
            self._frontier = merkle.Frontier(size, [self._node(lv, i) for lv, i in nodes])
        return self._frontier

    @property
    def size(self) -> int:
        """Number of leaves committed."""
        with self._lock:
            return self._stored_size()

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH of the first ``tree_size`` leaves (default: all)."""
        with self._transaction(write=False):
            size = self._stored_size()
            if tree_size is None:
                return self._current_frontier().root()
            if not 0 <= tree_size <= size:
                raise NotFoundError("tree_size_unknown", f"log has {size} leaves", "tree_size")
            return self._root_at(tree_size)

    # -- appending -----------------------------------------------------------------

    def probe_write(self, now: int) -> None:
        """Commit a small write that adds no leaf (the time of this probe in ``meta``):
        proves the log can still be written while nothing is appended. Raises like an
        append would; :attr:`write_failure` records the outcome either way."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO audit_meta(key, value) VALUES ('write_probe', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (now,),
            )

    def append(self, event: AuditEvent) -> int:
        """Append one leaf durably; return its seq. One transaction (one fsync)."""
        return self.append_many((event,)).start

    def append_many(self, events: Iterable[AuditEvent]) -> range:
        """Append leaves in order, in one transaction of this object's own connection;
        return their seqs (stand-alone logs: tools, tests, benchmarks).

        All or nothing: when it returns every leaf is committed (fsynced); when it
        raises none is. A node appends through :meth:`append_on` instead, inside the
        transaction of the change the leaves record.
        """
        with self._lock, self._transaction():
            frontier = self._current_frontier(lock=True).copy()
            seqs = _append_rows(self._db, frontier, events)
            # If the commit fails the frontier is reloaded from the file next time.
            self._frontier = None
        self._frontier = frontier
        return seqs

    def append_on(self, conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> range:
        """Append leaves on ``conn``, inside the transaction the caller has open on the
        same database; return their seqs. Durable when, and only if, that transaction
        commits: a change and the leaves recording it stand or fall together.

        Called by one thread only (the store's writer). Its frontier is cached for that
        thread and trusted only while the tree size ``conn`` sees matches it, so a
        rolled-back append is never built upon.
        """
        size = int(conn.execute(_TREE_SIZE + connection_locks(conn)).fetchone()[0])
        frontier = self._writer_frontier
        if frontier is None or frontier.size != size:
            nodes = merkle.frontier_nodes(size)
            frontier = merkle.Frontier(size, [_node_on(conn, lv, i) for lv, i in nodes])
        frontier = frontier.copy()
        seqs = _append_rows(conn, frontier, events)
        self._writer_frontier = frontier
        return seqs

    # -- checkpoints ---------------------------------------------------------------

    def _checkpoint_row(self, tree_size: int | None) -> SignedCheckpoint | None:
        if tree_size is None:
            row = self._db.execute(
                "SELECT note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT note FROM audit_checkpoints WHERE tree_size = ?", (tree_size,)
            ).fetchone()
        if row is None:
            return None
        checkpoint, _ = parse_checkpoint(row[0])
        return SignedCheckpoint(checkpoint, row[0])

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The largest checkpoint this log has signed, or None."""
        with self._transaction(write=False):
            return self._checkpoint_row(None)

    def cosignature_lines(self, tree_size: int) -> list[str]:
        """Witnesses' cosignature lines kept for our checkpoint of ``tree_size`` (each
        with its newline), by witness name: appended to the note they make it a
        cosigned checkpoint any signed-note verifier reads."""
        with self._lock:
            rows = self._db.execute(
                "SELECT line FROM audit_cosignatures WHERE tree_size = ? ORDER BY witness, key_id",
                (tree_size,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every checkpoint signed here, smallest first."""
        with self._transaction(write=False):
            rows = self._db.execute(
                "SELECT note FROM audit_checkpoints ORDER BY tree_size"
            ).fetchall()
        return [SignedCheckpoint(parse_checkpoint(n)[0], n) for (n,) in rows]

    def sign_checkpoint(self, now: int) -> SignedCheckpoint:
        """Sign and store a checkpoint of the whole log as it is now; return it.

        Never signs a checkpoint inconsistent with one signed before: the tree must
        contain the last signed tree (same root at that size), checked against both the
        checkpoints table and the last signature this object made. Raises
        ``ConflictError`` (``checkpoint_inconsistent``) otherwise, and
        ``audit_log_read_only`` without a signing key. If nothing was appended since the
        last checkpoint, returns that one.
        """
        if self._key is None:
            raise ConflictError("audit_log_read_only", "no signing key: cannot sign", "signing_key")
        with self._transaction():
            frontier = self._current_frontier(lock=True)
            size, root = frontier.size, frontier.root()
            last = self._checkpoint_row(None)
            previous = [(last.tree_size, last.root_hash)] if last else []
            if self._last_signed:
                previous.append(self._last_signed)
            for old_size, old_root in previous:
                if old_size > size or self._root_at(old_size) != old_root:
                    raise ConflictError(
                        "checkpoint_inconsistent",
                        f"the log no longer extends the checkpoint signed at size {old_size}:"
                        " refusing to sign; the log was altered",
                        "tree_size",
                    )
            if last is not None and last.tree_size == size:
                self._last_signed = (size, root)
                return last
            signed = sign_checkpoint(Checkpoint(self.origin, size, root), self._key, self.origin)
            self._db.execute(
                "INSERT INTO audit_checkpoints(tree_size, root, time, note) VALUES (?, ?, ?, ?)",
                (size, root, now, signed.note),
            )
            self._record_public_key()
        self._last_signed = (size, root)
        return signed

    def _require_checkpoint(self, tree_size: int | None) -> SignedCheckpoint:
        cp = self._checkpoint_row(tree_size)
        if cp is None:
            what = "no signed checkpoint yet" if tree_size is None else f"none at size {tree_size}"
            raise NotFoundError(
                "checkpoint_not_found",
                f"{what}; sign one first (the node does periodically)",
                "tree_size",
            )
        return cp

    # -- proofs ----------------------------------------------------------------------

    def leaf(self, seq: int) -> StoredLeaf:
        """The stored leaf at ``seq``. Raises ``NotFoundError`` (``leaf_not_found``)."""
        with self._lock:
            row = self._db.execute("SELECT data FROM audit_leaves WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise NotFoundError("leaf_not_found", f"no leaf at seq {seq}", "seq")
        return StoredLeaf(seq, row[0])

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Prove leaf ``seq`` is in the signed checkpoint of ``tree_size`` leaves (default:
        the latest signed checkpoint).

        The proof is verified against the checkpoint's root before it is returned.
        Raises ``checkpoint_not_found`` if there is no such checkpoint,
        ``leaf_not_in_checkpoint`` if it does not cover ``seq`` yet, ``audit_log_corrupt``
        if the stored tree does not match what was signed.
        """
        with self._transaction(write=False):
            cp = self._require_checkpoint(tree_size)
            if not 0 <= seq < cp.tree_size:
                raise NotFoundError(
                    "leaf_not_in_checkpoint",
                    f"seq {seq} is not covered by the checkpoint of size {cp.tree_size};"
                    " wait for the next checkpoint",
                    "seq",
                )
            row = self._db.execute("SELECT data FROM audit_leaves WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                raise _corrupt(f"leaf {seq} is missing", "seq")
            path = merkle.inclusion_proof(seq, cp.tree_size, self._subtree_hash)
        proof = InclusionProof(seq, row[0], tuple(path), cp)
        try:
            merkle.verify_inclusion(
                seq, cp.tree_size, merkle.leaf_hash(proof.leaf), path, cp.root_hash
            )
        except merkle.ProofError:
            raise _corrupt(f"leaf {seq} or its tree differs from what was signed", "seq") from None
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Prove the tree of ``old_size`` leaves is a prefix of the signed checkpoint of
        ``new_size`` leaves (default: the latest). ``0 < old_size <= new_size``.

        Verified before it is returned; raises like :meth:`inclusion_proof`, and
        ``consistency_size_invalid`` for sizes out of range.
        """
        with self._transaction(write=False):
            cp = self._require_checkpoint(new_size)
            if not 0 < old_size <= cp.tree_size:
                raise ValidationError(
                    "consistency_size_invalid",
                    f"old size must be 1..{cp.tree_size} (the checkpoint's size)",
                    "old_size",
                )
            old_root = self._root_at(old_size)
            old_cp = self._checkpoint_row(old_size)
            path = merkle.consistency_proof(old_size, cp.tree_size, self._subtree_hash)
        try:
            merkle.verify_consistency(old_size, cp.tree_size, old_root, cp.root_hash, path)
            if old_cp is not None and old_cp.root_hash != old_root:
                raise merkle.ProofError("proof_root_mismatch", "old checkpoint differs")
        except merkle.ProofError:
            raise _corrupt("the stored tree differs from what was signed") from None
        return ConsistencyProof(old_size, old_root, tuple(path), cp, old_cp)

    def consistency_hashes(self, old_size: int, new_size: int) -> list[bytes]:
        """Bare consistency proof between two sizes (answers a peer's request)."""
        with self._transaction(write=False):
            size = self._stored_size()
            if not 0 < old_size <= new_size <= size:
                raise ValidationError(
                    "consistency_size_invalid",
                    f"sizes must satisfy 0 < old <= new <= {size}",
                    "old_size",
                )
            return merkle.consistency_proof(old_size, new_size, self._subtree_hash)

    # -- queries ---------------------------------------------------------------------

    def query(
        self,
        since: int | None = None,
        until: int | None = None,
        peer: str | None = None,
        kind: str | None = None,
        message_id: str | None = None,
        actor: str | None = None,
        limit: int = 1000,
        after_seq: int | None = None,
    ) -> list[StoredLeaf]:
        """Leaves matching every given filter, in seq order, at most ``limit`` (<= 10,000).

        Times are unix ms, ``since`` inclusive, ``until`` exclusive; ``after_seq``
        continues from a previous page. Results come from the leaf bytes' index columns,
        which :meth:`verify` checks.
        """
        return self.select(
            LeafFilter(since, until, peer, kind, message_id, actor, after_seq, limit)
        )

    def select(self, f: LeafFilter) -> list[StoredLeaf]:
        """:meth:`query` with the filters in one value."""
        where, args = _where(f)
        limit = 1000 if f.limit is None else f.limit
        if not 0 < limit <= _QUERY_MAX:
            raise ValidationError("limit_invalid", f"limit must be 1..{_QUERY_MAX}", "limit")
        sql = "SELECT seq, data FROM audit_leaves" + where
        sql += " ORDER BY seq DESC LIMIT ?" if f.newest_first else " ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [StoredLeaf(seq, data) for seq, data in rows]

    def count(self, f: LeafFilter) -> int:
        """How many leaves match ``f``'s filters (its limit and order aside): the total a
        long export shows its progress against."""
        where, args = _where(f)
        with self._lock:
            return int(
                self._db.execute("SELECT count(*) FROM audit_leaves" + where, args).fetchone()[0]
            )

    def iter_query(self, flt: LeafFilter) -> Iterator[StoredLeaf]:
        """Matching leaves in seq order, ``flt.limit`` of them or all if None, fetched a
        page at a time (each page is one consistent read)."""
        after, left = flt.after_seq, flt.limit
        while left is None or left > 0:
            size = _QUERY_MAX if left is None else min(left, _QUERY_MAX)
            page = self.select(dataclasses.replace(flt, after_seq=after, limit=size))
            yield from page
            if len(page) < size:
                return
            after = page[-1].seq
            if left is not None:
                left -= len(page)

    # -- verification ------------------------------------------------------------------

    def set_signing_key(self, signing_key: Ed25519PrivateKey) -> None:
        """Sign future checkpoints with a new key (after the node rotated its keys).

        The public key recorded in the file changes with it, in the same step: exports
        and proofs name the key of the checkpoint they use, and earlier checkpoints stay
        signed by the key current when they were signed.
        """
        with self._lock:
            self._key = signing_key
        # If this write fails, the next checkpoint records the key (it signs with it).
        with self._transaction():
            self._record_public_key()

    def verify(
        self,
        public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Recompute the whole tree from the stored leaves and check everything.

        Checks, in leaf order: leaves are numbered 0..n-1 without gaps; each leaf's bytes
        decode as a canonical leaf record carrying its own seq, hash to the stored leaf
        hash and agree with the query columns; every stored node equals the recomputed
        subtree; every stored checkpoint's note is well-formed, signed by
        ``public_key`` (the signing key's public half if omitted; pass the key you trust,
        never one read from the file; or every key the node has signed with) and its root equals the recomputed root at its
        size. Problems name the first leaf they concern. ``progress``, if given, is told
        how many leaves have been checked, every 10,000.
        """
        if public_key is None and self._key is not None:
            public_key = self._key.public_key()
        with self._transaction(write=False):
            return Verifier(self._db, self.origin, public_key, progress=progress).run()

    # -- witnessing peers -------------------------------------------------------------

    def record_peer_checkpoint(
        self,
        peer_id: str,
        note_text: str,
        public_key: Ed25519PublicKey,
        consistency_proof_fn: ConsistencyProofFn,
        *,
        now: int,
    ) -> PeerCheckpointResult:
        """Check a peer's signed checkpoint against the last one held from that peer.

        The note must verify under ``public_key`` with the peer's origin
        ``exchange-node.example/<peer_id>`` (or, signed before it changed, its legacy one)
        as key name (else ``ValidationError``, nothing stored). ``consistency_proof_fn(old_size, new_size)`` asks the peer for a proof
        between two of its sizes; it raises an ``ExchangeError`` when the peer answers
        that it cannot give one (counted as not proved), anything else (transport
        failures) propagates and nothing is stored.

        A consistent newer checkpoint is stored and becomes the one held. A stale
        (older but consistent) or unchanged one is not stored. An inconsistent one is
        stored as evidence, a ``checkpoint.inconsistent`` leaf is appended, and the
        result says so: raising the alarm is the caller's job.
        """
        new = verify_log_checkpoint(note_text, origin_for(peer_id), public_key)
        new_size, new_root = new.tree_size, new.root_hash
        with self._lock:
            row = self._db.execute(
                "SELECT tree_size, root FROM audit_peer_checkpoints WHERE peer = ?"
                " AND status IN ('first', 'consistent') ORDER BY tree_size DESC LIMIT 1",
                (peer_id,),
            ).fetchone()
        if row is None:
            return self._store_peer(peer_id, new, now, "first", "", None)
        old_size, old_root = row[0], bytes(row[1])
        if new_size == old_size:
            if new_root == old_root:
                return PeerCheckpointResult(peer_id, "unchanged", old_size, new_size)
            reason = "checkpoint_fork"
        elif new_size > old_size:
            reason = "checkpoint_inconsistent"
            if old_size == 0 or _proves(
                consistency_proof_fn, old_size, new_size, old_root, new_root
            ):
                return self._store_peer(peer_id, new, now, "consistent", "", old_size)
        else:
            reason = "checkpoint_rollback"
            if new_size > 0 and _proves(
                consistency_proof_fn, new_size, old_size, new_root, old_root
            ):
                return PeerCheckpointResult(peer_id, "stale", old_size, new_size)
        return self._store_peer(peer_id, new, now, "inconsistent", reason, old_size, old_root)

    def _store_peer(
        self,
        peer_id: str,
        cp: SignedCheckpoint,
        now: int,
        status: PeerStatus,
        reason: str,
        old_size: int | None,
        old_root: bytes | None = None,
    ) -> PeerCheckpointResult:
        alarm = None
        if status == "inconsistent":
            attrs = {"new_size": str(cp.tree_size), "new_root": cp.root_hash.hex()}
            if old_size is not None and old_root is not None:
                attrs |= {"old_size": str(old_size), "old_root": old_root.hex()}
            alarm = AuditEvent(
                time=now,
                kind=LeafKind.CHECKPOINT_INCONSISTENT,
                actor=self.node_id,
                peer=peer_id,
                reason=reason,
                attrs=attrs,
            )
        seq = None
        # The evidence and the leaf raising the alarm: one transaction, so a crash or a
        # full disk never keeps an inconsistent checkpoint the log does not mention.
        with self._transaction():
            self._db.execute(
                "INSERT INTO audit_peer_checkpoints(peer, tree_size, root, time, status, reason, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (peer_id, cp.tree_size, cp.root_hash, now, status, reason, cp.note),
            )
            if alarm is not None:
                frontier = self._current_frontier(lock=True).copy()
                seq = _append_rows(self._db, frontier, (alarm,)).start
                self._frontier = None  # reloaded next time should the commit fail
        if alarm is not None:
            self._frontier = frontier
        return PeerCheckpointResult(peer_id, status, old_size, cp.tree_size, reason, seq)

    def peer_checkpoint(self, peer_id: str) -> SignedCheckpoint | None:
        """The latest consistent checkpoint held from ``peer_id``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM audit_peer_checkpoints WHERE peer = ?"
                " AND status IN ('first', 'consistent') ORDER BY tree_size DESC LIMIT 1",
                (peer_id,),
            ).fetchone()
        return None if row is None else SignedCheckpoint(parse_checkpoint(row[0])[0], row[0])


_TREE_SIZE = "SELECT value FROM audit_meta WHERE key = 'tree_size'"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _meta_bytes(value: Any) -> bytes:
    """A bytes value of ``audit_meta`` (untyped on SQLite; TEXT on PostgreSQL, where
    bytes are kept in its hex form ``\\x...``)."""
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("\\x"))
    return bytes(value)


def _node_on(conn: sqlite3.Connection, level: int, idx: int) -> bytes:
    if level == 0:
        row = conn.execute("SELECT hash FROM audit_leaves WHERE seq = ?", (idx,)).fetchone()
    else:
        row = conn.execute(
            "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?", (level, idx)
        ).fetchone()
    if row is None:
        raise _corrupt(f"Merkle node (level {level}, index {idx}) is missing")
    return row[0]


def _append_rows(
    conn: sqlite3.Connection, frontier: merkle.Frontier, events: Iterable[AuditEvent]
) -> range:
    """Write ``events`` as the next leaves after ``frontier`` (advanced in place), with
    the subtree hashes they complete and the new tree size. The caller owns the
    transaction."""
    start = frontier.size
    leaf_rows = []
    node_rows: list[tuple[int, int, bytes]] = []
    for ev in events:
        seq = frontier.size
        data = encode_leaf(seq, ev)
        h = merkle.leaf_hash(data)
        leaf_rows.append(
            (
                seq,
                data,
                h,
                ev.time,
                str(ev.kind),
                ev.actor,
                ev.peer,
                ev.message_id,
                ev.subject_hash or None,
            )
        )
        node_rows.extend(frontier.push(h))
    if not leaf_rows:
        return range(start, start)
    conn.executemany(
        "INSERT INTO audit_leaves(seq, data, hash, time, kind, actor, peer, message_id,"
        " subject_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        leaf_rows,
    )
    conn.executemany("INSERT INTO audit_nodes(level, idx, hash) VALUES (?, ?, ?)", node_rows)
    conn.execute("UPDATE audit_meta SET value = ? WHERE key = 'tree_size'", (frontier.size,))
    return range(start, frontier.size)


def _where(f: LeafFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its arguments of ``f``'s filters."""
    where, args = [], []
    for column, value in (
        ("peer", f.peer),
        ("kind", f.kind),
        ("message_id", f.message_id),
        ("actor", f.actor),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(str(value))
    if f.since is not None:
        where.append("time >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("time < ?")
        args.append(f.until)
    if f.after_seq is not None:
        where.append("seq > ?")
        args.append(f.after_seq)
    if f.before_seq is not None:
        where.append("seq < ?")
        args.append(f.before_seq)
    if f.subject_hash is not None:
        if not re.fullmatch(r"[0-9a-f]{64}", f.subject_hash):
            raise ValidationError(
                "subject_hash_invalid", "a subject hash is 64 hex digits", "subject_hash"
            )
        where.append("subject_hash = ?")
        args.append(f.subject_hash)
    return (" WHERE " + " AND ".join(where)) if where else "", args


def _add_subject_column(db: sqlite3.Connection) -> None:
    """Give a stand-alone audit file made before the ``subject_hash`` column that column,
    filled from the leaves, in one transaction (as migration 10 does in a node's
    database, which gets it from the store's migrations and is left to them)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(audit_leaves)")}
    if "subject_hash" in columns:
        return
    if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        return  # a node's database: the store migrates it
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(audit_leaves)")}
        if "subject_hash" not in columns:  # not added by another process meanwhile
            for statement in AUDIT_SUBJECT:
                db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _storage_failure(exc: BaseException) -> bool:
    """The database itself refused (disk full, read-only or failing file system, lock
    timeout, corruption), as opposed to a constraint or a misuse by the caller."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError
    )


def _proves(fn: ConsistencyProofFn, m: int, n: int, root_m: bytes, root_n: bytes) -> bool:
    """Whether the peer proves tree (m, root_m) is a prefix of tree (n, root_n).

    A peer that answers with an ``ExchangeError`` (it cannot produce the proof, for
    example because it no longer has the leaves) has not proved it; any other exception
    (transport) propagates.
    """
    try:
        merkle.verify_consistency(m, n, root_m, root_n, list(fn(m, n)))
    except ExchangeError:  # ProofError included
        return False
    return True
