"""Certificates and keys that run out are reported ahead of time: ``status`` (text and
JSON), the ``exchange_expiry_seconds`` gauge and an ``expiry.soon`` log line."""

from __future__ import annotations

import json

import structlog

from exchange_node.config import load_config
from exchange_node.identity import create_identity
from exchange_node.node import Node
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.protocol.keys import Suite
from tests.node_helpers import make_node_dir, now_ms, run_cli

TEN_YEARS_MS = 3650 * DAY_MS


def node_whose_certificate_ends_in(tmp_path, days: int):
    """A node made long ago: its TLS certificate (10 years from a day before init) ends
    in ``days`` days."""
    nd = make_node_dir(tmp_path, "JPN-ISA")
    for path in sorted(nd.data.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    nd.data.rmdir()
    made = now_ms() - TEN_YEARS_MS + DAY_MS + days * DAY_MS
    create_identity(
        nd.data, node_id="JPN-ISA", country="JPN", display_name="JPN-ISA",
        endpoint=nd.endpoint, suite=Suite.X25519, now_ms=made,
    )  # fmt: skip
    return nd


def test_status_lists_a_certificate_that_ends_within_30_days(tmp_path, capsys):
    nd = node_whose_certificate_ends_in(tmp_path, 10)
    assert run_cli(["--config", str(nd.config_path), "status", "--json"]) == 0
    (soon,) = json.loads(capsys.readouterr().out)["expiring"]
    assert (soon["node"], soon["what"]) == ("JPN-ISA", "tls_certificate")
    assert 9 * DAY_MS < soon["not_after"] - now_ms() <= 10 * DAY_MS
    assert run_cli(["--config", str(nd.config_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "expiring within 30 days" in out and "JPN-ISA tls certificate" in out


def test_status_is_quiet_about_a_certificate_years_away(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    assert run_cli(["--config", str(nd.config_path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expiring"] == []


async def test_the_node_exports_the_time_left_and_logs_what_ends_soon(tmp_path):
    nd = node_whose_certificate_ends_in(tmp_path, 10)
    node = await Node.open(load_config(nd.config_path))
    try:
        node.update_gauges()
        left = node.metrics.expiry.labels("JPN-ISA", "tls_certificate")._value.get()
        assert 9 * 86400 < left <= 10 * 86400
        with structlog.testing.capture_logs() as logs:
            node.warn_expiring()
        (line,) = [e for e in logs if e["event"] == "expiry.soon"]
        assert (line["owner"], line["what"], line["days_left"]) == (
            "JPN-ISA",
            "tls_certificate",
            10.0,
        )
    finally:
        await node.stop()


def test_the_local_api_certificate_is_counted_down_too(tmp_path, capsys):
    from tests.test_local_api_tls_tokens import set_local_api, write_certificate

    nd = make_node_dir(tmp_path, "JPN-ISA")
    cert_file, key_file = write_certificate(nd.dir)  # valid for 30 days
    set_local_api(nd, tls_cert_file=f'"{cert_file.name}"', tls_key_file=f'"{key_file.name}"')
    assert run_cli(["--config", str(nd.config_path), "status", "--json"]) == 0
    (soon,) = json.loads(capsys.readouterr().out)["expiring"]
    assert (soon["node"], soon["what"]) == ("JPN-ISA", "local_api_certificate")
    assert 29 * DAY_MS < soon["not_after"] - now_ms() <= 30 * DAY_MS
