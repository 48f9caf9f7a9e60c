"""Inbox: de-duplication by (sender, message id), feed, retention; receipts this node sent."""

from __future__ import annotations

import hashlib

import pytest

from exchange_node.store import InboxItem, InboxOutcome, Outcome

PHL, IOM = "PHL-DFA", "IOM-MNL"


@pytest.fixture
async def store(open_store):
    s = await open_store()
    yield s
    await s.close()


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def envelope(sender: str, n: int, kind: str = "document_notice", at: int = 1000,
             variant: bytes = b"") -> InboxItem:  # fmt: skip
    body = b"body-%d" % n + variant
    return InboxItem(
        sender=sender,
        message_id=mid(n),
        envelope_hash=hashlib.sha256(sender.encode() + body).digest(),
        kind=kind,
        header=b"header-%d" % n,
        body=body,
        signature=b"sig-%d" % n,
        received_at=at,
    )


async def test_new_message_is_accepted_and_stored_with_a_cursor(store):
    [outcome] = await store.accept([envelope(PHL, 1)])
    assert outcome.outcome is Outcome.ACCEPTED and outcome.cursor is not None
    row = store.get_inbox(PHL, mid(1))
    assert (row.cursor, row.header, row.body, row.signature, row.kind) == (
        outcome.cursor, b"header-1", b"body-1", b"sig-1", "document_notice")  # fmt: skip


async def test_repeat_with_same_hash_is_duplicate_with_original_cursor(store):
    [first] = await store.accept([envelope(PHL, 1)])
    [again] = await store.accept([envelope(PHL, 1, at=2000)])
    assert again == InboxOutcome(Outcome.DUPLICATE, cursor=first.cursor)
    assert store.get_inbox(PHL, mid(1)).received_at == 1000


async def test_repeat_with_different_hash_is_rejected_as_reused_id(store):
    await store.accept([envelope(PHL, 1)])
    [again] = await store.accept([envelope(PHL, 1, variant=b"-tampered")])
    assert again == InboxOutcome(Outcome.REJECTED, reason="message_id_reused")
    assert store.get_inbox(PHL, mid(1)).body == b"body-1"


async def test_same_message_id_from_different_senders_are_distinct(store):
    outcomes = await store.accept([envelope(PHL, 1), envelope(IOM, 1)])
    assert [o.outcome for o in outcomes] == [Outcome.ACCEPTED, Outcome.ACCEPTED]


async def test_duplicates_within_one_batch_are_detected(store):
    first, second, third = await store.accept(
        [envelope(PHL, 1), envelope(PHL, 1), envelope(PHL, 1, variant=b"x")]
    )
    assert second == InboxOutcome(Outcome.DUPLICATE, cursor=first.cursor)
    assert third.reason == "message_id_reused"


async def test_deduplication_survives_purge_of_inbox_rows(store):
    [first] = await store.accept([envelope(PHL, 1, at=1000)])
    result = await store.purge_before(5000, seen_before=500)
    assert (result.inbox, result.seen) == (1, 0)
    assert store.get_inbox(PHL, mid(1)) is None
    dup, reused = await store.accept(
        [envelope(PHL, 1, at=6000), envelope(PHL, 1, at=6000, variant=b"x")]
    )
    assert dup == InboxOutcome(Outcome.DUPLICATE, cursor=first.cursor)
    assert reused.reason == "message_id_reused"


async def test_purge_forgets_ids_older_than_the_window(store):
    await store.accept([envelope(PHL, 1, at=1000), envelope(PHL, 2, at=9000)])
    result = await store.purge_before(5000)
    assert (result.inbox, result.seen) == (1, 1)
    [again] = await store.accept([envelope(PHL, 1, at=9500)])
    assert again.outcome is Outcome.ACCEPTED
    assert store.get_inbox(PHL, mid(2)) is not None


async def test_seen_entries_outlive_the_inbox_rows_they_describe(store):
    await store.accept([envelope(PHL, 1, at=1000)])
    result = await store.purge_before(500, seen_before=5000)  # inbox kept: seen kept too
    assert (result.inbox, result.seen) == (0, 0)
    [again] = await store.accept([envelope(PHL, 1, at=6000)])
    assert again.outcome is Outcome.DUPLICATE


async def test_feed_pages_by_cursor_in_arrival_order(store):
    await store.accept([envelope(PHL, n) for n in range(1, 6)])
    page1 = store.inbox_feed(0, 2)
    page2 = store.inbox_feed(page1[-1].cursor, 2)
    page3 = store.inbox_feed(page2[-1].cursor, 2)
    assert [r.message_id for r in page1 + page2 + page3] == [mid(n) for n in range(1, 6)]
    assert store.inbox_feed(page3[-1].cursor, 2) == []


async def test_feed_filters_by_kind(store):
    await store.accept([envelope(PHL, 1), envelope(IOM, 2, kind="case_event"), envelope(PHL, 3)])
    assert [r.message_id for r in store.inbox_feed(0, 10, kinds=["case_event"])] == [mid(2)]
    assert len(store.inbox_feed(0, 10, kinds=["document_notice", "case_event"])) == 3
    assert store.inbox_feed(0, 10, kinds=[]) == []


async def test_cursors_are_not_reused_after_purge(store):
    [old] = await store.accept([envelope(PHL, 1, at=1000)])
    await store.purge_before(2000)
    [new] = await store.accept([envelope(PHL, 2, at=3000)])
    assert new.cursor > old.cursor


async def test_sent_receipt_for_a_repeated_batch_is_the_first_one(store):
    first = await store.store_sent_receipt(PHL, b"batch-1", b"receipt-A", at=1000)
    second = await store.store_sent_receipt(PHL, b"batch-1", b"receipt-B", at=2000)
    assert first == second == b"receipt-A"
    assert store.get_sent_receipt(PHL, b"batch-1") == b"receipt-A"
    assert store.get_sent_receipt(IOM, b"batch-1") is None


async def test_sent_receipts_are_purged_with_the_deduplication_window(store):
    await store.store_sent_receipt(PHL, b"batch-1", b"receipt-A", at=1000)
    result = await store.purge_before(5000)
    assert result.sent_receipts == 1
    assert store.get_sent_receipt(PHL, b"batch-1") is None
