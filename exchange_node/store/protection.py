"""Store operations of data protection: data keys, KEK versions, purges (migration 7).

Mixed into :class:`~exchange_node.store.sqlite.SqliteTransaction` (writes, and reads
inside a transaction) and :class:`~exchange_node.store.sqlite.SqliteStore` (reads), so
they keep the store's rule: one operation, one transaction, its leaves included. The
SQL is portable (``?`` placeholders, no SQLite-only syntax).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from exchange_node.errors import ConflictError
from exchange_node.store.records import (
    HoldRow,
    KekVersionRow,
    PurgeRow,
    RecordKeyRow,
    ReviewDue,
)

PURGED_REASON = "record_purged"
"""Outbox reason of an envelope of an erased record that was still undelivered."""

_KEK_COLS = "version, created_at, retired_at, destroyed_at"
_KEY_COLS = "record_id, kek_version, wrapped, created_at"
_PURGE_COLS = "record_id, record_type, reason, approver, purged_at, notices"
_HOLD_COLS = "record_id, reason, placed_by, placed_at"


_DUE_ISSUED = "d.notice_id, d.issued_at_ms, d.issuing_state, d.number"
_DUE_KEPT = "d.notice_id, r.reviewed_at, d.issuing_state, d.number"
_DUE_NOTICES = (
    # Never reviewed: issued by the cutoff. The range on doc_notices (sender_node,
    # issued_at_ms) reads only the notices old enough, so a node with a million notices
    # none of which is due answers at once (a COALESCE over a join read them all).
    "SELECT {issued} FROM doc_notices d WHERE d.sender_node = ? AND d.issued_at_ms <= ?{only} "
    "AND d.kind != 'WITHDRAWAL' "
    "AND NOT EXISTS (SELECT 1 FROM record_reviews r WHERE r.record_id = 'notice:' || d.notice_id) "
    "AND NOT EXISTS (SELECT 1 FROM doc_notices s WHERE s.supersedes = d.notice_id) "
    "UNION ALL "
    # Kept at a review: last kept by the cutoff (reviews are few: one per keep).
    "SELECT {kept} FROM record_reviews r JOIN doc_notices d ON d.notice_id = substr(r.record_id, 8) "
    "WHERE d.sender_node = ? AND r.reviewed_at <= ?{only} AND r.record_id LIKE 'notice:%' "
    "AND d.kind != 'WITHDRAWAL' "
    "AND NOT EXISTS (SELECT 1 FROM doc_notices s WHERE s.supersedes = d.notice_id)"
)
"""This node's own notices under review and due (the columns ``{issued}`` and ``{kept}``
and the filter ``{only}`` filled in; the arguments: node, cutoff[, notice id], twice)."""


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(sql, args).fetchall()


class ProtectionReads:
    """Reads that both a transaction and the store offer; ``_q`` runs one query."""

    __slots__ = ()

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def kek_versions(self) -> list[KekVersionRow]:
        """Every KEK version ever recorded, ascending."""
        return [
            KekVersionRow(*r)
            for r in self._q(f"SELECT {_KEK_COLS} FROM kek_versions ORDER BY version")
        ]

    def current_kek(self) -> int | None:
        """The version new data keys are wrapped under (None before the first start)."""
        rows = self._q("SELECT MAX(version) FROM kek_versions WHERE retired_at IS NULL")
        return rows[0][0] if rows else None

    def record_key(self, record_id: str) -> RecordKeyRow | None:
        rows = self._q(f"SELECT {_KEY_COLS} FROM record_keys WHERE record_id = ?", (record_id,))
        return RecordKeyRow(*rows[0]) if rows else None

    def record_keys_under(self, version: int) -> int:
        """How many data keys are wrapped under KEK ``version``."""
        return self._q("SELECT COUNT(*) FROM record_keys WHERE kek_version = ?", (version,))[0][0]

    def record_purge(self, record_id: str) -> PurgeRow | None:
        rows = self._q(f"SELECT {_PURGE_COLS} FROM record_purges WHERE record_id = ?", (record_id,))
        return PurgeRow(*rows[0]) if rows else None

    def hold(self, record_id: str) -> HoldRow | None:
        rows = self._q(f"SELECT {_HOLD_COLS} FROM legal_holds WHERE record_id = ?", (record_id,))
        return HoldRow(*rows[0]) if rows else None

    def holds(self) -> list[HoldRow]:
        return [
            HoldRow(*r)
            for r in self._q(f"SELECT {_HOLD_COLS} FROM legal_holds ORDER BY placed_at, record_id")
        ]

    def unpurged_cases(self) -> list[str]:
        """References of the cases whose content this node still holds."""
        return [
            r[0]
            for r in self._q(
                "SELECT case_ref FROM cases c WHERE NOT EXISTS "
                "(SELECT 1 FROM record_purges p WHERE p.record_id = 'case:' || c.case_ref) "
                "ORDER BY case_ref"
            )
        ]

    def documents_with(
        self, kinds: Sequence[str], issued_by: int, withdrawal: str
    ) -> list[tuple[str, str]]:
        """Documents (issuing state, number) with a withdrawal, or with a notice of one of
        ``kinds`` issued at ``issued_by`` or earlier: the retention schedule's candidates."""
        marks = ", ".join("?" * len(kinds))
        return [
            (r[0], r[1])
            for r in self._q(
                "SELECT DISTINCT issuing_state, number FROM doc_notices WHERE kind = ? "
                f"OR (kind IN ({marks}) AND issued_at_ms <= ?) ORDER BY issuing_state, number",
                (withdrawal, *kinds, issued_by),
            )
        ]

    def disclosures(self, record_id: str) -> list[tuple[str, bytes]]:
        """(peer, message id) of every copy of the record this node sent."""
        return [
            (r[0], r[1])
            for r in self._q(
                "SELECT peer_id, message_id FROM disclosures WHERE record_id = ? "
                "ORDER BY disclosed_at, peer_id",
                (record_id,),
            )
        ]

    def purges_with_notices(self) -> list[PurgeRow]:
        """Purges this node sent purge notices for."""
        return [
            PurgeRow(*r)
            for r in self._q(
                f"SELECT {_PURGE_COLS} FROM record_purges WHERE notices != '{{}}' "
                "ORDER BY purged_at"
            )
        ]

    def cases_due_for_review(self, now: int, period: int) -> list[ReviewDue]:
        """Cases whose content is held and that were stored or last kept at least
        ``period`` ms before ``now``."""
        rows = self._q(
            "SELECT c.case_ref, COALESCE(r.reviewed_at, c.opened_at) FROM cases c "
            "LEFT JOIN record_reviews r ON r.record_id = 'case:' || c.case_ref "
            "WHERE COALESCE(r.reviewed_at, c.opened_at) <= ? AND NOT EXISTS "
            "(SELECT 1 FROM record_purges p WHERE p.record_id = 'case:' || c.case_ref) "
            "ORDER BY 2, 1",
            (now - period,),
        )
        return [ReviewDue(f"case:{ref}", "case", since, since + period) for ref, since in rows]

    def notices_due_for_review(
        self,
        me: str,
        now: int,
        period: int,
        *,
        limit: int | None = None,
        notice_id: str | None = None,
    ) -> list[ReviewDue]:
        """This node's own notices still in effect (not superseded, not a withdrawal),
        issued or last kept at least ``period`` ms before ``now``, oldest first: the
        source reviews its records. At most ``limit``; only ``notice_id`` if given."""
        only = " AND d.notice_id = ?" if notice_id is not None else ""
        args: list[Any] = [me, now - period, *([notice_id] if notice_id is not None else [])] * 2
        sql = f"{_DUE_NOTICES.format(issued=_DUE_ISSUED, kept=_DUE_KEPT, only=only)} ORDER BY 2, 1"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            ReviewDue(f"notice:{nid}", "document_notice", since, since + period, (state, number))
            for nid, since, state, number in self._q(sql, args)
        ]

    def count_notices_due_for_review(self, me: str, now: int, period: int) -> int:
        """How many notices :meth:`notices_due_for_review` lists, without listing them."""
        sql = f"SELECT COUNT(*) FROM ({_DUE_NOTICES.format(issued='1', kept='1', only='')}) AS due"
        return self._q(sql, [me, now - period] * 2)[0][0]

    def case_of_message(self, message_id: bytes) -> str | None:
        """The case whose step this node sent or received under ``message_id`` (a scan:
        for proof export, not for the hot path)."""
        rows = self._q(
            "SELECT case_ref FROM case_events WHERE message_ids LIKE ? LIMIT 1",
            (f'%"{message_id.hex()}"%',),
        )
        return rows[0][0] if rows else None

    def cases_without_key(self, limit: int) -> list[str]:
        """Cases stored before per-record keys (their content under the node-wide
        storage key) and not purged: what the data step of migration 7 converts."""
        return [
            r[0]
            for r in self._q(
                "SELECT case_ref FROM cases c WHERE NOT EXISTS "
                "(SELECT 1 FROM record_keys k WHERE k.record_id = 'case:' || c.case_ref) "
                "AND NOT EXISTS "
                "(SELECT 1 FROM record_purges p WHERE p.record_id = 'case:' || c.case_ref) "
                "ORDER BY case_ref LIMIT ?",
                (limit,),
            )
        ]


class ProtectionWrites(ProtectionReads):
    """Writes of data protection, on a transaction's connection (``self._conn``)."""

    __slots__ = ()

    _conn: sqlite3.Connection

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return _rows(self._conn, sql, args)

    def add_kek_version(self, version: int, at: int) -> None:
        self._conn.execute(
            "INSERT INTO kek_versions (version, created_at) VALUES (?, ?)", (version, at)
        )

    def retire_kek(self, version: int, at: int) -> None:
        self._conn.execute(
            "UPDATE kek_versions SET retired_at = ? WHERE version = ? AND retired_at IS NULL",
            (at, version),
        )

    def mark_kek_destroyed(self, version: int, at: int) -> None:
        self._conn.execute(
            "UPDATE kek_versions SET destroyed_at = ? WHERE version = ?", (at, version)
        )

    def insert_record_key(self, row: RecordKeyRow) -> None:
        self._conn.execute(
            f"INSERT INTO record_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?)",
            (row.record_id, row.kek_version, row.wrapped, row.created_at),
        )

    def record_keys_not_under(self, version: int) -> list[RecordKeyRow]:
        """Every data key wrapped under another KEK version than ``version``."""
        return [
            RecordKeyRow(*r)
            for r in self._q(
                f"SELECT {_KEY_COLS} FROM record_keys WHERE kek_version != ? ORDER BY record_id",
                (version,),
            )
        ]

    def rewrap_record_key(self, record_id: str, version: int, wrapped: bytes) -> None:
        self._conn.execute(
            "UPDATE record_keys SET kek_version = ?, wrapped = ? WHERE record_id = ?",
            (version, wrapped, record_id),
        )

    def set_case_content(
        self, case_ref: str, personal: bytes | None, notes: dict[int, bytes]
    ) -> None:
        """Replace a case's ciphertext (personal data; notes by sequence)."""
        self._conn.execute("UPDATE cases SET personal = ? WHERE case_ref = ?", (personal, case_ref))
        self._conn.executemany(
            "UPDATE case_events SET note = ? WHERE case_ref = ? AND sequence = ?",
            [(blob, case_ref, seq) for seq, blob in sorted(notes.items())],
        )

    def shred_case(self, case_ref: str, record_id: str) -> None:
        """Delete a case's data key and every ciphertext made with it."""
        self._conn.execute("DELETE FROM record_keys WHERE record_id = ?", (record_id,))
        self._conn.execute("UPDATE cases SET personal = NULL WHERE case_ref = ?", (case_ref,))
        self._conn.execute("UPDATE case_events SET note = NULL WHERE case_ref = ?", (case_ref,))

    def drop_inbox_messages(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Delete received envelopes (sender, message id) whose clear body holds an erased
        record; de-duplication (``seen``) keeps them known."""
        return sum(
            self._conn.execute(
                "DELETE FROM inbox WHERE sender = ? AND message_id = ?", (sender, mid)
            ).rowcount
            for sender, mid in messages
        )

    def abandon_undelivered(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Envelopes of an erased record not yet delivered (peer, message id): their
        payload erased, dead with reason ``record_purged`` (never requeued)."""
        return sum(
            self._conn.execute(
                "UPDATE outbox SET payload = ?, state = 'dead', reason = ? "
                "WHERE peer_id = ? AND message_id = ? AND state != 'delivered'",
                (b"", PURGED_REASON, peer, mid),
            ).rowcount
            for peer, mid in messages
        )

    def place_hold(self, row: HoldRow) -> None:
        """``ConflictError(hold_exists)`` if the record is already held."""
        if self.hold(row.record_id) is not None:
            raise ConflictError(
                "hold_exists", f"{row.record_id} is already under a legal hold", "record"
            )
        self._conn.execute(
            f"INSERT INTO legal_holds ({_HOLD_COLS}) VALUES (?, ?, ?, ?)",
            (row.record_id, row.reason, row.placed_by, row.placed_at),
        )

    def release_hold(self, record_id: str) -> HoldRow | None:
        """The hold released, or None if there was none."""
        held = self.hold(record_id)
        if held is not None:
            self._conn.execute("DELETE FROM legal_holds WHERE record_id = ?", (record_id,))
        return held

    def record_disclosures(
        self, record_id: str, copies: Sequence[tuple[str, bytes]], at: int
    ) -> None:
        """The recipients (peer, message id) a record was sent to."""
        self._conn.executemany(
            "INSERT INTO disclosures (record_id, peer_id, message_id, disclosed_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (record_id, peer_id, message_id) DO NOTHING",
            [(record_id, peer, mid, at) for peer, mid in copies],
        )

    def record_review(self, record_id: str, at: int, by: str, reason: str) -> None:
        """An operator kept the record at its review: the next is due a period later."""
        self._conn.execute(
            "INSERT INTO record_reviews (record_id, reviewed_at, reviewed_by, reason) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET "
            "reviewed_at = excluded.reviewed_at, reviewed_by = excluded.reviewed_by, "
            "reason = excluded.reason",
            (record_id, at, by, reason),
        )

    def delete_notices(self, notice_ids: Sequence[str]) -> None:
        """Remove notices from the document index (retention)."""
        self._conn.executemany(
            "DELETE FROM doc_notices WHERE notice_id = ?", [(n,) for n in notice_ids]
        )

    def insert_purge(self, row: PurgeRow) -> None:
        """``ConflictError(record_purged)`` if the record was already purged."""
        if self.record_purge(row.record_id) is not None:
            raise ConflictError("record_purged", f"{row.record_id} was already purged", "record_id")
        self._conn.execute(
            f"INSERT INTO record_purges ({_PURGE_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
            (row.record_id, row.record_type, row.reason, row.approver, row.purged_at, row.notices),
        )
