"""What monitoring sees on the local API: liveness, readiness, and Prometheus metrics
with each peer's queue depth and the age of its oldest queued notice."""

from __future__ import annotations

import re

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import exchange_node
from tests.node_helpers import fraud_notice, make_net

pytestmark = pytest.mark.usefixtures("node_store_backend")

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


async def test_metrics_say_which_release_protocol_and_libraries_run(net):
    import platform

    import cryptography

    jpn = await net[JPN].start()

    _, text = await get(jpn, "/metrics")

    [info] = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "exchange_build_info"
    ]
    assert info.value == 1
    assert info.labels["version"] == exchange_node.__version__
    assert info.labels["protocol"] == "1"
    assert info.labels["python"] == platform.python_version()
    assert info.labels["cryptography"] == cryptography.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+\w*", info.labels["openssl"])


def test_version_prints_one_line_naming_what_runs(capsys):
    from exchange_node.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert re.fullmatch(
        rf"exchange-node {re.escape(exchange_node.__version__)} \(protocol 1; Python [\d.]+;"
        r" cryptography [\d.]+; OpenSSL [\w.]+\)\n",
        out,
    )
