"""docs/operations.md as an operator pastes it: every ``sh`` block, in order, in one
shell, against a real node (set up, joined to a peer, serving, rotated, looked up,
audited, backed up, stopped and restored). Only what cannot be known when the guide is
written differs: the peer's fingerprint (read out by phone), free ports instead of 8443
and 8080, and a scratch folder for /etc/exchange-node and /var/backups."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.node_helpers import REPO, child_env, free_port, make_node_dir

GUIDE = REPO / "docs" / "operations.md"
EXAMPLE_FINGERPRINT = "ZEKG-5EVI-V3VX-..."


def guide_blocks() -> list[str]:
    """The guide's ``sh`` blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_guide_has_a_session_to_run():
    text = "\n".join(guide_blocks())
    for command in ("init", "peer add", "serve", "token create", "lookup", "case open",
                    "audit verify-bundle", "keys rotate", "backup", "restore"):  # fmt: skip
        assert f"exchange-node {command}" in text, command


def test_the_operations_guide_runs_as_written(tmp_path):
    peer = make_node_dir(tmp_path / "peer", "PHL-DFA", tls=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "phl-dfa.card").write_bytes(peer.keys().card_bytes)
    # The files the guide's commands read, as an officer would have written them.
    (work / "docs.txt").write_text("# morning list\nPHL P1234567A P\nPHL X0000000\n")
    (work / "person.json").write_text('{"full_name": "Maria Santos", "nationality": "PHL"}')
    (tmp_path / "backups").mkdir()

    peer_port, local_port = free_port(), free_port()
    replacements = {
        "/etc/exchange-node": str(tmp_path / "etc" / "exchange-node"),
        "/var/backups": str(tmp_path / "backups"),
        ":8443": f":{peer_port}",
        ":8080": f":{local_port}",
        EXAMPLE_FINGERPRINT: peer.keys().fingerprint,
    }
    script = "\n".join(guide_blocks())
    for example, here in replacements.items():
        script = script.replace(example, here)
    env = child_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("EXCHANGE_NODE_TOKEN", "EXCHANGE_NODE_CONFIG"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\ntrap 'kill $(jobs -p) 2> /dev/null || true' EXIT\n"
         + script],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "created node JPN-ISA (JPN)" in out
    assert "pinned PHL-DFA" in out or "PHL-DFA" in out
    assert "PHL X0000000: not known" in out
    assert re.search(r"case JPN-\d{4}-\w+: CONSENT_RECORDED", out)
    assert "rotated keys: card serial 2" in out
    assert "backed up JPN-ISA into" in out and "restored JPN-ISA into" in out
    assert out.rstrip().splitlines()[-2].endswith(": OK")  # audit verify after the restore
    assert "bundle lookups.json: OK" in out
    bundle = json.loads((work / "lookups.json").read_text())
    kinds = {json.loads(base64.b64decode(leaf["data"]))["kind"] for leaf in bundle["leaves"]}
    assert kinds == {"document.lookup"}
