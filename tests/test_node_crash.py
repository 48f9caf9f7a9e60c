"""Processes killed with SIGKILL at the worst moments lose nothing and deliver nothing
twice: a receiver between storing a batch and answering it, a sender mid-stream."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter

import pytest

from exchange_node.node import open_store
from exchange_node.store.records import OutboxState, Outcome
from tests import node_helpers
from tests.node_helpers import (
    child_env,
    fraud_notice,
    make_net,
    settled,
    start_serve,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"
HELPER = [sys.executable, node_helpers.__file__]


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def inbox_of(nd) -> list:
    store = await open_store(nd.config())
    try:
        return store.inbox_feed(0, 10_000)
    finally:
        await store.close()


async def test_a_receiver_killed_after_storing_but_before_answering_loses_and_repeats_nothing(
    net,
):
    marker = net[PHL].dir / "crashed.json"
    receiver = start_serve(net[PHL], "--crash-after-accept", str(marker), script=HELPER)
    try:
        jpn = await net[JPN].open()
        submitted = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0] for i in range(5)]
        ids = [s.message_id for s in submitted]
        await jpn.start()

        assert await asyncio.to_thread(receiver.wait, 15) == -signal.SIGKILL
        assert json.loads(marker.read_text()) == [m.hex() for m in ids]
        # Stored durably by the receiver, but the sender never got a receipt.
        assert [r.message_id for r in await inbox_of(net[PHL])] == ids
        assert all(jpn.store.message_status(m)[0].state is OutboxState.QUEUED for m in ids)

        receiver = start_serve(net[PHL])
        await wait_for(lambda: settled(jpn.store, ids), what="delivery after the restart")
    finally:
        stop_process(receiver)

    rows = [jpn.store.message_status(m)[0] for m in ids]
    assert all(r.state is OutboxState.DELIVERED for r in rows)
    # The receiver had stored them all: the retry is answered DUPLICATE, which counts
    # as delivered.
    assert all(r.outcome is Outcome.DUPLICATE for r in rows)
    assert [r.message_id for r in await inbox_of(net[PHL])] == ids


async def test_every_notice_a_sender_acknowledged_before_sigkill_is_delivered_exactly_once(
    net,
):
    await net[PHL].start()
    sender = subprocess.Popen(
        [*HELPER, "--config", str(net[JPN].config_path), "submit", PHL],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env(),
        text=True,
    )
    acknowledged: list[str] = []
    try:

        def read_some() -> None:
            while len(acknowledged) < 60:
                line = sender.stdout.readline()
                assert line, "the sender exited early"
                if line.startswith("ack "):
                    acknowledged.append(line.split()[1])

        await asyncio.wait_for(asyncio.to_thread(read_some), timeout=30)
    finally:
        sender.send_signal(signal.SIGKILL)
        rest, _ = await asyncio.to_thread(sender.communicate, None, 10)
    # Lines printed before the kill were acknowledged too; a cut-off last line was not.
    acknowledged += [
        ln.split()[1]
        for ln in rest.splitlines(keepends=True)
        if ln.startswith("ack ") and ln.endswith("\n") and len(ln.split()) == 2
    ]
    ids = [bytes.fromhex(m) for m in acknowledged]

    jpn = await net[JPN].start()
    await wait_for(lambda: settled(jpn.store, ids), what="delivery after the sender restarted")

    assert all(jpn.store.message_status(m)[0].state is OutboxState.DELIVERED for m in ids)
    phl = net[PHL].running
    received = Counter(r.message_id for r in phl.store.inbox_feed(0, 10_000) if r.sender == JPN)
    assert all(received[m] == 1 for m in ids)
    assert set(received) >= set(ids)
