"""Delivery between real nodes on loopback: order after an outage, duplicate batches,
dead letters with their reason."""

from __future__ import annotations

import asyncio
from itertools import groupby

import aiohttp
import pytest

from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.receipts import verify_receipt
from exchange_node.store.records import OutboxState, Outcome
from tests.node_helpers import (
    batch_bytes,
    fraud_notice,
    make_net,
    now_ms,
    run_cli,
    settled,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def test_notices_queued_during_an_outage_arrive_in_order_exactly_once(net):
    jpn = await net[JPN].start()
    phl = await net[PHL].start()
    [first] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [first.message_id]), what="first delivery")
    await net[PHL].stop()

    submitted = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0] for i in range(20)]
    sent = {r.message_id: r.envelope for r in jpn.store.pending(PHL, 100)}
    assert list(sent) == [s.message_id for s in submitted]

    phl = await net[PHL].start()
    await wait_for(lambda: settled(jpn.store, list(sent)), what="delivery after the outage")

    inbox = [r for r in phl.store.inbox_feed(0, 1000) if r.sender == JPN]
    assert [r.message_id for r in inbox] == [first.message_id, *sent]
    assert [r.cursor for r in inbox] == sorted(r.cursor for r in inbox)

    rows = [jpn.store.message_status(mid)[0] for mid in sent]
    assert all(r.state is OutboxState.DELIVERED for r in rows)
    assert all(r.outcome is Outcome.ACCEPTED and r.receipt_id is not None for r in rows)
    for receipt_id, group in groupby(rows, key=lambda r: r.receipt_id):
        stored = jpn.store.get_receipt(receipt_id)
        verified = verify_receipt(
            stored.receipt,
            keyring=jpn.keyring,
            receiver=PHL,
            sender=JPN,
            batch_id=stored.batch_id,
            envelope_hashes=[sha256(sent[r.message_id]) for r in group],
        )
        assert all(o.outcome == envelope_pb2.OUTCOME_ACCEPTED for o in verified.outcomes)


async def _post(url: str, data: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/exchange/v1/batch",
            data=data,
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_a_repeated_batch_is_answered_duplicate_and_stored_once(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].open()
    envelopes = [
        seal(
            fraud_notice(f"P{i:07d}").SerializeToString(),
            sender=jpn.keys.local,
            recipient=jpn.keyring.require(PHL),
            now_ms=now_ms(),
        )
        for i in range(3)
    ]
    batch_id = bytes(range(16))
    data = batch_bytes(JPN, [e.data for e in envelopes], batch_id)

    answers = []
    for _ in range(2):
        status, receipt = await _post(net[PHL].url, data)
        assert status == 200
        answers.append(
            verify_receipt(
                receipt,
                keyring=jpn.keyring,
                receiver=PHL,
                sender=JPN,
                batch_id=batch_id,
                envelope_hashes=[sha256(e.data) for e in envelopes],
            )
        )

    assert [o.outcome for o in answers[0].outcomes] == [envelope_pb2.OUTCOME_ACCEPTED] * 3
    assert [o.outcome for o in answers[1].outcomes] == [envelope_pb2.OUTCOME_DUPLICATE] * 3
    inbox = [r.message_id for r in phl.store.inbox_feed(0, 1000)]
    assert sorted(inbox) == sorted(e.message_id for e in envelopes)


async def test_a_notice_the_receiver_refuses_becomes_a_dead_letter_with_its_reason(net, capsys):
    phl = await net[PHL].start()
    await phl.directory.set_policy(JPN, ["status_notice", "correction"])
    jpn = await net[JPN].start()

    [sub] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [sub.message_id]), what="a final outcome")

    [row] = jpn.store.message_status(sub.message_id)
    assert row.state is OutboxState.DEAD
    assert row.outcome is Outcome.REJECTED
    assert row.reason == "policy_denied"
    assert phl.store.get_inbox(JPN, sub.message_id) is None

    code = await asyncio.to_thread(run_cli, ["--config", str(net[JPN].config_path), "status"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{PHL} message {sub.message_id.hex()} reason policy_denied" in out


async def test_sealing_many_notices_lets_the_event_loop_serve_others_meanwhile(net):
    """A catch-up chunk or a batch submission seals in slices: other work on the loop
    (a live notice, an HTTP request) gets turns before the whole is sealed, rather than
    waiting behind some 40 ms of sealing."""
    from exchange_node.delivery.sender import SEALS_PER_TURN

    jpn = await net[JPN].open()
    n = 5 * SEALS_PER_TURN
    turns = 0
    turns_when_sealed: list[int] = []
    sealing = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        await sealing.wait()
        while not turns_when_sealed:
            turns += 1
            await asyncio.sleep(0)

    real_transaction = jpn.store.transaction

    def transaction(work, **kw):  # the seals are done when the transaction is handed over
        turns_when_sealed.append(turns)
        return real_transaction(work, **kw)

    jpn.store.transaction = transaction
    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    sealing.set()
    queued = await jpn.submit_many(
        [(fraud_notice(f"P{i:07d}"), [PHL]) for i in range(n)], actor="t"
    )
    await other
    assert len(queued) == n and len(jpn.store.pending(PHL, 2 * n)) == n
    assert turns_when_sealed[0] >= n // SEALS_PER_TURN - 1
