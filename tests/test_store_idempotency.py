"""Idempotency records: kept in the transaction of the change they answer, per token,
for the retention window."""

from __future__ import annotations

import hashlib

import pytest

from exchange_node.errors import ConflictError
from exchange_node.store import IdempotencyRecord, OutboxItem

PHL = "PHL-DFA"


def record(key: str = "k-1", token_id: int = 1, at: int = 1000, body: bytes = b"{}"):
    return IdempotencyRecord(
        token_id=token_id,
        key=key,
        request_hash=hashlib.sha256(body).digest(),
        method="POST",
        path="/api/v1/notices",
        status=202,
        response=b'{"notice_id":"ab"}',
        created_at=at,
    )


def item(n: int) -> OutboxItem:
    return OutboxItem(PHL, n.to_bytes(16, "big"), b"sealed", b"payload", 1000 + n)


@pytest.fixture
async def store(open_store):
    store = await open_store()
    await store.upsert_peer(PHL, b"card", "fp", at=1)
    yield store
    await store.close()


async def test_a_record_is_read_back_by_its_token_and_key(store):
    await store.transaction(lambda tx: tx.remember_idempotency(record()), label="test")
    assert store.idempotency_record(1, "k-1") == record()
    assert store.idempotency_record(2, "k-1") is None  # another token's key is another key
    assert store.idempotency_record(1, "k-2") is None


async def test_a_second_record_for_the_same_token_and_key_rolls_its_whole_transaction_back(store):
    await store.transaction(lambda tx: tx.remember_idempotency(record()), label="test")

    def again(tx):
        tx.enqueue([item(1)])
        tx.remember_idempotency(record(body=b"other"))

    with pytest.raises(ConflictError) as err:
        await store.transaction(again, label="test")
    assert err.value.code == "idempotency_key_exists"
    assert store.pending(PHL, 10) == []
    assert store.idempotency_record(1, "k-1") == record()


async def test_the_same_key_of_two_tokens_is_two_records(store):
    await store.transaction(lambda tx: tx.remember_idempotency(record(token_id=1)), label="t")
    await store.transaction(lambda tx: tx.remember_idempotency(record(token_id=2)), label="t")
    assert store.idempotency_record(2, "k-1") == record(token_id=2)


async def test_records_are_purged_with_the_deduplication_window(store):
    await store.transaction(lambda tx: tx.remember_idempotency(record("old", at=1000)), label="t")
    await store.transaction(lambda tx: tx.remember_idempotency(record("new", at=9000)), label="t")
    result = await store.purge_before(5000)
    assert result.idempotency_keys == 1
    assert store.idempotency_record(1, "old") is None
    assert store.idempotency_record(1, "new") is not None
