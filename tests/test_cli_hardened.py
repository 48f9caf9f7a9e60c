"""Mistakes an operator makes following the guide end in one ``error: CODE: ...`` line
and exit status 2, never a traceback: an address already taken, the two APIs on one
port, ``--out`` into a folder that does not exist, a malformed key, a reader that stops
reading, a second ``serve`` on the same data directory."""

from __future__ import annotations

import importlib
import os
import pty
import pwd
import signal
import socket
import stat
import subprocess
import sys

import pytest

from tests.node_helpers import (
    child_env,
    make_node_dir,
    run_cli,
    start_serve,
    stop_process,
)


def cli(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """``exchange-node ARGS`` as an operator runs it: a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=child_env(),
        timeout=60,
        text=True,
    )


def error_line(stderr: str) -> str:
    """The one ``error:`` line of a failed command (log lines aside), no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def node_dir(tmp_path):
    return make_node_dir(tmp_path, "JPN-ISA")


def test_an_address_in_use_is_one_line_naming_the_setting(node_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = node_dir.config_path.read_text()
        node_dir.config_path.write_text(
            text.replace(
                f'listen = "127.0.0.1:{node_dir.peer_port}"', f'listen = "127.0.0.1:{port}"'
            )
        )
        done = cli("--config", str(node_dir.config_path), "serve")
    assert done.returncode == 2
    line = error_line(done.stderr)
    assert line.startswith(f"error: listen_address_in_use: [peer_api] listen 127.0.0.1:{port}: ")


def test_the_local_api_on_the_peer_api_port_is_refused_by_the_config_check(node_dir, capsys):
    text = node_dir.config_path.read_text()
    text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{node_dir.peer_port}"')
    node_dir.config_path.write_text(text)
    assert run_cli(["--config", str(node_dir.config_path), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {node_dir.config_path}: [local_api] listen: expected a port")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["card", "export", "--out"],
        ["audit", "export", "--out"],
        ["proof", "export", "00" * 16, "--out"],
    ],
)
def test_out_into_a_missing_folder_is_one_line_before_any_work(node_dir, tmp_path, capsys, command):
    target = tmp_path / "no-such-folder" / "file.out"
    code = run_cli(["--config", str(node_dir.config_path), *command, str(target)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: out_folder_missing: --out {target}: folder ")
    assert err.count("\n") == 1
    assert not target.parent.exists()


def test_a_malformed_key_for_verify_bundle_is_one_line(tmp_path):
    bundle = tmp_path / "bundle.json"
    bundle.write_text("{}")
    done = cli("audit", "verify-bundle", str(bundle), "--key", "zz")
    assert done.returncode == 2
    assert error_line(done.stderr).startswith("error: public_key_invalid: --key: expected ")


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(node_dir):
    config = str(node_dir.config_path)
    assert run_cli(["--config", config, "token", "create", "--role", "auditor", "--name", "a"]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has read what it wanted
    with os.fdopen(write_end, "w") as out:
        done = cli("--config", str(node_dir.config_path), "audit", "show", "--json", stdout=out)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE


def test_a_second_serve_on_the_same_data_directory_is_refused_naming_the_first(node_dir):
    first = start_serve(node_dir)
    try:
        other = node_dir.dir / "other.toml"
        other.write_text(
            node_dir.config_path.read_text().replace(
                f'listen = "127.0.0.1:{node_dir.peer_port}"', 'listen = "127.0.0.1:0"'
            )
        )
        done = cli("--config", str(other), "serve")
        assert done.returncode == 2
        line = error_line(done.stderr)
        assert line.startswith(f"error: data_dir_locked: {node_dir.data} is in use by another")
        assert f"(pid {first.pid})" in line
    finally:
        stop_process(first, signal.SIGKILL)
    # The kernel drops the lock with the process: a restart after a kill is not blocked.
    again = start_serve(node_dir)
    stop_process(again)
    assert again.returncode == 0


def test_init_refuses_a_country_outside_the_icao_list(tmp_path, capsys):
    config = tmp_path / "node.toml"
    code = run_cli(
        [
            "--config", str(config), "init", "--node-id", "JPN-ISA", "--country", "XYZ",
            "--endpoint", "https://127.0.0.1:8443",
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: init arguments: [node] country: expected an ICAO Doc 9303 code")
    assert "'XYZ' is not in the ICAO Doc 9303 Part 3 list" in err
    assert not config.exists() and not (tmp_path / "data").exists()


def test_start_up_refuses_a_config_country_the_icao_list_does_not_know(node_dir, capsys):
    text = node_dir.config_path.read_text()
    node_dir.config_path.write_text(text.replace('country = "JPN"', 'country = "DEU"', 1))
    assert run_cli(["--config", str(node_dir.config_path), "serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {node_dir.config_path}: [node] country: expected an ICAO")
    assert "Germany is written 'D'" in err


def test_start_up_refuses_a_config_country_other_than_the_cards(node_dir, capsys):
    text = node_dir.config_path.read_text()
    node_dir.config_path.write_text(text.replace('country = "JPN"', 'country = "PHL"', 1))
    assert run_cli(["--config", str(node_dir.config_path), "serve"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {node_dir.config_path}: [node] country: expected 'JPN' (the country on this"
        f" node's card in {node_dir.data}), got 'PHL'\n"
    )


def test_a_database_file_others_can_read_is_made_private_when_opened(node_dir, capsys):
    config = str(node_dir.config_path)
    assert run_cli(["--config", config, "status"]) == 0
    db = node_dir.data / "node.sqlite"
    for path in (db, db.with_name("node.sqlite-wal")):
        path.touch()
        path.chmod(0o644)  # as an earlier release or a careless copy left it
    assert run_cli(["--config", config, "status"]) == 0
    assert {stat.S_IMODE(p.stat().st_mode) for p in node_dir.data.glob("node.sqlite*")} == {0o600}


def test_a_malformed_key_id_for_keys_revoke_is_one_line(node_dir, capsys):
    assert run_cli(["--config", str(node_dir.config_path), "keys", "revoke", "zz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: key_id_invalid: key id 'zz': expected hex digits")
    assert err.count("\n") == 1


def test_a_proof_of_a_message_never_sent_is_one_line(node_dir, tmp_path, capsys):
    args = ["--config", str(node_dir.config_path), "proof", "export", "00" * 16]
    assert run_cli([*args, "--out", str(tmp_path / "proof.json")]) == 2
    assert capsys.readouterr().err.startswith("error: message_unknown: message 0000")
    assert not (tmp_path / "proof.json").exists()


def test_a_defect_is_still_one_line_with_the_traceback_on_demand(node_dir, capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("something the code did not expect")

    monkeypatch.setattr(importlib.import_module("exchange_node.cli.main"), "cmd_status", broken)
    config = str(node_dir.config_path)
    assert run_cli(["--config", config, "status"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("error: internal_error: RuntimeError: something the code did not")
    assert "Traceback" not in err and err.count("\n") == 1
    assert run_cli(["--log-level", "debug", "--config", config, "status"]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_card_export_refuses_to_write_binary_to_a_terminal(node_dir, tmp_path):
    main, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "exchange_node.cli", "--config", str(node_dir.config_path),
             "card", "export"],
            stdout=terminal, stderr=subprocess.PIPE, env=child_env(), timeout=60, text=True,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(main)
    assert done.returncode == 2
    assert error_line(done.stderr).startswith("error: binary_to_terminal: the card is binary")
    # Redirected to a file, standard output gets the card as it is.
    with open(tmp_path / "card.pb", "wb") as out:
        assert (
            cli("--config", str(node_dir.config_path), "card", "export", stdout=out).returncode == 0
        )
    assert (tmp_path / "card.pb").read_bytes() == node_dir.keys().card_bytes


def test_the_audit_actor_of_a_command_is_the_account_not_the_user_variable(monkeypatch):
    from exchange_node.cli.common import operator_actor

    account = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", account + "x")
    monkeypatch.setenv("LOGNAME", account + "x")
    assert operator_actor() == f"operator:{account}"
