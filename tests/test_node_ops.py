"""What monitoring sees on the local API: liveness, readiness, and Prometheus metrics
with each peer's queue depth and the age of its oldest queued notice."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.node_helpers import fraud_notice, make_net

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def get(node, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{node.local_port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def test_healthz_answers_ok(net):
    jpn = await net[JPN].start()

    status, _ = await get(jpn, "/healthz")

    assert status == 200


async def test_readyz_answers_ready_with_the_node_and_its_peers(net):
    jpn = await net[JPN].start()

    status, body = await get(jpn, "/readyz")

    assert status == 200
    assert '"ready"' in body and JPN in body


async def test_metrics_show_queue_depth_and_oldest_age_per_peer(net):
    jpn = await net[JPN].start()  # PHL stays down: the notices wait in the queue
    for i in range(3):
        await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL])
    submitted_at = jpn.now_ms()
    jpn.clock = lambda: submitted_at + 90_000  # a minute and a half later

    status, text = await get(jpn, "/metrics")

    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("exchange_outbox_queue_depth", (("peer", PHL),))] == 3
    assert 90 <= samples[("exchange_outbox_oldest_age_seconds", (("peer", PHL),))] < 100
