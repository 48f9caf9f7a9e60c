"""Encrypted private keys as documented: ``init --key-passphrase-env VAR`` writes them
encrypted, ``keys encrypt`` encrypts the keys of a node set up without, and a node whose
config says encrypted while its files are not refuses to start."""

from __future__ import annotations

import asyncio

import pytest

from exchange_node.config import ConfigError, load_config
from exchange_node.identity import load_identity, private_key_files, unencrypted_key_files
from exchange_node.node import Node
from tests.node_helpers import free_port, make_node_dir, run_cli

PASSPHRASE = "correct horse battery staple"


def test_init_with_a_passphrase_variable_writes_every_private_key_encrypted(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("JPN_KEY_PASSPHRASE", PASSPHRASE)
    config = tmp_path / "node.toml"
    port = free_port()
    code = run_cli(
        [
            "--config", str(config), "init", "--node-id", "JPN-ISA", "--country", "JPN",
            "--endpoint", f"https://127.0.0.1:{port}", "--peer-listen", f"127.0.0.1:{port}",
            "--key-passphrase-env", "JPN_KEY_PASSPHRASE",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cfg = load_config(config)
    assert cfg.node.key_passphrase_env == "JPN_KEY_PASSPHRASE"
    assert len(private_key_files(cfg.data_path)) == 3
    assert unencrypted_key_files(cfg.data_path) == []
    assert load_identity(cfg.data_path, PASSPHRASE.encode()).local.node_id == "JPN-ISA"
    with pytest.raises(Exception, match="wrong passphrase"):
        load_identity(cfg.data_path, b"not it")


def test_init_without_the_variable_set_is_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("JPN_KEY_PASSPHRASE", raising=False)
    config = tmp_path / "node.toml"
    code = run_cli(
        [
            "--config", str(config), "init", "--node-id", "JPN-ISA", "--country", "JPN",
            "--endpoint", "https://127.0.0.1:8443", "--key-passphrase-env", "JPN_KEY_PASSPHRASE",
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "environment variable JPN_KEY_PASSPHRASE is not set or empty" in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


async def test_a_config_saying_encrypted_over_clear_keys_refuses_to_start_until_encrypted(
    tmp_path, capsys, monkeypatch
):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    text = nd.config_path.read_text()
    nd.config_path.write_text(
        text.replace('key_passphrase_env = ""', 'key_passphrase_env = "JPN_KEY_PASSPHRASE"', 1)
    )
    monkeypatch.setenv("JPN_KEY_PASSPHRASE", PASSPHRASE)
    with pytest.raises(ConfigError, match=r"are not encrypted .*run `exchange-node keys encrypt`"):
        await Node.open(nd.config())

    code = await asyncio.to_thread(run_cli, ["--config", str(nd.config_path), "keys", "encrypt"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("encrypted ") == 3
    assert unencrypted_key_files(nd.data) == []
    node = await Node.open(nd.config())
    try:
        (leaf,) = node.audit.query(kind="keys.encrypted")
        assert leaf.record.attrs == {"files": "3"}
        await node.start()  # the TLS key opens with the passphrase too
    finally:
        await node.stop()
    code = await asyncio.to_thread(run_cli, ["--config", str(nd.config_path), "keys", "encrypt"])
    assert code == 0 and "already encrypted" in capsys.readouterr().out


def test_keys_encrypt_without_a_configured_variable_says_what_to_do(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    assert run_cli(["--config", str(nd.config_path), "keys", "encrypt"]) == 2
    assert capsys.readouterr().err.startswith("error: passphrase_not_configured: ")
    assert len(unencrypted_key_files(nd.data)) == 3
