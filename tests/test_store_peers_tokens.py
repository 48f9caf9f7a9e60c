"""Pinned peers, API tokens and node metadata."""

from __future__ import annotations

import hashlib

import pytest

from exchange_node.errors import ConflictError, NotFoundError, ValidationError
from exchange_node.store import OutboxItem, OutboxState, hash_token_secret

JPN = "JPN-ISA"
SECRET = "k3Jx9_vQm2pL8wRt5yZa0bNc7dEf4gHh"


@pytest.fixture
async def store(open_store):
    s = await open_store()
    yield s
    await s.close()


async def test_pinned_peer_is_returned_as_stored(store):
    peer = await store.upsert_peer(JPN, b"card-1", "fp-1", at=100, policy=["document_notice"])
    assert store.get_peer(JPN) == peer
    assert (peer.card, peer.fingerprint, peer.added_at, peer.paused, peer.policy) == (
        b"card-1", "fp-1", 100, False, ("document_notice",))  # fmt: skip


async def test_repinning_replaces_the_card_and_keeps_policy_and_added_at(store):
    await store.upsert_peer(JPN, b"card-1", "fp-1", at=100, policy=["document_notice"])
    await store.set_paused(JPN, True, at=150)
    peer = await store.upsert_peer(JPN, b"card-2", "fp-2", at=200)
    assert (peer.card, peer.fingerprint, peer.added_at, peer.updated_at) == (
        b"card-2", "fp-2", 100, 200)  # fmt: skip
    assert (peer.policy, peer.paused) == (("document_notice",), True)


async def test_policy_is_replaced_by_set_policy(store):
    await store.upsert_peer(JPN, b"card", "fp", at=1)
    await store.set_policy(JPN, ["case_event", "document_notice"], at=2)
    assert store.get_peer(JPN).policy == ("case_event", "document_notice")


async def test_contact_success_clears_the_last_error(store):
    await store.upsert_peer(JPN, b"card", "fp", at=1)
    await store.touch_contact(JPN, at=10, error="tls_handshake_failed")
    failed = store.get_peer(JPN)
    await store.touch_contact(JPN, at=20, error=None)
    ok = store.get_peer(JPN)
    assert (failed.last_error, failed.last_error_at, failed.last_contact_at) == (
        "tls_handshake_failed", 10, None)  # fmt: skip
    assert (ok.last_error, ok.last_contact_at) == (None, 20)


async def test_removing_peer_with_queued_messages_is_refused_with_the_count(store):
    await store.upsert_peer(JPN, b"card", "fp", at=1)
    await store.enqueue([OutboxItem(JPN, bytes([n]) * 16, b"e", b"p", 1) for n in range(3)])
    with pytest.raises(ConflictError) as err:
        await store.remove_peer(JPN)
    assert err.value.code == "peer_has_queued_messages"
    assert "3 queued" in err.value.message
    assert store.get_peer(JPN) is not None


async def test_forced_removal_turns_queued_messages_into_dead_letters(store):
    await store.upsert_peer(JPN, b"card", "fp", at=1)
    await store.enqueue([OutboxItem(JPN, bytes([n]) * 16, b"e", b"p", 1) for n in range(2)])
    assert await store.remove_peer(JPN, force=True) == 2
    assert store.get_peer(JPN) is None
    dead = store.dead_letters(JPN)
    assert [(r.state, r.reason) for r in dead] == [(OutboxState.DEAD, "peer_removed")] * 2
    [stats] = store.queue_stats()
    assert (stats.known, stats.depth, stats.dead) == (False, 0, 2)


async def test_removing_unknown_peer_is_not_found(store):
    with pytest.raises(NotFoundError):
        await store.remove_peer("XXX-NONE")


async def test_token_secret_is_stored_only_as_its_sha256(store, store_backend, tmp_path):
    token = await store.create_token("border-system", "document_officer", SECRET, at=1)
    if store_backend == "postgresql":
        rows = store._read("SELECT * FROM tokens")
        raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)
    await store.close()
    if store_backend == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in raw
    assert (
        token.secret_hash == hashlib.sha256(SECRET.encode()).digest() == hash_token_secret(SECRET)
    )


async def test_active_token_is_found_by_the_hash_of_its_secret(store):
    token = await store.create_token("border-system", "document_officer", SECRET, at=1)
    assert store.find_active_token(hash_token_secret(SECRET)) == token
    assert store.find_active_token(hash_token_secret(SECRET + "x")) is None


async def test_revoked_token_is_no_longer_found_and_its_name_is_free_again(store):
    await store.create_token("border-system", "document_officer", SECRET, at=1)
    revoked = await store.revoke_token("border-system", at=5)
    assert revoked.revoked_at == 5
    assert store.find_active_token(hash_token_secret(SECRET)) is None
    again = await store.create_token("border-system", "auditor", SECRET[::-1], at=6)
    assert [t.id for t in store.list_tokens()] == [again.id]
    assert len(store.list_tokens(include_revoked=True)) == 2


async def test_active_token_names_are_unique(store):
    await store.create_token("ops", "operator", SECRET, at=1)
    with pytest.raises(ConflictError) as err:
        await store.create_token("ops", "operator", SECRET[::-1], at=2)
    assert err.value.code == "token_name_taken"


async def test_token_revoked_by_id_cannot_be_revoked_twice(store):
    token = await store.create_token("ops", "operator", SECRET, at=1)
    await store.revoke_token(token.id, at=2)
    with pytest.raises(ConflictError):
        await store.revoke_token(token.id, at=3)


@pytest.mark.parametrize(
    ("role", "secret", "code"),
    [("admin", SECRET, "token_role_unknown"), ("operator", "short", "token_secret_too_short")],
)
async def test_token_with_unknown_role_or_weak_secret_is_refused(store, role, secret, code):
    with pytest.raises(ValidationError) as err:
        await store.create_token("ops", role, secret, at=1)
    assert err.value.code == code


async def test_meta_values_are_replaced(store):
    assert store.get_meta("audit.size") is None
    await store.set_meta("audit.size", b"1")
    await store.set_meta("audit.size", b"2")
    assert store.get_meta("audit.size") == b"2"
