"""A dead letter retried or acknowledged from the console of a node process SIGKILLed at
each commit point: the change and its audit leaf are on disk together or not at all."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal

import aiohttp
import pytest
from console_support import browser

from exchange_node.audit.log import AuditLog
from exchange_node.store.records import OutboxState
from exchange_node.store.sqlite import SqliteStore
from tests.node_helpers import fraud_notice, make_net, now_ms, start_serve, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"


async def _node_with_a_dead_letter(tmp_path):
    """JPN-ISA with one dead letter (PHL-DFA refused a fraud notice by its policy) and an
    operator token; both nodes stopped again."""
    net = await make_net(tmp_path, [JPN, PHL])
    jpn, phl = await net[JPN].start(), await net[PHL].start()
    try:
        await phl.directory.set_policy(JPN, ["status_notice"])
        [sub] = await jpn.submit(fraud_notice(), [PHL], actor="test")
        await wait_for(
            lambda: jpn.store.message_status(sub.message_id)[0].state is OutboxState.DEAD
        )
        outbox_id = jpn.store.message_status(sub.message_id)[0].outbox_id
        secret = "xn_" + secrets.token_urlsafe(32)
        await jpn.store.create_token("ops-desk", "operator", secret, now_ms())
    finally:
        await net.stop_all()
    return net, outbox_id, secret


@pytest.mark.parametrize("point", ["applied", "committed"])
@pytest.mark.parametrize(
    ("action", "label", "kind"),
    [
        ("acknowledge", "outbox.acknowledge_dead_letter", "dead_letter.acknowledged"),
        ("retry", "outbox.retry_dead_letter", "dead_letter.retried"),
    ],
)
async def test_a_dead_letter_action_killed_at_its_commit_is_whole_or_absent(
    tmp_path, monkeypatch, action, label, kind, point
):
    net, outbox_id, secret = await _node_with_a_dead_letter(tmp_path)
    monkeypatch.setenv("EXCHANGE_NODE_CRASH_AT", f"{label}:{point}")
    proc = start_serve(net[JPN])
    try:
        port = json.loads((net[JPN].dir / "ready.json").read_text())["local_port"]
        b = browser(port)
        async with b.session:
            assert (await b.sign_in(secret))[0] == 303
            with pytest.raises(aiohttp.ClientError):
                await b.post(f"/console/dead-letters/{outbox_id}/{action}")
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    database = net[JPN].data / "node.sqlite"
    store = await SqliteStore.open(database)
    audit = AuditLog(database, node_id=JPN)
    try:
        row = store.get_outbox(outbox_id)
        changed = (
            row.state is OutboxState.QUEUED
            if action == "retry"
            else store.dead_letter_page(include_acknowledged=True)[0].acknowledged_at is not None
        )
        leafs = [x for x in audit.query(kind=kind) if x.record.attrs["outbox_id"] == str(outbox_id)]
        assert (changed, len(leafs)) == ((False, 0) if point == "applied" else (True, 1))
        assert store.queue_stats()[0].dead == (1 if point == "applied" else 0)
    finally:
        audit.close()
        await store.close()
