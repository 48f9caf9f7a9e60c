"""Units of work: one transaction per operation, audit leaves included.

``store.transaction(work)`` commits every write ``work`` made, state rows and audit
leaves alike, or none of them; concurrent units share a commit (group commit) and still
stand or fall alone. The audit log lives in the node's database; a log kept in a file of
its own by an earlier release is adopted whole.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from exchange_node.audit import merkle
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.audit.migrate import adopt_audit_file
from exchange_node.errors import ConflictError
from exchange_node.store import OutboxItem, SqliteStore

JPN, PHL = "JPN-ISA", "PHL-DFA"


SUBJECT = "ab" * 32


def event(i: int) -> AuditEvent:
    return AuditEvent(time=i, kind=LeafKind.ENVELOPE_RECEIVED, actor=PHL, peer=PHL)


def item(n: int) -> OutboxItem:
    return OutboxItem(PHL, n.to_bytes(16, "big"), b"sealed", b"payload", 1000 + n)


@pytest.fixture
async def node_db(open_store):
    store = await open_store()
    audit = AuditLog(store.path, node_id=JPN, connection=store.audit_connection())
    store.attach_audit(audit.append_on)
    await store.upsert_peer(PHL, b"card", "fp", at=1)
    yield store, audit
    await store.close()
    audit.close()


async def test_a_unit_commits_its_rows_and_its_leaves_together(node_db):
    store, audit = node_db

    def work(tx):
        ids = tx.enqueue([item(1), item(2)])
        return ids, tx.audit([event(1), event(2)])

    ids, seqs = await store.transaction(work, label="test")

    assert [r.id for r in store.pending(PHL, 10)] == ids
    assert list(seqs) == [0, 1] and audit.size == 2
    assert audit.root() == merkle.root(audit.leaf(i).data for i in range(2))


async def test_a_unit_that_fails_after_writing_leaves_nothing_behind(node_db):
    store, audit = node_db

    def work(tx):
        tx.enqueue([item(1)])
        tx.audit([event(1)])
        tx.enqueue([item(1)])  # the same message id again: refused

    with pytest.raises(ConflictError) as refused:
        await store.transaction(work, label="test")

    assert refused.value.code == "message_id_exists"
    assert store.pending(PHL, 10) == [] and audit.size == 0
    # The tree goes on from what was committed, not from the rolled-back leaf.
    await store.append_audit([event(7)])
    assert audit.size == 1 and audit.leaf(0).record.time == 7
    assert audit.root() == merkle.root([audit.leaf(0).data])


async def test_concurrent_units_share_commits_and_a_failing_one_fails_alone(node_db):
    store, audit = node_db

    def good(n):
        return lambda tx: (tx.enqueue([item(n)]), tx.audit([event(n)]))[1].start

    def bad(tx):
        tx.audit([event(99)])
        raise ValueError("refused by the unit itself")

    results = await asyncio.gather(
        *(store.transaction(good(n), label="good") for n in range(50)),
        store.transaction(bad, label="bad"),
        return_exceptions=True,
    )

    assert isinstance(results[-1], ValueError)
    assert sorted(results[:-1]) == list(range(50))
    assert len(store.pending(PHL, 100)) == 50 and audit.size == 50
    assert {audit.leaf(i).record.time for i in range(50)} == set(range(50))
    assert audit.root() == merkle.root(audit.leaf(i).data for i in range(50))
    assert store.writer_stats().transactions < 51  # some of them shared a commit


async def test_leaves_appended_by_another_process_are_built_upon(node_db):
    store, audit = node_db
    await store.append_audit([event(1)])
    connection = store.audit_connection()
    with AuditLog(store.path, node_id=JPN, connection=connection) as other:  # e.g. the CLI
        other.append_many([event(2), event(3)])

    await store.append_audit([event(4)])

    assert [audit.leaf(i).record.time for i in range(4)] == [1, 2, 3, 4]
    assert audit.root() == merkle.root(audit.leaf(i).data for i in range(4))


# --- an audit log of an earlier release, in audit.sqlite ---------------------------------------


def old_audit_file(data, leaves: int) -> bytes:
    """An audit.sqlite as releases before schema 3 wrote it (tables without prefix, no
    subject_hash column); the odd leaves are about subject ``SUBJECT``."""
    path = data / "audit.sqlite"
    with AuditLog(path, node_id=JPN) as log:
        log.append_many(
            AuditEvent(time=i, kind=LeafKind.DOCUMENT_LOOKUP, actor=PHL, subject_hash=SUBJECT)
            if i % 2
            else event(i)
            for i in range(leaves)
        )
        root = log.root()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX audit_leaves_subject_seq")
    conn.execute("ALTER TABLE audit_leaves DROP COLUMN subject_hash")
    for table in ("meta", "leaves", "nodes", "checkpoints", "peer_checkpoints"):
        conn.execute(f"ALTER TABLE audit_{table} RENAME TO {table}")
    conn.commit()
    conn.close()
    return root


async def test_an_audit_file_of_an_earlier_release_is_adopted_whole(tmp_path):
    root = old_audit_file(tmp_path, 5)
    SqliteStore.prepare(tmp_path / "node.sqlite")

    assert adopt_audit_file(tmp_path, tmp_path / "node.sqlite")

    with AuditLog(tmp_path / "node.sqlite", node_id=JPN) as log:
        assert log.size == 5 and log.root() == root
        # The subject column is filled from the adopted leaves' bytes.
        assert [leaf.seq for leaf in log.select(LeafFilter(subject_hash=SUBJECT))] == [1, 3]
    assert not (tmp_path / "audit.sqlite").exists()
    assert (tmp_path / "audit.sqlite.adopted").is_file()
    assert not adopt_audit_file(tmp_path, tmp_path / "node.sqlite")  # nothing left to do


async def test_adopting_again_after_a_crash_before_the_rename_changes_nothing(tmp_path):
    root = old_audit_file(tmp_path, 3)
    SqliteStore.prepare(tmp_path / "node.sqlite")
    adopt_audit_file(tmp_path, tmp_path / "node.sqlite")
    (tmp_path / "audit.sqlite.adopted").rename(tmp_path / "audit.sqlite")  # as if not renamed

    assert adopt_audit_file(tmp_path, tmp_path / "node.sqlite")

    with AuditLog(tmp_path / "node.sqlite", node_id=JPN) as log:
        assert log.size == 3 and log.root() == root


async def test_two_different_logs_are_refused_and_neither_is_changed(tmp_path):
    old_audit_file(tmp_path, 3)
    SqliteStore.prepare(tmp_path / "node.sqlite")
    with AuditLog(tmp_path / "node.sqlite", node_id=JPN) as log:
        log.append_many([event(100)])

    with pytest.raises(ConflictError) as refused:
        adopt_audit_file(tmp_path, tmp_path / "node.sqlite")

    assert refused.value.code == "audit_adopt_conflict"
    assert (tmp_path / "audit.sqlite").is_file()
    with AuditLog(tmp_path / "node.sqlite", node_id=JPN) as log:
        assert log.size == 1
