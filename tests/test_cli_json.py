"""``--json`` of the commands that print tables: one JSON document with the keys
docs/operations.md lists (``audit show --json``: one stored leaf per line), checked
against what the store holds."""

from __future__ import annotations

import asyncio
import json

import pytest

from exchange_node.store.records import OutboxItem
from tests.node_helpers import make_node_dir, now_ms, pin, run_cli


@pytest.fixture
def nodes(tmp_path):
    jpn = make_node_dir(tmp_path, "JPN-ISA")
    phl = make_node_dir(tmp_path, "PHL-DFA")
    keys = phl.keys()
    asyncio.run(pin(jpn, keys.card_bytes, keys.fingerprint, "PHL-DFA"))
    return jpn, phl


def cli_json(nd, capsys, *args: str):
    capsys.readouterr()
    assert run_cli(["--config", str(nd.config_path), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_peer_list_json_names_fingerprint_serial_and_policy(nodes, capsys):
    jpn, phl = nodes
    (peer,) = cli_json(jpn, capsys, "peer", "list")["peers"]
    assert peer == {
        "node_id": "PHL-DFA", "country": "PHL", "endpoint": phl.endpoint,
        "fingerprint": phl.keys().fingerprint, "serial": 1, "paused": False,
        "policy": ["status_notice", "fraud_notice", "correction", "case_event"],
        "queued": 0, "dead": 0, "last_contact_at": None, "last_error": None,
    }  # fmt: skip
    assert run_cli(["--config", str(jpn.config_path), "peer", "list"]) == 0
    out = capsys.readouterr().out
    assert f"card serial 1, fingerprint {phl.keys().fingerprint}" in out
    assert "allows: status_notice, fraud_notice, correction, case_event" in out


def test_status_json_counts_the_queue(nodes, capsys):
    jpn, _ = nodes

    async def queue_one():
        from exchange_node.store.sqlite import SqliteStore

        store = await SqliteStore.open(jpn.data / "node.sqlite")
        try:
            await store.enqueue([OutboxItem("PHL-DFA", b"\x01" * 16, b"env", b"pay", 1000)])
        finally:
            await store.close()

    asyncio.run(queue_one())
    status = cli_json(jpn, capsys, "status")
    assert status["node"] == "JPN-ISA"
    assert set(status) == {
        "node", "peers", "catchups", "dead_letters", "reviews_due", "purges_unconfirmed",
        "expiring",
    }  # fmt: skip
    assert status["reviews_due"] == 0 and status["purges_unconfirmed"] == []
    (peer,) = status["peers"]
    assert (peer["peer"], peer["queued"], peer["oldest_queued_at"], peer["dead"]) == (
        "PHL-DFA", 1, 1000, 0)  # fmt: skip
    assert status["dead_letters"] == [] and status["expiring"] == []


def test_token_list_json_has_expiry_and_never_the_secret(nodes, capsys):
    jpn, _ = nodes
    config = str(jpn.config_path)
    assert run_cli(["--config", config, "token", "create", "--role", "auditor", "--name", "a"]) == 0
    secret = capsys.readouterr().out.strip()
    (token,) = cli_json(jpn, capsys, "token", "list")["tokens"]
    assert set(token) == {"name", "role", "created_at", "expires_at", "expired", "revoked_at"}
    assert (token["name"], token["role"], token["expired"], token["revoked_at"]) == (
        "a", "auditor", False, None)  # fmt: skip
    assert token["expires_at"] - token["created_at"] == 90 * 86_400_000
    assert secret not in json.dumps(token)


def test_card_show_json_and_text_mark_a_revoked_key(nodes, capsys):
    jpn, _ = nodes
    config = str(jpn.config_path)
    assert run_cli(["--config", config, "keys", "rotate"]) == 0
    card = cli_json(jpn, capsys, "card", "show")
    old = card["signing_keys"][1]
    assert card["serial"] == 2 and old["revoked_at"] is None
    before = now_ms()
    assert run_cli(["--config", config, "keys", "revoke", old["key_id"]]) == 0
    card = cli_json(jpn, capsys, "card", "show")
    assert card["signing_keys"][0]["revoked_at"] is None
    assert card["signing_keys"][1]["revoked_at"] >= before
    assert run_cli(["--config", config, "card", "show"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if old["key_id"] in line]
    assert len(lines) == 1 and "REVOKED" in lines[0]


def test_audit_show_json_is_one_leaf_per_line(nodes, capsys):
    jpn, _ = nodes
    config = str(jpn.config_path)
    assert run_cli(["--config", config, "token", "create", "--role", "auditor", "--name", "a"]) == 0
    capsys.readouterr()
    assert run_cli(["--config", config, "audit", "show", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [leaf["kind"] for leaf in lines] == ["token.created"]
    assert set(lines[0]) == {
        "actor", "attrs", "kind", "message_id", "peer", "reason", "seq", "subject_hash",
        "time", "v",
    }  # fmt: skip
