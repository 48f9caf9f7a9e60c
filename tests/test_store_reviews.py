"""Periodic review in the store: which of this node's notices are due, on both backends.

A node holding a million notices asks on every ``status`` how many are due: the answer
must come from the notices old enough, not from reading them all.
"""

from __future__ import annotations

import secrets

import pytest

from exchange_node.store.protection import _DUE_ISSUED, _DUE_KEPT, _DUE_NOTICES
from exchange_node.store.records import NoticeRow

ME, PEER = "PHL-DFA", "JPN-ISA"
DAY = 86_400_000
NOW = 1_800_000_000_000
PERIOD = 10 * DAY


def _row(name: str, days_ago: int, *, kind: str = "STOLEN", supersedes: str | None = None,
         sender: str = ME) -> NoticeRow:  # fmt: skip
    at = NOW - days_ago * DAY
    return NoticeRow(
        notice_id=secrets.token_hex(16), sender_node=sender, sender_country=sender[:3],
        kind=kind, issuing_state="PHL", document_type="P", number=name, issued_at_ms=at,
        supersedes=supersedes, detection_place=None, detected_at_ms=None, detection_auth=None,
        effective_at_ms=at, remarks="", reason="x" if supersedes else "", message_id=None,
    )  # fmt: skip


@pytest.fixture
async def filled(open_store):
    """Notices of every kind of standing; returns (store, {name: notice id})."""
    store = await open_store()
    a = _row("A", 20)  # old, never reviewed: due
    b = _row("B", 5)  # too recent
    c = _row("C", 30)  # kept 3 days ago
    d = _row("D", 30)  # kept 15 days ago: due
    e = _row("E", 25)  # superseded by F...
    f = _row("E", 24, kind="REVOKED", supersedes=e.notice_id)  # ...which is due
    g = _row("G", 40)  # withdrawn by W
    w = _row("G", 39, kind="WITHDRAWAL", supersedes=g.notice_id)
    h = _row("H", 50, sender=PEER)  # a peer's: reviewed by its source
    rows = [a, b, c, d, e, f, g, w, h]
    await store.index_notices(rows, NOW - 60 * DAY)

    def kept(tx):
        tx.record_review(f"notice:{c.notice_id}", NOW - 3 * DAY, "dpo", "still needed")
        tx.record_review(f"notice:{d.notice_id}", NOW - 15 * DAY, "dpo", "still needed")

    await store.transaction(kept, label="record.review")
    yield store, {name: r.notice_id for name, r in zip("ABCDEFGWH", rows, strict=True)}
    await store.close()


async def test_the_notices_due_are_those_issued_or_kept_a_period_ago_oldest_first(filled):
    store, ids = filled
    due = store.notices_due_for_review(ME, NOW, PERIOD)
    assert [r.record_id for r in due] == [f"notice:{ids[n]}" for n in "FAD"]
    assert [r.since for r in due] == [NOW - 24 * DAY, NOW - 20 * DAY, NOW - 15 * DAY]
    assert all(r.due_at == r.since + PERIOD for r in due)
    assert due[0].document == ("PHL", "E")
    assert store.count_notices_due_for_review(ME, NOW, PERIOD) == 3
    assert [r.record_id for r in store.notices_due_for_review(ME, NOW, PERIOD, limit=2)] == [
        f"notice:{ids[n]}" for n in "FA"
    ]
    assert store.count_notices_due_for_review(ME, NOW, 100 * DAY) == 0


async def test_one_notice_under_review_is_found_due_or_not(filled):
    store, ids = filled
    [b] = store.notices_due_for_review(ME, NOW, 0, notice_id=ids["B"])
    assert (b.record_id, b.since) == (f"notice:{ids['B']}", NOW - 5 * DAY)
    [c] = store.notices_due_for_review(ME, NOW, 0, notice_id=ids["C"])
    assert c.since == NOW - 3 * DAY  # from when it was last kept
    for name in "EGWH":  # superseded, withdrawn, a withdrawal, a peer's
        assert store.notices_due_for_review(ME, NOW, 0, notice_id=ids[name]) == []
    assert store.notices_due_for_review(ME, NOW, 0, notice_id="") == []


async def test_counting_the_notices_due_reads_only_those_old_enough(filled, store_backend):
    if store_backend != "sqlite":
        pytest.skip("the plan is SQLite's; PostgreSQL plans by its statistics")
    store, _ = filled
    sql = _DUE_NOTICES.format(issued=_DUE_ISSUED, kept=_DUE_KEPT, only="")
    plan = " ".join(row[-1] for row in store._read(f"EXPLAIN QUERY PLAN {sql}", [ME, NOW] * 2))
    assert "doc_notices_sender_issued (sender_node=? AND issued_at_ms<?)" in plan
