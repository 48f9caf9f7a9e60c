"""Outbox: FIFO queues per peer, receipts, attempts, dead letters, status."""

from __future__ import annotations

import pytest

from exchange_node.errors import ConflictError, NotFoundError, ValidationError
from exchange_node.store import (
    OutboxItem,
    OutboxState,
    Outcome,
    ReceiptRecord,
)

JPN, PHL, IOM = "JPN-ISA", "PHL-DFA", "IOM-MNL"


@pytest.fixture
async def store(open_store):
    s = await open_store()
    for peer in (JPN, PHL, IOM):
        await s.upsert_peer(peer, b"card-" + peer.encode(), "fp-" + peer, at=1)
    yield s
    await s.close()


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def item(peer: str, n: int, created_at: int = 1000) -> OutboxItem:
    return OutboxItem(peer, mid(n), b"sealed-%d" % n, b"payload-%d" % n, created_at + n)


def receipt(batch: int = 1, at: int = 5000) -> ReceiptRecord:
    return ReceiptRecord(batch_id=b"batch-%d" % batch, receipt=b"signed-receipt", received_at=at)


async def test_enqueue_returns_increasing_ids_in_item_order(store):
    ids = await store.enqueue([item(JPN, 1), item(PHL, 2), item(JPN, 3)])
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_pending_is_fifo_per_peer(store):
    await store.enqueue([item(JPN, 1), item(PHL, 2)])
    await store.enqueue([item(JPN, 3)])
    await store.enqueue([item(PHL, 4), item(JPN, 5)])
    assert [r.message_id for r in store.pending(JPN, 10)] == [mid(1), mid(3), mid(5)]
    assert [r.message_id for r in store.pending(PHL, 10)] == [mid(2), mid(4)]
    assert [r.message_id for r in store.pending(JPN, 2)] == [mid(1), mid(3)]


async def test_pending_rows_carry_envelope_and_payload(store):
    [oid] = await store.enqueue([item(JPN, 1)])
    [row] = store.pending(JPN, 1)
    assert (row.id, row.envelope, row.payload, row.created_at) == (
        oid, b"sealed-1", b"payload-1", 1001)  # fmt: skip
    assert (row.state, row.outcome, row.attempts) == (OutboxState.QUEUED, None, 0)


async def test_enqueue_to_unknown_peer_is_refused(store):
    with pytest.raises(NotFoundError) as err:
        await store.enqueue([item("XXX-NOPE", 1)])
    assert err.value.code == "peer_not_found"


async def test_enqueue_is_all_or_nothing_on_a_reused_message_id(store):
    await store.enqueue([item(JPN, 1)])
    with pytest.raises(ConflictError) as err:
        await store.enqueue([item(JPN, 2), item(JPN, 1)])
    assert err.value.code == "message_id_exists"
    assert [r.message_id for r in store.pending(JPN, 10)] == [mid(1)]


async def test_same_message_to_several_peers_has_one_status_row_per_recipient(store):
    await store.enqueue([item(JPN, 1), item(PHL, 1), item(IOM, 1)])
    status = store.message_status(mid(1))
    assert [(s.peer_id, s.state) for s in status] == [
        (IOM, OutboxState.QUEUED), (JPN, OutboxState.QUEUED), (PHL, OutboxState.QUEUED)]  # fmt: skip


async def test_malformed_message_id_is_refused_with_its_field(store):
    with pytest.raises(ValidationError) as err:
        await store.enqueue([item(JPN, 1), OutboxItem(JPN, b"short", b"e", b"p", 1)])
    assert err.value.field == "items[1].message_id"


async def test_receipt_marks_accepted_and_duplicate_delivered_and_rejected_dead(store):
    a, d, r = await store.enqueue([item(JPN, 1), item(JPN, 2), item(JPN, 3)])
    rid = await store.record_receipt(
        JPN,
        receipt(),
        [(a, Outcome.ACCEPTED, None), (d, Outcome.DUPLICATE, None),
         (r, Outcome.REJECTED, "expired")],
    )  # fmt: skip
    by_id = {s.outbox_id: s for s in store.message_status(mid(1)) + store.message_status(mid(2))
             + store.message_status(mid(3))}  # fmt: skip
    assert (by_id[a].state, by_id[a].outcome, by_id[a].delivered_at, by_id[a].receipt_id) == (
        OutboxState.DELIVERED, Outcome.ACCEPTED, 5000, rid)  # fmt: skip
    assert (by_id[d].state, by_id[d].outcome) == (OutboxState.DELIVERED, Outcome.DUPLICATE)
    assert (by_id[r].state, by_id[r].outcome, by_id[r].reason) == (
        OutboxState.DEAD, Outcome.REJECTED, "expired")  # fmt: skip
    assert store.pending(JPN, 10) == []


async def test_receipt_bytes_are_kept_as_received(store):
    [a] = await store.enqueue([item(JPN, 1)])
    rid = await store.record_receipt(JPN, receipt(7), [(a, Outcome.ACCEPTED, None)])
    stored = store.get_receipt(rid)
    assert (stored.peer_id, stored.batch_id, stored.receipt, stored.received_at) == (
        JPN, b"batch-7", b"signed-receipt", 5000)  # fmt: skip


async def test_delivery_erases_the_payload_but_keeps_the_envelope(store):
    [a] = await store.enqueue([item(JPN, 1)])
    await store.record_receipt(JPN, receipt(), [(a, Outcome.ACCEPTED, None)])
    rows = store._read("SELECT payload, envelope FROM outbox WHERE id = ?", (a,))
    assert [tuple(r) for r in rows] == [(None, b"sealed-1")]


async def test_first_receipt_wins_over_a_later_one(store):
    [a] = await store.enqueue([item(JPN, 1)])
    first = await store.record_receipt(JPN, receipt(1), [(a, Outcome.ACCEPTED, None)])
    await store.record_receipt(JPN, receipt(2, at=9000), [(a, Outcome.DUPLICATE, None)])
    [status] = store.message_status(mid(1))
    assert (status.outcome, status.receipt_id, status.delivered_at) == (
        Outcome.ACCEPTED, first, 5000)  # fmt: skip


async def test_receipt_naming_another_peers_row_is_refused_whole(store):
    [a] = await store.enqueue([item(JPN, 1)])
    [p] = await store.enqueue([item(PHL, 2)])
    with pytest.raises(ValidationError) as err:
        await store.record_receipt(
            JPN, receipt(), [(a, Outcome.ACCEPTED, None), (p, Outcome.ACCEPTED, None)]
        )
    assert err.value.code == "outbox_id_unknown"
    assert [r.id for r in store.pending(JPN, 10)] == [a]


async def test_record_attempt_counts_attempts_and_keeps_the_last_error(store):
    ids = await store.enqueue([item(JPN, 1), item(JPN, 2)])
    await store.record_attempt(JPN, ids, at=2000, error="connect_timeout")
    await store.record_attempt(JPN, ids[:1], at=3000, error="http_503")
    first, second = store.pending(JPN, 10)
    assert (first.attempts, first.last_attempt_at, first.last_error) == (2, 3000, "http_503")
    assert (second.attempts, second.last_attempt_at, second.last_error) == (
        1, 2000, "connect_timeout")  # fmt: skip


async def test_dead_letter_can_be_resealed_and_requeued_in_its_original_place(store):
    a, b = await store.enqueue([item(JPN, 1), item(JPN, 2)])
    await store.record_receipt(JPN, receipt(), [(a, Outcome.REJECTED, "unknown_key")])
    assert [r.id for r in store.dead_letters(JPN)] == [a]
    await store.replace_envelope(a, b"resealed")
    await store.retry_dead_letter(a)
    rows = store.pending(JPN, 10)
    assert [(r.id, r.envelope, r.outcome, r.reason) for r in rows] == [
        (a, b"resealed", None, None), (b, b"sealed-2", None, None)]  # fmt: skip
    assert store.dead_letters() == []


async def test_delivered_row_cannot_be_requeued_or_resealed(store):
    [a] = await store.enqueue([item(JPN, 1)])
    await store.record_receipt(JPN, receipt(), [(a, Outcome.ACCEPTED, None)])
    with pytest.raises(ConflictError) as requeue:
        await store.retry_dead_letter(a)
    with pytest.raises(ConflictError) as reseal:
        await store.replace_envelope(a, b"other")
    assert (requeue.value.code, reseal.value.code) == (
        "outbox_row_not_dead", "outbox_row_delivered")  # fmt: skip


async def test_queue_stats_show_depth_age_and_counts_per_peer(store):
    a, _, _ = await store.enqueue([item(JPN, 1), item(JPN, 2), item(JPN, 3)])
    await store.record_receipt(JPN, receipt(), [(a, Outcome.ACCEPTED, None)])
    await store.enqueue([item(PHL, 4)])
    await store.touch_contact(JPN, at=6000, error=None)
    await store.touch_contact(PHL, at=7000, error="connect_refused")
    stats = {s.peer_id: s for s in store.queue_stats()}
    assert (stats[JPN].depth, stats[JPN].oldest_queued_at, stats[JPN].delivered) == (2, 1002, 1)
    assert (stats[JPN].last_contact_at, stats[JPN].last_error) == (6000, None)
    assert (stats[PHL].depth, stats[PHL].last_error, stats[PHL].last_error_at) == (
        1, "connect_refused", 7000)  # fmt: skip
    assert (stats[IOM].depth, stats[IOM].oldest_queued_at, stats[IOM].dead) == (0, None, 0)


async def test_dead_letters_across_peers_are_listed_oldest_first(store):
    a, b = await store.enqueue([item(JPN, 1), item(PHL, 2)])
    await store.record_receipt(PHL, receipt(), [(b, Outcome.REJECTED, "bad_signature")])
    await store.record_receipt(JPN, receipt(), [(a, Outcome.REJECTED, "expired")])
    assert [(r.id, r.reason) for r in store.dead_letters()] == [
        (a, "expired"), (b, "bad_signature")]  # fmt: skip
    assert {s.peer_id: s.dead for s in store.queue_stats()} == {IOM: 0, JPN: 1, PHL: 1}


async def test_message_status_of_unknown_message_is_empty(store):
    assert store.message_status(mid(99)) == []


async def test_receipt_with_an_unknown_outcome_is_refused_before_anything_is_stored(store):
    [a] = await store.enqueue([item(JPN, 1)])
    with pytest.raises(ValidationError) as err:
        await store.record_receipt(JPN, receipt(), [(a, "maybe", None)])
    assert (err.value.code, err.value.field) == ("outcome_invalid", "outcomes[0]")
    assert [r.id for r in store.pending(JPN, 10)] == [a]
