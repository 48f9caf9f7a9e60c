"""Senders witness receivers' audit logs: each receipt carries the receiver's signed
checkpoint, the sender keeps it, and a log rewritten afterwards raises the alarm. The
receiver's consistency endpoint says 404 only when no proof can exist, 400 for a
malformed request and 503 when it fails for now; only the first is an alarm."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import aiohttp
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


@contextlib.contextmanager
def checkpoints_unreadable(nd):
    """Another connection takes the receiver's table of signed checkpoints away (renames
    it) and then gives it back: meanwhile every read of it fails in SQLite, as reads of a
    failing database do, while appends (which do not touch it) go on."""
    db = sqlite3.connect(nd.data / "node.sqlite", isolation_level=None)
    db.execute("ALTER TABLE audit_checkpoints RENAME TO checkpoints_away")
    try:
        yield
    finally:
        db.execute("ALTER TABLE checkpoints_away RENAME TO audit_checkpoints")
        db.close()


async def consistency(nd, query: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{nd.url}/exchange/v1/audit/consistency?{query}") as resp,
    ):
        return resp.status, json.loads(await resp.text())


def unchecked(jpn) -> float | None:
    return jpn.metrics.registry.get_sample_value(
        "exchange_peer_checkpoint_unchecked_total", {"peer": PHL}
    )


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


async def test_a_proof_to_a_checkpoint_the_log_never_signed_is_answered_404(net):
    phl = await net[PHL].start()
    size = (await signed_checkpoint(phl)).tree_size

    for second in (size + 1, size + 1000):
        status, body = await consistency(net[PHL], f"first=1&second={second}")
        assert (status, body["code"]) == (404, "checkpoint_not_found")
    status, body = await consistency(net[PHL], f"first=1&second={size}")
    assert (status, body["second"]) == (200, size)


async def test_a_proof_the_stored_tree_no_longer_supports_is_answered_404(net):
    phl = await net[PHL].start()
    phl.audit.append_many(
        AuditEvent(time=now_ms(), kind=LeafKind.CONFIG_LOADED, actor="operator") for _ in range(8)
    )
    size = (await signed_checkpoint(phl)).tree_size
    db = sqlite3.connect(net[PHL].data / "node.sqlite", isolation_level=None)
    db.execute("DELETE FROM audit_nodes")  # the stored Merkle tree above the leaves is gone
    db.close()

    status, body = await consistency(net[PHL], f"first=1&second={size}")

    assert (status, body["code"]) == (404, "audit_log_corrupt")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("first=1", "bad_query"),
        ("first=one&second=2", "bad_query"),
        ("first=-1&second=2", "bad_query"),
        ("first=%2B1&second=2", "bad_query"),
        ("first=0&second=2", "consistency_size_invalid"),
        ("first=3&second=2", "consistency_size_invalid"),
    ],
)
async def test_a_malformed_consistency_request_is_answered_400(net, query, code):
    await net[PHL].start()

    status, body = await consistency(net[PHL], query)

    assert (status, body["code"]) == (400, code)


async def test_a_consistency_proof_the_audit_log_fails_to_give_for_now_is_answered_503(net):
    phl = await net[PHL].start()
    size = (await signed_checkpoint(phl)).tree_size

    with checkpoints_unreadable(net[PHL]):
        status, body = await consistency(net[PHL], f"first=1&second={size}")
    assert (status, body["code"]) == (503, "audit_unavailable")

    status, _ = await consistency(net[PHL], f"first=1&second={size}")
    assert status == 200


async def test_a_receiver_failing_to_prove_for_now_raises_no_alarm_and_is_checked_later(net):
    size = await witnessed(net)
    phl, jpn = net[PHL].running, net[JPN].running
    await deliver(jpn)
    await phl.sign_checkpoint()  # the next receipts carry a newer checkpoint
    newer = phl.audit.latest_checkpoint().tree_size

    with checkpoints_unreadable(net[PHL]):
        await deliver(jpn)
        await wait_for(lambda: alarms(jpn)[0] or unchecked(jpn), what="the witness to try")
    assert alarms(jpn) == ([], None)
    assert unchecked(jpn) == 1
    assert jpn.audit.peer_checkpoint(PHL).tree_size == size  # still the one last proved

    await deliver(jpn)
    await wait_for(
        lambda: jpn.audit.peer_checkpoint(PHL).tree_size >= newer, what="the newer checkpoint"
    )
    assert alarms(jpn) == ([], None)


async def signed_checkpoint(node):
    await node.sign_checkpoint()
    return node.audit.latest_checkpoint()
