"""Every command and option explains itself in ``--help``, with the time formats that
``--since``/``--until`` take; SIGHUP leaves a running node running, and says why."""

from __future__ import annotations

import argparse
import json
import signal
import time
import urllib.request

import pytest

from exchange_node.cli.main import build_parser
from tests.node_helpers import make_node_dir, run_cli, start_serve, stop_process


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
            yield " ".join(path), action


def test_every_option_and_argument_has_a_help_text():
    missing = [(cmd, a.dest) for cmd, a in _options(build_parser()) if not a.help]
    assert missing == []


def test_every_command_has_a_help_line():
    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, sub in action.choices.items():
                    yield (*path, name), helps.get(name)
                    yield from commands(sub, (*path, name))

    assert [" ".join(p) for p, h in commands(build_parser()) if not h] == []


@pytest.mark.parametrize("command", ["show", "export"])
def test_since_and_until_say_which_formats_they_take(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["audit", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--since TIME entries at or after TIME; ISO 8601, a date (2026-11-01" in text
    assert "--until TIME entries before TIME; ISO 8601" in text


def test_a_time_in_another_format_is_one_error_line(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    assert run_cli(["--config", str(nd.config_path), "audit", "show", "--since", "1/11/2026"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: time_invalid: time '1/11/2026': expected ISO 8601")


def test_sighup_leaves_the_node_running_and_logs_why_it_does_not_reload(tmp_path):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    proc = start_serve(nd)
    try:
        proc.send_signal(signal.SIGHUP)
        log = nd.dir / "node.log"
        deadline = time.monotonic() + 30
        while "node.sighup_ignored" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        port = json.loads((nd.dir / "ready.json").read_text())["local_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        assert proc.poll() is None
    finally:
        stop_process(proc)
    assert proc.returncode == 0
