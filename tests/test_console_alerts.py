"""The overview's alerts: each raised by the real condition and cleared with it."""

from __future__ import annotations

import pytest
from console_support import browser
from cryptography import x509
from test_api_support import make_node, token

from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.console.status import DAY_MS, disk_alert


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


async def _alerts(node) -> str:
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "operator", f"ops-{node.now_ms()}"))
        status, page, _ = await b.get("/console/overview")
        assert status == 200
        return page.split("<h2>Alerts</h2>")[1].split("<h2>")[0]


async def test_a_tls_certificate_near_its_end_is_an_alert(node):
    cert = x509.load_der_x509_certificate(node.keys.tls_cert_der)
    not_after = int(cert.not_valid_after_utc.timestamp() * 1000)
    assert "TLS certificate" not in await _alerts(node)
    node.clock = lambda: not_after - 10 * DAY_MS
    text = await _alerts(node)
    assert "this node&#39;s TLS certificate expires on" in text and "(in 10 d)" in text


async def test_an_inconsistent_peer_checkpoint_is_an_alert(node):
    # The leaf the witness writes when a peer's log does not extend what it signed.
    await node.record_audit(
        AuditEvent(
            time=node.now_ms(),
            kind=LeafKind.CHECKPOINT_INCONSISTENT,
            actor=node.node_id,
            peer="PHL-DFA",
            reason="checkpoint_fork",
        )
    )
    text = await _alerts(node)
    assert "PHL-DFA&#39;s audit checkpoint is inconsistent" in text
    assert "checkpoint_fork" in text


def test_disk_space_is_an_alert_below_a_gibibyte_or_five_percent():
    gib = 1 << 30
    assert disk_alert(total=100 * gib, free=10 * gib) is None
    assert "0.5 GiB free" in disk_alert(total=100 * gib, free=gib // 2).text
    assert "4%" in disk_alert(total=1000 * gib, free=40 * gib).text
