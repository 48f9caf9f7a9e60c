"""Delivery-path defects found in review, each pinned by the behaviour it broke: FIFO
when a batch needs re-sealing, a worker surviving a failed queue read, a peer's key
revocation surviving a reload of the peers."""

from __future__ import annotations

import pytest

from exchange_node.identity import revoke_key
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.store.base import StoreError
from tests.node_helpers import fraud_notice, make_net, now_ms, settled, wait_for

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"
DAY_MS = 86_400_000


@pytest.fixture
async def net(tmp_path):
    net = await make_net(
        tmp_path, [JPN, PHL], options={JPN: {"batch_size": 2}, PHL: {"retention_days": 1}}
    )
    yield net
    await net.stop_all()


async def _set_paused(node, peer: str, paused: bool) -> None:
    await node.store.set_paused(peer, paused, now_ms())
    node.reload_peers()


async def test_notices_resealed_after_an_expired_batch_still_arrive_before_later_ones(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    await _set_paused(jpn, PHL, True)
    # Queued while the link was down for longer than the peer's freshness window.
    jpn.clock = lambda: now_ms() - 2 * DAY_MS
    old = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0] for i in range(2)]
    jpn.clock = now_ms
    new = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0] for i in range(2, 4)]
    sent = [s.message_id for s in old + new]

    await _set_paused(jpn, PHL, False)
    await wait_for(lambda: settled(jpn.store, sent), timeout=10, what="delivery")

    inbox = [r.message_id for r in phl.store.inbox_feed(0, 1000) if r.sender == JPN]
    assert inbox == sent


async def test_a_failed_queue_read_does_not_stop_the_peer_worker(net):
    await net[PHL].start()
    jpn = await net[JPN].open()
    read = jpn.store.pending
    failures = []

    def flaky_pending(peer_id: str, limit: int, lane=None):
        if not failures:
            failures.append(peer_id)
            raise StoreError("store_unavailable", "the database could not be read (locked)")
        return read(peer_id, limit, lane)

    jpn.store.pending = flaky_pending
    await jpn.start()
    [sub] = await jpn.submit(fraud_notice(), [PHL])

    await wait_for(lambda: settled(jpn.store, [sub.message_id]), timeout=5, what="delivery")
    assert failures == [PHL]


async def test_a_revocation_applied_while_the_peers_are_reloaded_is_kept(net):
    jpn = await net[JPN].open()
    phl_keys = net[PHL].keys()
    kid = phl_keys.local.signing_key.key_id
    signed = revoke_key(phl_keys, kid, now_ms=now_ms(), reason="key compromised")
    write = jpn.store.set_meta

    async def set_meta_during_reload(key: str, value: bytes, **kwargs) -> None:
        jpn.reload_peers()  # a watch tick lands while the revocation is being written
        await write(key, value, **kwargs)

    jpn.store.set_meta = set_meta_during_reload
    await jpn.directory.accept_revocation(signed, actor=PHL)

    assert kid in jpn.keyring.revoked
    with pytest.raises(OpenError) as refused:
        jpn.keyring.signing_key(PHL, kid, now_ms())
    assert refused.value.reason is Reason.KEY_REVOKED
