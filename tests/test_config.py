"""A bad config stops start-up with one line naming the file, the key and what is
expected: from ``load_config`` and from the command line (exit status 2, no traceback)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node.audit.checkpoint import verifier_key
from exchange_node.audit.cosignature import witness_vkey
from exchange_node.config import ConfigError, load_config, render_config
from tests.node_helpers import run_cli, set_options

BASE = render_config(
    node_id="JPN-ISA",
    country="JPN",
    display_name="Immigration Services Agency",
    public_endpoint="https://127.0.0.1:8443",
    peer_listen="127.0.0.1:8443",
    local_listen="127.0.0.1:8080",
)

_LOG_VKEY = verifier_key(
    "example.com/log", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key()
)
_WITNESS_VKEY = witness_vkey(
    "w.example/1", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32).public_key()
).encode()

# name: (config text, key the message names, what it says is expected)
BAD = {
    "unknown key": (
        BASE.replace("batch_size = 200", "batch_size = 200\nbatch_sise = 100"),
        "[delivery]",
        "unknown field `batch_sise`",
    ),
    "wrong type": (set_options(BASE, {"batch_size": "many"}), "[delivery] batch_size", "`int`"),
    "wrong boolean": (
        set_options(BASE, {"allow_plain_http": "yes"}),
        "[peer_api] allow_plain_http",
        "`bool`",
    ),
    "out of range": (
        set_options(BASE, {"max_concurrent_batches": 0}),
        "[peer_api] max_concurrent_batches",
        "between 1 and 256",
    ),
    "per-peer cap not below the total": (
        set_options(BASE, {"max_concurrent_batches_per_peer": 8}),
        "[peer_api] max_concurrent_batches_per_peer",
        "below max_concurrent_batches (8)",
    ),
    "body timeout out of range": (
        set_options(BASE, {"body_timeout_seconds": 0}),
        "[peer_api] body_timeout_seconds",
        "between 1 and 600",
    ),
    "bad node id": (set_options(BASE, {"id": "jpn isa"}), "[node] id", "upper-case node id"),
    "non-loopback local API": (
        BASE.replace('listen = "127.0.0.1:8080"', 'listen = "0.0.0.0:8080"'),
        "[local_api] listen",
        "loopback address",
    ),
    "bad listen address": (
        BASE.replace('listen = "127.0.0.1:8443"', 'listen = "8443"'),
        "[peer_api] listen",
        "HOST:PORT",
    ),
    "plain http endpoint without the flag": (
        set_options(BASE, {"public_endpoint": "http://127.0.0.1:8443"}),
        "[peer_api] public_endpoint",
        "https://",
    ),
    "unknown notice kind in a peer policy": (
        BASE + '\n[peers.PHL-DFA]\nallow = ["lunch"]\n',
        "[peers.PHL-DFA] allow",
        "fraud_notice",
    ),
    "invalid TOML": (BASE.replace("batch_size = 200", "batch_size = "), "", "not valid TOML"),
    "a witness key that is a log's key": (
        BASE + f'\n[[witness.push]]\nvkey = "{_LOG_VKEY}"\npeer = "PHL-DFA"\n',
        "[[witness.push]] #1 vkey",
        "signature type 0x04",
    ),
    "a witness with both a peer and a url": (
        BASE
        + f'\n[[witness.push]]\nvkey = "{_WITNESS_VKEY}"\npeer = "PHL-DFA"\nurl = "https://w.example"\n',
        "[[witness.push]] #1",
        "exactly one of peer",
    ),
    "a witnessed log whose key ID is wrong": (
        BASE.replace("logs = []", f'logs = ["{_LOG_VKEY[:-12]}AAAAAAAAAAA="]'),
        "[witness] logs[0]",
        "verifier key",
    ),
}


def test_the_rendered_config_loads_with_its_values(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(BASE)

    cfg = load_config(path)

    assert cfg.node.id == "JPN-ISA"
    assert cfg.peer_api.listen == "127.0.0.1:8443"
    assert cfg.delivery.batch_size == 200
    assert cfg.data_path == (tmp_path / "data").resolve()


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_value_is_one_line_naming_file_key_and_expectation(tmp_path, case):
    text, key, expected = BAD[case]
    path = tmp_path / "node.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as err:
        load_config(path)

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}")
    assert expected in message


@pytest.mark.parametrize("case", list(BAD))
def test_the_cli_stops_with_the_line_and_status_2(tmp_path, capsys, case):
    text, key, expected = BAD[case]
    path = tmp_path / "node.toml"
    path.write_text(text)

    code = run_cli(["--config", str(path), "status"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"error: {path}: {key}")
    assert expected in err
    assert "Traceback" not in err


def test_a_missing_config_file_says_how_to_create_one(tmp_path, capsys):
    path = tmp_path / "nowhere.toml"

    code = run_cli(["--config", str(path), "status"])

    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {path}: file not found (create one with `exchange-node init`)\n"


def test_an_unknown_key_is_answered_with_the_keys_the_section_accepts(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(BAD["unknown key"][0])

    with pytest.raises(ConfigError) as err:
        load_config(path)

    assert "batch_size" in str(err.value)
