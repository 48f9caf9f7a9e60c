"""Readiness tells the truth about writing: /readyz answers 503 with a stable reason, and
exchange_store_writable / exchange_audit_writable say 0, while the store or the audit log
cannot commit, and both recover once a write succeeds again.

The failure is real, not simulated in the node: SQLite's own refusal to write
(``PRAGMA query_only`` on the node's write connection, the error a file system remounted
read-only gives), switched on and off from the test.
"""

from __future__ import annotations

import json
import re

import aiohttp
import pytest

from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.errors import ConflictError
from exchange_node.store.records import OutboxItem
from tests.node_helpers import fraud_notice, make_net, now_ms

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"
REASON = {"store": "store_unwritable", "audit": "audit_unwritable"}
METRIC = {"store": "exchange_store_writable", "audit": "exchange_audit_writable"}


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])  # PHL stays down: nothing is delivered
    yield net
    await net.stop_all()


async def refuse_writes(node, which: str, refuse: bool = True) -> None:
    """Make the database refuse every write on ``which`` write connection: SQLite's
    query_only, PostgreSQL's read-only transactions (what a standby answers)."""
    if node.config.store.url:
        pragma = f"SET default_transaction_read_only = {'on' if refuse else 'off'}"
    else:
        pragma = f"PRAGMA query_only = {'ON' if refuse else 'OFF'}"
    if which == "store":
        await node.store._writer.submit(lambda conn: conn.execute(pragma), transactional=False)
    else:
        with node.audit._lock:
            node.audit._db.execute(pragma)


async def write(node, which: str) -> None:
    """A write of the node's own to ``which``: a submission (its rows and leaves go to the
    store), or signing a checkpoint over it (the audit log's own connection)."""
    if which == "store":
        await node.submit(fraud_notice(), [PHL])
    else:
        await node.record_audit(AuditEvent(time=now_ms(), kind=LeafKind.CONFIG_LOADED, actor="t"))
        await node.sign_checkpoint()


async def readyz(node) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{node.local_port}/readyz") as resp,
    ):
        return resp.status, json.loads(await resp.text())


def writable(node, which: str) -> float | None:
    return node.metrics.registry.get_sample_value(METRIC[which])


@pytest.mark.parametrize("which", ["store", "audit"])
async def test_readyz_is_503_with_the_reason_after_a_failed_write_and_200_after_a_good_one(
    net, which
):
    jpn = await net[JPN].start()
    await refuse_writes(jpn, which)
    with pytest.raises(Exception, match="readonly|read-only"):
        await write(jpn, which)

    status, body = await readyz(jpn)
    assert status == 503
    assert body["status"] == "unready"
    assert [r["code"] for r in body["reasons"]] == [REASON[which]]
    assert re.search("readonly|read-only", body["reasons"][0]["detail"])
    assert writable(jpn, which) == 0

    await refuse_writes(jpn, which, False)
    await write(jpn, which)

    status, body = await readyz(jpn)
    assert (status, body["status"]) == (200, "ready")
    assert writable(jpn, which) == 1


@pytest.mark.parametrize("which", ["store", "audit"])
async def test_the_write_probe_finds_a_database_that_stopped_writing_while_idle(net, which):
    jpn = await net[JPN].start()
    assert (await readyz(jpn))[0] == 200

    await refuse_writes(jpn, which)
    await jpn.health.probe()
    status, body = await readyz(jpn)
    assert status == 503
    assert [r["code"] for r in body["reasons"]] == [REASON[which]]

    await refuse_writes(jpn, which, False)
    await jpn.health.probe()
    assert (await readyz(jpn))[0] == 200
    assert writable(jpn, which) == 1


async def test_a_write_refused_for_its_content_leaves_the_node_ready(net):
    jpn = await net[JPN].start()
    [sub] = await jpn.submit(fraud_notice(), [PHL])
    row = jpn.store.get_outbox(sub.outbox_id)

    with pytest.raises(ConflictError, match="message_id_exists"):
        await jpn.store.enqueue([OutboxItem(PHL, sub.message_id, row.envelope, row.payload, 1)])

    assert (await readyz(jpn))[0] == 200
    assert writable(jpn, "store") == 1


async def test_a_node_not_yet_started_is_not_ready_and_says_so(net):
    jpn = await net[JPN].start()
    jpn.ready = False  # what stop() does first

    status, body = await readyz(jpn)

    assert status == 503
    assert [r["code"] for r in body["reasons"]] == ["node_not_running"]
