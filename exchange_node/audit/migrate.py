"""Adopting an audit log kept in a file of its own (``audit.sqlite``, before schema 3).

Since schema 3 the audit log lives in the node's database, so that a change and the
leaves recording it commit in one transaction. A node that still has ``audit.sqlite``
has it copied, whole and in one transaction, into ``node.sqlite`` the first time it is
opened; the old file is then renamed ``audit.sqlite.adopted`` (kept for the operator to
delete once a backup of the new database exists). Copying is idempotent: a crash after
the copy and before the rename finds the same tree in both and only renames.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from exchange_node.errors import ConflictError
from exchange_node.store.migrations import AUDIT_SUBJECT_BACKFILL

OLD_FILE = "audit.sqlite"
_TABLES = ("meta", "leaves", "nodes", "checkpoints", "peer_checkpoints")


def adopt_audit_file(data_dir: Path, database: Path) -> bool:
    """Copy ``data_dir/audit.sqlite`` into ``database`` (already migrated to schema 3) if
    it exists; True if a file was adopted. Raises ``ConflictError(audit_adopt_conflict)``
    when both hold different, non-empty logs (nothing is changed then)."""
    old = data_dir / OLD_FILE
    if not old.is_file():
        return False
    # Closing the last connection folds the old file's write-ahead log into it.
    sqlite3.connect(old).close()
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("ATTACH DATABASE ? AS old", (str(old),))
        conn.execute("BEGIN IMMEDIATE")
        try:
            ours = _size(conn, "main.audit_meta", "main.audit_leaves")
            theirs = _size(conn, "old.meta", "old.leaves")
            if ours == 0:
                conn.execute("DELETE FROM main.audit_meta")
                for table in _TABLES:
                    columns = ", ".join(
                        row[1] for row in conn.execute(f"PRAGMA old.table_info({table})")
                    )
                    conn.execute(
                        f"INSERT INTO main.audit_{table} ({columns}) SELECT {columns} FROM old.{table}"
                    )
                # The old file predates the subject_hash column: filled from the leaves.
                conn.execute(AUDIT_SUBJECT_BACKFILL)
            elif ours != theirs or _last_hash(conn, "main.audit_leaves") != _last_hash(
                conn, "old.leaves"
            ):
                raise ConflictError(
                    "audit_adopt_conflict",
                    f"{database} already holds an audit log of {ours} leaves and {old} one of "
                    f"{theirs}: they differ, so neither is changed; keep {old} aside "
                    "(it is evidence) and tell whoever restored these files",
                    "data_dir",
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("DETACH DATABASE old")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm", ""):  # the main file last: it marks the adoption done
        side = old.with_name(OLD_FILE + suffix)
        if side.exists():
            # Earlier releases left these 0644: the copy kept is private like the rest.
            side.chmod(0o600)
            side.rename(side.with_name(side.name.replace(OLD_FILE, OLD_FILE + ".adopted")))
    return True


def _size(conn: sqlite3.Connection, meta: str, leaves: str) -> int:
    row = conn.execute(f"SELECT value FROM {meta} WHERE key = 'tree_size'").fetchone()
    if row is not None:
        return int(row[0])
    return int(conn.execute(f"SELECT count(*) FROM {leaves}").fetchone()[0])


def _last_hash(conn: sqlite3.Connection, leaves: str) -> bytes | None:
    row = conn.execute(f"SELECT hash FROM {leaves} ORDER BY seq DESC LIMIT 1").fetchone()
    return row[0] if row else None
