"""``exchange-node init`` and ``peer add``: private files stay private, the written
config loads, and a card whose fingerprint does not match is never pinned."""

from __future__ import annotations

import asyncio
import re
import stat

import pytest

from exchange_node.config import load_config
from exchange_node.identity import load_identity
from exchange_node.protocol.keys import Suite
from exchange_node.store.sqlite import SqliteStore
from tests.node_helpers import free_port, run_cli


def init(tmp_path, capsys, node_id: str, country: str, *extra: str) -> tuple:
    config = tmp_path / node_id.lower() / "node.toml"
    port = free_port()
    code = run_cli(
        [
            "--config", str(config), "init",
            "--node-id", node_id,
            "--country", country,
            "--endpoint", f"https://127.0.0.1:{port}",
            "--peer-listen", f"127.0.0.1:{port}",
            "--local-listen", "127.0.0.1:0",
            *extra,
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    return config, re.search(r"fingerprint: (\S+)", out).group(1)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_keys_0600_and_a_config_that_loads(tmp_path, capsys):
    config, fingerprint = init(tmp_path, capsys, "JPN-ISA", "JPN")

    cfg = load_config(config)
    keys = load_identity(cfg.data_path)
    assert cfg.node.id == keys.local.node_id == "JPN-ISA"
    assert keys.fingerprint == fingerprint
    secrets = [*(cfg.data_path / "keys").glob("*.pem")]
    assert {p.name.split("-")[0] for p in secrets} >= {"signing", "encryption", "tls"}
    for path in secrets:
        if path.name != "tls-cert.pem":
            assert mode(path) == 0o600, path.name
    assert mode(cfg.data_path) == 0o700
    assert mode(cfg.data_path / "keys") == 0o700


def _encryption_suites(config) -> list[Suite]:
    card = load_identity(load_config(config).data_path).card
    return [Suite.for_algorithm(k.algorithm) for k in card.encryption_keys]


def test_init_makes_the_hybrid_suite_by_default(tmp_path, capsys):
    config, _ = init(tmp_path, capsys, "JPN-ISA", "JPN")
    assert load_config(config).node.suite == "mlkem768-x25519"
    assert _encryption_suites(config) == [Suite.MLKEM768_X25519]


def test_init_suite_x25519_offers_the_x25519_suite_and_writes_it_to_the_config(tmp_path, capsys):
    config, _ = init(tmp_path, capsys, "JPN-ISA", "JPN", "--suite", "x25519")
    assert load_config(config).node.suite == "x25519"
    assert _encryption_suites(config) == [Suite.X25519]


def test_keys_rotate_makes_the_encryption_key_of_the_configured_suite(tmp_path, capsys):
    config, _ = init(tmp_path, capsys, "JPN-ISA", "JPN")
    text = config.read_text()
    config.write_text(text.replace('suite = "mlkem768-x25519"', 'suite = "x25519"', 1))
    assert run_cli(["--config", str(config), "keys", "rotate"]) == 0
    assert "previous keys stay valid for 30 days" in capsys.readouterr().out
    # The new current key is X25519; the hybrid one is kept for the overlap.
    assert _encryption_suites(config) == [Suite.X25519, Suite.MLKEM768_X25519]

    config.write_text(text)
    assert run_cli(["--config", str(config), "keys", "rotate"]) == 0
    assert _encryption_suites(config)[0] is Suite.MLKEM768_X25519


def test_init_refuses_to_overwrite_an_existing_config(tmp_path, capsys):
    config, _ = init(tmp_path, capsys, "JPN-ISA", "JPN")
    before = config.read_bytes()

    code = run_cli(
        ["--config", str(config), "init", "--node-id", "JPN-ISA", "--country", "JPN",
         "--endpoint", "https://127.0.0.1:1"]
    )  # fmt: skip

    assert code == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert config.read_bytes() == before


def pinned(config) -> list[str]:
    async def read() -> list[str]:
        store = await SqliteStore.open(load_config(config).data_path / "node.sqlite")
        try:
            return [p.node_id for p in store.list_peers()]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def two(tmp_path, capsys):
    jpn = init(tmp_path, capsys, "JPN-ISA", "JPN")
    phl = init(tmp_path, capsys, "PHL-DFA", "PHL")
    return jpn, phl


def test_peer_add_with_a_wrong_fingerprint_refuses_and_pins_nothing(two, capsys):
    (jpn_config, _), (phl_config, phl_fp) = two
    card = load_config(phl_config).data_path / "card.pb"
    wrong = "AAAA-" + phl_fp[5:] if not phl_fp.startswith("AAAA") else "BBBB-" + phl_fp[5:]

    code = run_cli(["--config", str(jpn_config), "peer", "add", str(card), "--fingerprint", wrong])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: fingerprint mismatch")
    assert err.count("\n") == 1
    assert pinned(jpn_config) == []


def test_peer_add_with_the_right_fingerprint_pins_the_card(two, capsys):
    (jpn_config, _), (phl_config, phl_fp) = two
    card = load_config(phl_config).data_path / "card.pb"

    code = run_cli(["--config", str(jpn_config), "peer", "add", str(card), "--fingerprint", phl_fp])

    assert code == 0
    assert "pinned PHL-DFA" in capsys.readouterr().out
    assert pinned(jpn_config) == ["PHL-DFA"]


def pinned_fingerprint(config, node_id: str) -> str:
    async def read() -> str:
        store = await SqliteStore.open(load_config(config).data_path / "node.sqlite")
        try:
            return store.get_peer(node_id).fingerprint
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def impostor(tmp_path, capsys):
    """Another card for PHL-DFA: other keys, the same serial."""
    config, fingerprint = init(tmp_path / "other", capsys, "PHL-DFA", "PHL")
    return load_config(config).data_path / "card.pb", fingerprint


def test_peer_add_of_another_card_for_a_pinned_node_needs_replace(two, impostor, capsys):
    (jpn_config, _), (phl_config, phl_fp) = two
    card = load_config(phl_config).data_path / "card.pb"
    other_card, other_fp = impostor
    add = ["--config", str(jpn_config), "peer", "add"]
    assert run_cli([*add, str(card), "--fingerprint", phl_fp]) == 0
    capsys.readouterr()

    code = run_cli([*add, str(other_card), "--fingerprint", other_fp])

    err = capsys.readouterr().err
    assert code == 2
    assert "already pinned" in err and "--replace" in err
    assert phl_fp in err and other_fp in err
    assert pinned_fingerprint(jpn_config, "PHL-DFA") == phl_fp


def test_peer_add_replace_swaps_the_card_and_shows_both_fingerprints(two, impostor, capsys):
    (jpn_config, _), (phl_config, phl_fp) = two
    card = load_config(phl_config).data_path / "card.pb"
    other_card, other_fp = impostor
    add = ["--config", str(jpn_config), "peer", "add"]
    assert run_cli([*add, str(card), "--fingerprint", phl_fp]) == 0
    capsys.readouterr()

    code = run_cli([*add, str(other_card), "--fingerprint", other_fp, "--replace"])

    out = capsys.readouterr().out
    assert code == 0
    assert "replaced" in out and phl_fp in out and other_fp in out
    assert pinned_fingerprint(jpn_config, "PHL-DFA") == other_fp


def test_peer_add_of_the_same_card_again_needs_no_replace(two, capsys):
    (jpn_config, _), (phl_config, phl_fp) = two
    card = load_config(phl_config).data_path / "card.pb"
    add = ["--config", str(jpn_config), "peer", "add", str(card), "--fingerprint", phl_fp]
    assert run_cli(add) == 0

    assert run_cli(add) == 0
    assert pinned_fingerprint(jpn_config, "PHL-DFA") == phl_fp
