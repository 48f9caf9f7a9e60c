"""Senders witness receivers' audit logs: each receipt carries the receiver's signed
checkpoint, the sender keeps it, and a log rewritten afterwards raises the alarm."""

from __future__ import annotations

import sqlite3

import pytest

from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog
from tests.node_helpers import (
    audit_leaves,
    fraud_notice,
    make_net,
    now_ms,
    settled,
    wait_for,
)

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def deliver(jpn, n: int = 1) -> None:
    ids = [(await jpn.submit(fraud_notice(), [PHL]))[0].message_id for _ in range(n)]
    await wait_for(lambda: settled(jpn.store, ids), what="delivery")


async def witnessed(net) -> int:
    """Deliver until JPN holds a checkpoint of PHL's log; return its size."""
    phl, jpn = await net[PHL].start(), await net[JPN].start()
    await deliver(jpn, 5)
    await phl.sign_checkpoint()
    await deliver(jpn)
    latest = phl.audit.latest_checkpoint()
    held = await wait_for(
        lambda: (cp := jpn.audit.peer_checkpoint(PHL)) and cp.note == latest.note and cp,
        what="JPN to hold PHL's latest checkpoint",
    )
    return held.tree_size


async def rewrite_log(nd, leaves: int) -> None:
    """What someone covering their tracks might do: replace PHL's whole audit history
    with ``leaves`` innocuous entries and sign it afresh with PHL's own key."""
    await nd.stop()
    path = nd.data / "node.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM audit_leaves")
        db.execute("DELETE FROM audit_nodes")
        db.execute("DELETE FROM audit_checkpoints")
        db.execute("UPDATE audit_meta SET value = 0 WHERE key = 'tree_size'")
    db.close()
    key = nd.keys().local.signing_key.private
    with AuditLog(path, node_id=nd.node_id, signing_key=key) as log:
        log.append_many(
            AuditEvent(time=now_ms(), kind=LeafKind.CONFIG_LOADED, actor="operator")
            for _ in range(leaves)
        )
        log.sign_checkpoint(now_ms())
    await nd.start()


def alarms(jpn) -> tuple[list, float | None]:
    leaves = [r for r in audit_leaves(jpn.audit, LeafKind.CHECKPOINT_INCONSISTENT) if r.peer == PHL]
    metric = jpn.metrics.registry.get_sample_value(
        "exchange_peer_checkpoint_inconsistent_total", {"peer": PHL}
    )
    return leaves, metric


async def test_a_receipt_carries_the_receivers_checkpoint_and_the_sender_keeps_it(net):
    size = await witnessed(net)

    assert size > 0
    assert alarms(net[JPN].running) == ([], None)


async def test_a_receivers_log_rewritten_to_a_longer_history_raises_the_alarm(net):
    size = await witnessed(net)
    await rewrite_log(net[PHL], size + 20)
    jpn = net[JPN].running

    await deliver(jpn)

    leaves, metric = await wait_for(
        lambda: (found := alarms(jpn))[0] and found[1] and found, what="the alarm"
    )
    assert [r.reason for r in leaves] == ["checkpoint_inconsistent"]
    assert metric == 1


async def test_a_receivers_log_truncated_and_re_signed_raises_the_alarm(net):
    size = await witnessed(net)
    await rewrite_log(net[PHL], 2)
    jpn = net[JPN].running

    await deliver(jpn)

    leaves, metric = await wait_for(
        lambda: (found := alarms(jpn))[0] and found[1] and found, timeout=1, what="the alarm"
    )
    assert [r.reason for r in leaves] == ["checkpoint_rollback"]
    assert metric == 1
    assert size > 2
