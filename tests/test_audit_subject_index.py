"""The leaves' indexed ``subject_hash`` column (migration 10): the console's document and
case filter and the subject access report find a subject's entries through it, the
same entries a read of every leaf's bytes finds, including entries written before the
column existed; ``verify`` checks the column against the bytes. On both store backends.
"""

from __future__ import annotations

import itertools
import sqlite3

import aiohttp
import psycopg
import pytest
from console_support import browser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_api_support import Client, make_node, token

from exchange_node.audit.leaf import AuditEvent, LeafKind, keyed_hash
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.node import Node
from exchange_node.store.migrations import SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("node_store_backend")

CASE = "JPN-2026-AAAAAAAA"
_AUDITORS = itertools.count()


async def _look_up(node, number: str, officer: str) -> None:
    secret = await token(node, "document_officer", officer)
    async with aiohttp.ClientSession() as session:
        status, _ = await Client(session, node, secret).get(f"/api/v1/documents/PHL/{number}")
        assert status == 200


async def _read_case(node, officer: str) -> None:
    secret = await token(node, "case_officer", officer)
    async with aiohttp.ClientSession() as session:
        status, _ = await Client(session, node, secret).get(
            f"/api/v1/cases/{CASE}?purpose=oversight"
        )
        assert status == 404  # a read of an unknown case is audited too


def _seqs_in_bytes(node, subject: str) -> list[int]:
    """The entries about ``subject`` found the slow way: every leaf's bytes decoded."""
    return [
        leaf.seq
        for leaf in node.audit.iter_query(LeafFilter())
        if leaf.record.subject_hash == subject
    ]


async def _console_seqs(node, query: str) -> list[int]:
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "auditor", f"auditor-{next(_AUDITORS)}"))
        status, page, _ = await b.get(f"/console/audit?{query}")
    assert status == 200
    rows = page.split("<tbody>")[-1].split("</tbody>")[0].split('<tr><td class="n">')[1:]
    return [int(r.split("<")[0]) for r in rows]


async def _activity(node) -> tuple[str, str]:
    await _look_up(node, "P1111111", "narita-1")
    await _look_up(node, "P2222222", "kansai-2")
    await _look_up(node, "P1111111", "kansai-3")
    await _read_case(node, "officer-tanaka")
    return node.services.subject_hash("PHL", "P1111111"), node.services.case_subject_hash(CASE)


def _on_database(config, *statements: str) -> list[tuple]:
    """Run ``statements`` on the stopped node's database; the last one's rows."""
    rows: list[tuple] = []
    if config.store.url:
        with psycopg.connect(config.store.url, autocommit=True) as conn:
            for s in statements:
                cur = conn.execute(s)
                rows = cur.fetchall() if cur.description else []
    else:
        conn = sqlite3.connect(config.data_path / "node.sqlite", isolation_level=None)
        try:
            for s in statements:
                rows = conn.execute(s).fetchall()
        finally:
            conn.close()
    return rows


def _rewind_to_schema_9(config) -> None:
    """Make the stopped node's database what an earlier release left: no subject_hash
    column (so no index), none of the later migrations' columns (migrations 11 and 12
    only add indexes if missing) and schema version 9."""
    _on_database(
        config,
        "DROP INDEX audit_leaves_subject_seq",
        "ALTER TABLE audit_leaves DROP COLUMN subject_hash",
        "ALTER TABLE catchup DROP COLUMN paused_ms",  # migration 13
        "ALTER TABLE catchup DROP COLUMN paused_at",
        "UPDATE exchange_node_schema SET version = 9"
        if config.store.url
        else "PRAGMA user_version = 9",
    )


def _schema_version(config) -> int:
    query = (
        "SELECT version FROM exchange_node_schema" if config.store.url else "PRAGMA user_version"
    )
    return _on_database(config, query)[0][0]


def _leaf_columns(config) -> list[str]:
    if config.store.url:
        query = (
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_leaves'"
            " AND table_schema = current_schema()"
        )
    else:
        query = "SELECT name FROM pragma_table_info('audit_leaves')"
    return sorted(r[0] for r in _on_database(config, query))


async def test_the_document_and_case_filters_answer_what_the_leaf_bytes_hold(tmp_path):
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    try:
        document, case = await _activity(node)
        found = _seqs_in_bytes(node, document)
        assert len(found) == 2
        page = await _console_seqs(node, "doc_state=PHL&doc_number=P1111111")
        assert page == sorted(found, reverse=True)
        assert (
            await _console_seqs(node, "kind=document.lookup&doc_state=PHL&doc_number=P1111111")
            == page
        )
        (read,) = _seqs_in_bytes(node, case)
        assert await _console_seqs(node, f"case={CASE}") == [read]
        assert await _console_seqs(node, "doc_state=PHL&doc_number=P9999999") == []
        assert node.audit.verify().ok
    finally:
        await node.stop()


async def test_entries_written_before_the_column_existed_are_found_after_the_migration(tmp_path):
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    config = node.config
    try:
        document, case = await _activity(node)
        before = _seqs_in_bytes(node, document), _seqs_in_bytes(node, case)
    finally:
        await node.stop()
    _rewind_to_schema_9(config)
    node = await Node.open(config)
    await node.start()
    try:
        assert (await node.store.info()).schema_version == SCHEMA_VERSION
        page = await _console_seqs(node, "doc_state=PHL&doc_number=P1111111")
        assert page == sorted(before[0], reverse=True) and len(page) == 2
        assert await _console_seqs(node, f"case={CASE}") == before[1]
        await _look_up(node, "P1111111", "narita-3")  # written with the column from now on
        assert len(await _console_seqs(node, "doc_state=PHL&doc_number=P1111111")) == 3
        assert _seqs_in_bytes(node, document) == sorted(
            await _console_seqs(node, "doc_state=PHL&doc_number=P1111111")
        )
        assert node.audit.verify().ok  # the filled column agrees with every leaf's bytes
    finally:
        await node.stop()


async def test_a_migration_that_fails_part_way_leaves_schema_9_whole(tmp_path):
    """Migration 10 is one transaction: its last statement failing (an object already
    holds the index's name) leaves no column and version 9; once that is cleared the
    next start fills the column for every leaf."""
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    config = node.config
    try:
        document, _ = await _activity(node)
        before = _seqs_in_bytes(node, document)
    finally:
        await node.stop()
    _rewind_to_schema_9(config)
    old_columns = _leaf_columns(config)
    _on_database(config, "CREATE TABLE audit_leaves_subject_seq (x INTEGER)")
    with pytest.raises(Exception, match="audit_leaves_subject_seq"):
        await Node.open(config)
    assert _schema_version(config) == 9 and _leaf_columns(config) == old_columns
    assert "subject_hash" not in old_columns
    _on_database(config, "DROP TABLE audit_leaves_subject_seq")
    node = await Node.open(config)
    await node.start()
    try:
        assert _schema_version(config) == SCHEMA_VERSION
        page = await _console_seqs(node, "doc_state=PHL&doc_number=P1111111")
        assert page == sorted(before, reverse=True) and len(page) == 2
    finally:
        await node.stop()


def _event(i: int, subject: str = "") -> AuditEvent:
    return AuditEvent(
        time=1_780_000_000_000 + i, kind=LeafKind.DOCUMENT_LOOKUP, actor=f"desk-{i % 3}",
        subject_hash=subject, attrs={"found": "true"},
    )  # fmt: skip


def test_verify_names_a_subject_column_that_differs_from_the_leaf_bytes(tmp_path):
    path = tmp_path / "audit.sqlite"
    key = b"k" * 32
    with AuditLog(path, node_id="JPN-ISA") as log:
        log.append_many(_event(i, keyed_hash(key, f"PHL:P{i % 2}")) for i in range(6))
    with sqlite3.connect(path) as c:
        c.execute("UPDATE audit_leaves SET subject_hash = ? WHERE seq = 3", ("0" * 64,))
    with AuditLog(path, node_id="JPN-ISA") as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert [p.code for p in report.problems if p.seq == 3] == ["leaf_columns_mismatch"]


def test_a_stand_alone_file_made_before_the_column_gets_it_filled(tmp_path):
    path = tmp_path / "audit.sqlite"
    key = b"k" * 32
    subject = keyed_hash(key, "PHL:P1")
    with AuditLog(path, node_id="JPN-ISA") as log:
        log.append_many(_event(i, subject if i % 2 else "") for i in range(8))
    with sqlite3.connect(path) as c:
        c.execute("DROP INDEX audit_leaves_subject_seq")
        c.execute("ALTER TABLE audit_leaves DROP COLUMN subject_hash")
    with AuditLog(path, node_id="JPN-ISA", signing_key=Ed25519PrivateKey.generate()) as log:
        assert [leaf.seq for leaf in log.select(LeafFilter(subject_hash=subject))] == [1, 3, 5, 7]
        with sqlite3.connect(path) as c:
            stored = c.execute("SELECT seq, subject_hash FROM audit_leaves ORDER BY seq").fetchall()
        assert stored == [(i, subject if i % 2 else None) for i in range(8)]
        assert log.verify().ok
