"""Versioned schema of the store, one text for SQLite and PostgreSQL.

``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``; on SQLite the
version lives in ``PRAGMA user_version``, on PostgreSQL in the ``exchange_node_schema``
table. Each migration runs in its own transaction together with the version bump, so a
crash leaves the database at one version or the next, never between. Released
migrations are never edited: a change is a new entry at the end. A database newer than
this code is refused (a downgrade would silently misread it).

PORTABLE SQL. Every statement of the store (migrations and queries alike) is written
once, in the SQLite spelling, and runs on PostgreSQL through
:func:`exchange_node.store.postgresql.translate` (queries: ``?`` placeholders) and
:func:`postgresql_ddl` (migrations). The rules that keep one text valid on both:

- column types INTEGER, TEXT, BLOB, REAL only (on PostgreSQL BIGINT, TEXT, BYTEA,
  DOUBLE PRECISION); ``STRICT`` and ``WITHOUT ROWID`` are dropped there;
- an id the database assigns is ``INTEGER PRIMARY KEY`` (PostgreSQL: an identity
  column); read it back with ``RETURNING id``, never ``cursor.lastrowid``;
- no ``INSERT OR IGNORE/REPLACE``: ``INSERT ... ON CONFLICT (...) DO NOTHING`` or
  ``DO UPDATE SET x = excluded.x``;
- no ``rowid`` (``doc_notices.rowid``, the catch-up cursor, is the one exception: an
  explicit identity column of that name on PostgreSQL), no PRAGMA, no SQLite-only
  function; comparisons are not numbers (``sum(CASE WHEN ... THEN 1 ELSE 0 END)``, not
  ``sum(x = y)``; ``1 = 0``, not ``0``, for false);
- ``?`` placeholders; a literal ``%`` is fine (it is escaped on the way);
- in ``ON CONFLICT ... DO UPDATE SET``, name the existing row's columns with the
  table (``coalesce(excluded.x, peers.x)``): a bare ``x`` is ambiguous on PostgreSQL;
- a failed statement aborts the whole transaction on PostgreSQL: catching a
  ``sqlite3.IntegrityError`` (the PostgreSQL driver's are re-raised as subclasses of
  the ``sqlite3`` ones) is fine to turn it into an error that ends the unit, but to
  carry on after one, wrap the statement in ``tx.savepoint()``;
- triggers and anything else that cannot be spelled once get a PostgreSQL text in
  :data:`POSTGRESQL_OVERRIDES`, keyed by (migration index, statement index).
"""

from __future__ import annotations

import re
import sqlite3

from exchange_node.store.base import StoreError

APPLICATION_ID = 0x45584E44
"""``PRAGMA application_id`` of an exchange-node database ("EXND")."""

# Conventions: STRICT tables (types enforced), times in unix milliseconds, ids from
# AUTOINCREMENT so they are never reused after deletes (cursors and receipt ids stay
# unambiguous). Counters per peer are kept by triggers so queue_stats never scans.
_V1: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE peers (
        node_id         TEXT PRIMARY KEY,
        card            BLOB NOT NULL,
        fingerprint     TEXT NOT NULL,
        added_at        INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        paused          INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
        last_contact_at INTEGER,
        last_error      TEXT,
        last_error_at   INTEGER,
        policy          TEXT NOT NULL DEFAULT '[]'
    ) STRICT
    """,
    """
    CREATE TABLE receipts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        peer_id     TEXT NOT NULL,
        batch_id    BLOB NOT NULL,
        receipt     BLOB NOT NULL,
        received_at INTEGER NOT NULL
    ) STRICT
    """,
    "CREATE INDEX receipts_batch ON receipts (peer_id, batch_id)",
    # No foreign key to peers: delivery history outlives a removed peer.
    """
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        peer_id         TEXT NOT NULL,
        message_id      BLOB NOT NULL CHECK (length(message_id) = 16),
        envelope        BLOB NOT NULL,
        payload         BLOB,
        created_at      INTEGER NOT NULL,
        state           TEXT NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'delivered', 'dead')),
        outcome         TEXT CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
        reason          TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_attempt_at INTEGER,
        last_error      TEXT,
        delivered_at    INTEGER,
        receipt_id      INTEGER REFERENCES receipts (id),
        CHECK (state = 'delivered' OR payload IS NOT NULL)
    ) STRICT
    """,
    # Serves message_status (by message id) and the (peer, message id) uniqueness.
    "CREATE UNIQUE INDEX outbox_message ON outbox (message_id, peer_id)",
    "CREATE INDEX outbox_queued ON outbox (peer_id, id) WHERE state = 'queued'",
    "CREATE INDEX outbox_dead ON outbox (peer_id, id) WHERE state = 'dead'",
    """
    CREATE TABLE outbox_counts (
        peer_id   TEXT PRIMARY KEY,
        queued    INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        dead      INTEGER NOT NULL DEFAULT 0
    ) STRICT
    """,
    """
    CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
        INSERT INTO outbox_counts (peer_id) VALUES (NEW.peer_id)
            ON CONFLICT (peer_id) DO NOTHING;
        UPDATE outbox_counts SET
            queued = queued + (NEW.state = 'queued'),
            delivered = delivered + (NEW.state = 'delivered'),
            dead = dead + (NEW.state = 'dead')
        WHERE peer_id = NEW.peer_id;
    END
    """,
    """
    CREATE TRIGGER outbox_counts_update AFTER UPDATE OF state ON outbox
    WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE outbox_counts SET
            queued = queued + (NEW.state = 'queued') - (OLD.state = 'queued'),
            delivered = delivered + (NEW.state = 'delivered') - (OLD.state = 'delivered'),
            dead = dead + (NEW.state = 'dead') - (OLD.state = 'dead')
        WHERE peer_id = NEW.peer_id;
    END
    """,
    """
    CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
        UPDATE outbox_counts SET
            queued = queued - (OLD.state = 'queued'),
            delivered = delivered - (OLD.state = 'delivered'),
            dead = dead - (OLD.state = 'dead')
        WHERE peer_id = OLD.peer_id;
    END
    """,
    """
    CREATE TABLE inbox (
        cursor        INTEGER PRIMARY KEY AUTOINCREMENT,
        sender        TEXT NOT NULL,
        message_id    BLOB NOT NULL CHECK (length(message_id) = 16),
        envelope_hash BLOB NOT NULL CHECK (length(envelope_hash) = 32),
        kind          TEXT NOT NULL,
        header        BLOB NOT NULL,
        body          BLOB NOT NULL,
        signature     BLOB NOT NULL,
        received_at   INTEGER NOT NULL
    ) STRICT
    """,
    "CREATE UNIQUE INDEX inbox_sender_message ON inbox (sender, message_id)",
    "CREATE INDEX inbox_kind ON inbox (kind, cursor)",
    "CREATE INDEX inbox_received ON inbox (received_at)",
    # De-duplication memory; outlives inbox rows purged by retention.
    """
    CREATE TABLE seen (
        sender        TEXT NOT NULL,
        message_id    BLOB NOT NULL,
        envelope_hash BLOB NOT NULL,
        first_seen    INTEGER NOT NULL,
        cursor        INTEGER NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX seen_first ON seen (first_seen)",
    """
    CREATE TABLE sent_receipts (
        id         INTEGER PRIMARY KEY,
        peer_id    TEXT NOT NULL,
        batch_id   BLOB NOT NULL,
        receipt    BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT
    """,
    "CREATE UNIQUE INDEX sent_receipts_batch ON sent_receipts (peer_id, batch_id)",
    "CREATE INDEX sent_receipts_created ON sent_receipts (created_at)",
    """
    CREATE TABLE tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER
    ) STRICT
    """,
    "CREATE UNIQUE INDEX tokens_secret_hash ON tokens (secret_hash)",
    "CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL",
)

# Version 2: the local API's document index and repatriation cases (owned by
# ``exchange_node/services/``). Personal data and case notes are stored encrypted
# (``personal``, ``note`` are AES-GCM blobs from the node's at-rest key).
_V2: tuple[str, ...] = (
    """
    CREATE TABLE doc_notices (
        notice_id        TEXT PRIMARY KEY,
        sender_node      TEXT NOT NULL,
        sender_country   TEXT NOT NULL,
        kind             TEXT NOT NULL,
        issuing_state    TEXT NOT NULL,
        document_type    TEXT NOT NULL,
        number           TEXT NOT NULL,
        issued_at_ms     INTEGER NOT NULL,
        supersedes       TEXT,
        detection_place  TEXT,
        detected_at_ms   INTEGER,
        detection_auth   TEXT,
        effective_at_ms  INTEGER,
        remarks          TEXT NOT NULL DEFAULT '',
        reason           TEXT NOT NULL DEFAULT '',
        message_id       BLOB,
        indexed_at       INTEGER NOT NULL
    ) STRICT
    """,
    "CREATE INDEX doc_notices_document ON doc_notices (issuing_state, number)",
    "CREATE INDEX doc_notices_supersedes ON doc_notices (supersedes) WHERE supersedes IS NOT NULL",
    """
    CREATE TABLE cases (
        case_ref     TEXT PRIMARY KEY,
        opened_by    TEXT NOT NULL,
        participants TEXT NOT NULL,
        personal     BLOB,
        opened_at    INTEGER NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE case_events (
        case_ref    TEXT NOT NULL REFERENCES cases (case_ref),
        sequence    INTEGER NOT NULL,
        event_id    BLOB NOT NULL CHECK (length(event_id) = 16),
        kind        TEXT NOT NULL,
        actor       TEXT NOT NULL,
        actor_role  TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        note        BLOB,
        performed_by TEXT NOT NULL,
        message_ids TEXT NOT NULL DEFAULT '{}',
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (case_ref, sequence)
    ) STRICT
    """,
)

AUDIT_TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS audit_meta (
        key TEXT PRIMARY KEY,
        value NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_leaves (
        seq INTEGER PRIMARY KEY,
        data BLOB NOT NULL,
        hash BLOB NOT NULL,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        peer TEXT NOT NULL,
        message_id TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_leaves_time ON audit_leaves(time)",
    "CREATE INDEX IF NOT EXISTS audit_leaves_actor ON audit_leaves(actor, time)",
    "CREATE INDEX IF NOT EXISTS audit_leaves_peer ON audit_leaves(peer, time) WHERE peer != ''",
    "CREATE INDEX IF NOT EXISTS audit_leaves_message ON audit_leaves(message_id) WHERE message_id != ''",
    """
    CREATE TABLE IF NOT EXISTS audit_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        tree_size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        time INTEGER NOT NULL,
        note TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_peer_checkpoints (
        id INTEGER PRIMARY KEY,
        peer TEXT NOT NULL,
        tree_size INTEGER NOT NULL,
        root BLOB NOT NULL,
        time INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        note TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_peer_checkpoints_peer ON audit_peer_checkpoints(peer, status, tree_size)",
)
"""The audit log's tables (``exchange_node.audit.log``). In a node's database they come
with migration 3, so a change and the leaves that record it commit in one transaction;
a stand-alone audit file (tools, tests) gets them from ``AuditLog`` itself. Idempotent."""

# 3: the audit log moves into the node's database (it was a file of its own, audit.sqlite;
# Node.open copies an old one over, see exchange_node/audit/migrate.py).
_V3 = AUDIT_TABLES

# 4: Idempotency-Key records of the local API (``api/idempotency.py``): the answer a
# keyed submission got, written in the submission's own transaction, kept for the
# retention window. Scoped per token: the same key from two tokens is two records.
_V4: tuple[str, ...] = (
    """
    CREATE TABLE idempotency_keys (
        id           INTEGER PRIMARY KEY,
        token_id     INTEGER NOT NULL,
        key          TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
        request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
        method       TEXT NOT NULL,
        path         TEXT NOT NULL,
        status       INTEGER NOT NULL,
        response     BLOB NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT
    """,
    "CREATE UNIQUE INDEX idempotency_keys_token_key ON idempotency_keys (token_id, key)",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
)

# 5: catch-up of a peer that joins or whose policy comes to allow more kinds
# (``delivery/catchup.py``): one row per pinned peer with its cursor into doc_notices
# (a rowid), advanced in the transaction that queues each chunk. ``kinds`` are the
# notice kinds the peer has been caught up on (NULL: whatever its policy allows, for
# peers pinned before catch-up existed: they are not caught up again). Outbox rows
# queued by a catch-up are marked, so its progress can be counted. ``requested_at``:
# when the peer last asked for a catch-up that was honoured.
_V5: tuple[str, ...] = (
    """
    CREATE TABLE catchup (
        peer_id    TEXT PRIMARY KEY,
        state      TEXT NOT NULL CHECK (state IN ('running', 'paused', 'done')),
        kinds      TEXT,
        todo       TEXT NOT NULL DEFAULT '[]',
        cursor     INTEGER NOT NULL DEFAULT 0,
        high_water INTEGER NOT NULL DEFAULT 0,
        total      INTEGER NOT NULL DEFAULT 0,
        queued     INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        requested_at INTEGER
    ) STRICT
    """,
    "INSERT INTO catchup (peer_id, state, kinds, started_at, updated_at) "
    "SELECT node_id, 'done', NULL, updated_at, updated_at FROM peers",
    "ALTER TABLE outbox ADD COLUMN catchup INTEGER NOT NULL DEFAULT 0 CHECK (catchup IN (0, 1))",
    # Progress counts only what a catch-up queued and is not yet delivered: a few rows.
    "CREATE INDEX outbox_catchup ON outbox (peer_id) WHERE catchup = 1 AND state != 'delivered'",
)

AUDIT_COSIGNATURES = """
    CREATE TABLE IF NOT EXISTS audit_cosignatures (
        tree_size   INTEGER NOT NULL,
        witness     TEXT NOT NULL,
        key_id      BLOB NOT NULL,
        timestamp   INTEGER NOT NULL,
        line        TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (tree_size, witness, key_id)
    )
    """
"""Witnesses' cosignatures on the log's own checkpoints: read by ``AuditLog`` (bundles
carry them), written by the store in the transaction of their ``witness.cosigned`` leaf.
Part of the audit tables of a stand-alone audit file too, hence ``IF NOT EXISTS``."""

# 6: C2SP tlog-witness, both ways (``audit/cosigner.py``, ``audit/witnesses.py``).
# ``witness_logs``: as a witness, the latest checkpoint this node cosigned per log
# origin, replaced in the transaction that writes its ``checkpoint.cosigned`` leaf (the
# check of the old size and the update are one step). ``audit_cosignatures``: witnesses'
# cosignatures on this node's own checkpoints, one per (size, witness key), kept with
# their ``witness.cosigned`` leaf.
_V6: tuple[str, ...] = (
    """
    CREATE TABLE witness_logs (
        origin     TEXT PRIMARY KEY,
        log_peer   TEXT NOT NULL,
        tree_size  INTEGER NOT NULL,
        root       BLOB NOT NULL,
        note       TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    )
    """,
    AUDIT_COSIGNATURES,
    # The largest size each witness key cosigned, read before every push.
    "CREATE INDEX IF NOT EXISTS audit_cosignatures_witness"
    " ON audit_cosignatures (witness, key_id, tree_size)",
)

# 7: data protection (``exchange_node/record_keys.py``, ``services/protection.py``).
# Each case's personal data and notes are encrypted under a data key of its own, kept
# wrapped under a versioned key-encryption key (KEK) whose file is outside the database;
# erasing a record deletes its key and ciphertext and leaves a ``record_purges`` row
# saying why and who approved. Cases stored before (under the node-wide storage key)
# are converted by the data step that follows this migration at the node's first start
# (``RecordProtection.adopt_legacy_cases``); until then they have no ``record_keys``
# row. Portable SQL: the PostgreSQL store runs the same text.
_V7: tuple[str, ...] = (
    """
    CREATE TABLE kek_versions (
        version      INTEGER PRIMARY KEY,
        created_at   INTEGER NOT NULL,
        retired_at   INTEGER,
        destroyed_at INTEGER
    )
    """,
    """
    CREATE TABLE record_keys (
        record_id   TEXT PRIMARY KEY,
        kek_version INTEGER NOT NULL REFERENCES kek_versions (version),
        wrapped     BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    )
    """,
    "CREATE INDEX record_keys_kek ON record_keys (kek_version)",
    """
    CREATE TABLE record_purges (
        record_id   TEXT PRIMARY KEY,
        record_type TEXT NOT NULL,
        reason      TEXT NOT NULL CHECK (reason IN
                    ('retention', 'erasure_request', 'withdrawn_by_source', 'rectified')),
        approver    TEXT NOT NULL,
        purged_at   INTEGER NOT NULL,
        notices     TEXT NOT NULL DEFAULT '{}'
    )
    """,
    # A legal hold blocks purging (erasure and the retention schedule) of one record: a
    # case (``case:<ref>``) or a document (``document:<keyed hash of STATE:NUMBER>``, so
    # no document number is kept here in clear).
    """
    CREATE TABLE legal_holds (
        record_id TEXT PRIMARY KEY,
        reason    TEXT NOT NULL,
        placed_by TEXT NOT NULL,
        placed_at INTEGER NOT NULL
    )
    """,
    # The last periodic review of a record an operator decided to keep (``case:<ref>``,
    # ``notice:<id>`` for a notice of this node's in effect): the next one is due a
    # review period later.
    # What the retention job and the periodic review look for, without a scan of the
    # document index: fraud detections by age and withdrawals; this node's own notices.
    "CREATE INDEX doc_notices_kind_issued ON doc_notices (kind, issued_at_ms)",
    "CREATE INDEX doc_notices_sender_issued ON doc_notices (sender_node, issued_at_ms)",
    # Disclosures of this node's document notices: each recipient and the message id
    # it went out under (its receipt settles that message), written in the
    # transaction that queues the copies; a subject access report lists them.
    """
    CREATE TABLE disclosures (
        record_id    TEXT NOT NULL,
        peer_id      TEXT NOT NULL,
        message_id   BLOB NOT NULL,
        disclosed_at INTEGER NOT NULL,
        PRIMARY KEY (record_id, peer_id, message_id)
    )
    """,
    """
    CREATE TABLE record_reviews (
        record_id   TEXT PRIMARY KEY,
        reviewed_at INTEGER NOT NULL,
        reviewed_by TEXT NOT NULL,
        reason      TEXT NOT NULL
    )
    """,
)
# 8: the operator console (``exchange_node/console``). Sessions are kept here, by the
# SHA-256 of the cookie's secret (never the secret), with the token that signed in, the
# form token (CSRF) and both expiry bounds. A dead letter an operator has seen to is
# marked acknowledged (kept as evidence; no longer counted as waiting for a person).
# The audit page filters by kind, actor and peer newest first: (kind, seq), (actor, seq)
# and (peer, seq) serve those keyset pages; the case list pages by (opened_at, case_ref),
# the messages page by (peer_id, id).
_V8: tuple[str, ...] = (
    """
    CREATE TABLE console_sessions (
        id_hash      BLOB PRIMARY KEY,
        token_id     INTEGER NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    )
    """,
    "CREATE INDEX console_sessions_token ON console_sessions (token_id)",
    "CREATE INDEX console_sessions_expires ON console_sessions (expires_at)",
    "ALTER TABLE outbox ADD COLUMN acknowledged_at INTEGER",
    "ALTER TABLE outbox ADD COLUMN acknowledged_by TEXT",
    "CREATE INDEX outbox_dead_acknowledged ON outbox (peer_id, id)"
    " WHERE state = 'dead' AND acknowledged_at IS NOT NULL",
    "CREATE INDEX audit_leaves_kind_seq ON audit_leaves (kind, seq)",
    "CREATE INDEX audit_leaves_actor_seq ON audit_leaves (actor, seq)",
    "CREATE INDEX audit_leaves_peer_seq ON audit_leaves (peer, seq) WHERE peer != ''",
    "CREATE INDEX cases_opened ON cases (opened_at, case_ref)",
    "CREATE INDEX outbox_peer ON outbox (peer_id, id)",
)

# 9: local API tokens expire. ``expires_at`` (ms) is set when the token is created (the
# configured default lifetime or ``token create --expires``); NULL: never, as for
# tokens made before this version. (Acknowledged dead letters are marked in the outbox
# row itself, migration 8.)
_V9: tuple[str, ...] = ("ALTER TABLE tokens ADD COLUMN expires_at INTEGER",)

AUDIT_SUBJECT_BACKFILL = (
    "UPDATE audit_leaves SET subject_hash = json_extract(CAST(data AS TEXT), '$.subject_hash')"
    " WHERE subject_hash IS NULL AND json_extract(CAST(data AS TEXT), '$.subject_hash') != ''"
)
"""Copy each leaf's ``subject_hash`` from its bytes into the column (migration 10, and
leaves adopted from an old ``audit.sqlite``). SQLite's spelling; PostgreSQL's is in
:data:`POSTGRESQL_OVERRIDES`."""

# 10: the leaves' keyed ``subject_hash`` (the document or case an entry is about) gets a
# column of its own, so "who looked up this passport" is an index lookup, not a scan of
# the leaf bytes. Derived data like the other copied fields: written with each leaf
# (NULL when the leaf has none, so the partial index holds only leaves that have one:
# ``IS NOT NULL`` is the condition both planners match ``subject_hash = ?`` to), filled
# for the leaves already stored in this same transaction (a crash leaves schema 9 with
# no column, or 10 with every leaf filled), checked against the bytes by ``verify``.
# The Merkle tree commits to the leaf bytes only.
AUDIT_SUBJECT: tuple[str, ...] = (
    "ALTER TABLE audit_leaves ADD COLUMN subject_hash TEXT",
    AUDIT_SUBJECT_BACKFILL,
    "CREATE INDEX audit_leaves_subject_seq ON audit_leaves (subject_hash, seq)"
    " WHERE subject_hash IS NOT NULL",
)
"""Also applied by ``AuditLog`` to a stand-alone audit file made before it."""
_V10 = AUDIT_SUBJECT

# 11: the messages page's index of every outbox row by peer (migration 8) made the
# planner read a peer's whole history, delivered rows included, for the worker's
# "next queued rows" (the partial ``outbox_queued`` index is what serves it): 4 ms a
# read at a few ten thousand rows, growing with the history. Delivered rows get a
# partial index of their own instead; queued and dead ones have theirs (migration 1).
_V11: tuple[str, ...] = (
    "DROP INDEX IF EXISTS outbox_peer",
    "CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (peer_id, id) WHERE state = 'delivered'",
)

# 12: a peer's outbox is sent as two lanes, live rows and catch-up rows (``catchup``,
# migration 5), each read on its own (``pending(..., lane)``). ``outbox_queued`` serves
# a lane's read only by stepping over the other lane's rows; queued rows get an index by
# lane too, so the live lane's next batch is read without touching the catch-up's rows
# (and the catch-up's pacing counts its own rows the same way). ``outbox_queued`` stays
# for what reads both lanes in id order (the oldest queued row of ``queue_stats``).
_V12: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS outbox_queued_lane ON outbox (peer_id, catchup, id)"
    " WHERE state = 'queued'",
)

# 13: a catch-up's time left is what is left at the rate delivered while it ran, so the
# time it spent paused is kept: ``paused_ms`` in all for the current run (0 when it
# starts again), and ``paused_at`` while it is paused (NULL otherwise).
_V13: tuple[str, ...] = (
    "ALTER TABLE catchup ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE catchup ADD COLUMN paused_at INTEGER",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12, _V13,
)  # fmt: skip
"""Migration ``i`` (statements) upgrades schema version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and understands."""


def migrate(
    conn: sqlite3.Connection,
    path: str,
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> int:
    """Bring the database behind ``conn`` (autocommit mode) up to ``len(migrations)``.

    Returns the version reached. Raises ``StoreError(store_schema_too_new)`` for a database
    written by a newer exchange-node, ``StoreError(store_not_ours)`` for a SQLite file of
    another application. A failing migration is rolled back whole and re-raised.
    """
    target = len(migrations)
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and version != 0):
        raise StoreError(
            "store_not_ours",
            f"{path} is a SQLite database of another application "
            f"(application_id {app_id:#x}, user_version {version}); "
            "point the store path at a new file or an exchange-node database",
            "store.path",
        )
    if version > target:
        raise StoreError(
            "store_schema_too_new",
            f"{path} has schema version {version} but this exchange-node understands "
            f"versions up to {target}; run a release at least as new as the one that "
            "last opened it, or restore a backup made by this release",
            "store.path",
        )
    while version < target:
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same
        # new file cannot both apply the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == version:
                for statement in migrations[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


# --- PostgreSQL ------------------------------------------------------------------------------

_PG_COUNTS = """
    UPDATE outbox_counts SET
        queued = queued + (NEW.state = 'queued')::int - (OLD.state = 'queued')::int,
        delivered = delivered + (NEW.state = 'delivered')::int - (OLD.state = 'delivered')::int,
        dead = dead + (NEW.state = 'dead')::int - (OLD.state = 'dead')::int
    WHERE peer_id = NEW.peer_id;
"""


def _pg_trigger(name: str, event: str, body: str, when: str = "") -> tuple[str, str]:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\nRETURN NULL;\nEND\n$$",
        f"CREATE TRIGGER {name} AFTER {event} ON outbox FOR EACH ROW {when} "
        f"EXECUTE FUNCTION {name}()",
    )


POSTGRESQL_OVERRIDES: dict[tuple[int, int], tuple[str, ...]] = {
    # The outbox counters: PostgreSQL triggers call a function; booleans are cast.
    (0, 9): _pg_trigger(
        "outbox_counts_insert",
        "INSERT",
        "INSERT INTO outbox_counts (peer_id) VALUES (NEW.peer_id) "
        "ON CONFLICT (peer_id) DO NOTHING;\n"
        "UPDATE outbox_counts SET queued = queued + (NEW.state = 'queued')::int, "
        "delivered = delivered + (NEW.state = 'delivered')::int, "
        "dead = dead + (NEW.state = 'dead')::int WHERE peer_id = NEW.peer_id;",
    ),
    (0, 10): _pg_trigger(
        "outbox_counts_update",
        "UPDATE OF state",
        _PG_COUNTS,
        "WHEN (OLD.state IS DISTINCT FROM NEW.state)",
    ),
    (0, 11): _pg_trigger(
        "outbox_counts_delete",
        "DELETE",
        "UPDATE outbox_counts SET queued = queued - (OLD.state = 'queued')::int, "
        "delivered = delivered - (OLD.state = 'delivered')::int, "
        "dead = dead - (OLD.state = 'dead')::int WHERE peer_id = OLD.peer_id;",
    ),
    # The leaves' subject hash (migration 10): JSON of the leaf bytes, PostgreSQL's way.
    (9, 1): (
        "UPDATE audit_leaves SET subject_hash = convert_from(data, 'UTF8')::jsonb ->> "
        "'subject_hash' WHERE subject_hash IS NULL AND convert_from(data, 'UTF8')::jsonb ->> "
        "'subject_hash' != ''",
    ),
}
"""PostgreSQL texts for the statements that cannot be spelled once (see the rules
above). ``doc_notices`` and ``audit_meta`` are adjusted in :func:`postgresql_ddl`."""


def postgresql_ddl(statement: str) -> str:
    """One migration statement in PostgreSQL's spelling (see the rules above)."""
    s = re.sub(r"\)\s*STRICT\s*(,\s*WITHOUT ROWID)?\s*$", ")", statement.rstrip())
    s = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", s)
    s = re.sub(
        r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?\b",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        s,
    )
    s = re.sub(r"\bINTEGER\b", "BIGINT", s)
    s = re.sub(r"\bBLOB\b", "BYTEA", s)
    s = re.sub(r"\bREAL\b", "DOUBLE PRECISION", s)
    # audit_meta holds text, numbers and keys alike (untyped on SQLite): TEXT here.
    s = re.sub(r"\bvalue NOT NULL\b", "value TEXT NOT NULL", s)
    if re.match(r"\s*CREATE TABLE doc_notices\b", s):
        # The catch-up cursor: SQLite's implicit rowid, an explicit column here.
        s = s.replace("(", "(\n        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,", 1)
    return s


def postgresql_migration(index: int) -> list[str]:
    """Migration ``index`` as PostgreSQL statements."""
    out: list[str] = []
    for i, statement in enumerate(MIGRATIONS[index]):
        override = POSTGRESQL_OVERRIDES.get((index, i))
        out.extend(override if override is not None else (postgresql_ddl(statement),))
    return out
