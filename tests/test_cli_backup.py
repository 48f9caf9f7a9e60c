"""``backup`` while the node runs and ``restore`` into an empty data directory: the
restore drill of docs/operations.md, run for real. Every file of a backup is 0600; the
restored node's audit log verifies and holds what was there when the backup was taken."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from tests.node_helpers import (
    child_env,
    make_node_dir,
    set_options,
    start_serve,
    stop_process,
)

WRITER = """
import asyncio, secrets, sys, time
from pathlib import Path
from exchange_node.audit.log import AuditLog
from exchange_node.store.sqlite import SqliteStore
from exchange_node.audit import leaves

async def main(db, stop):
    store = await SqliteStore.open(db)
    log = AuditLog(db, node_id="JPN-ISA")
    store.attach_audit(log.append_on)
    i = 0
    while not Path(stop).exists():
        i += 1
        name = f"writer-{i}"
        await store.create_token(name, "auditor", "xn_" + secrets.token_urlsafe(32), i,
                                 audit=[leaves.token_created(i, name, "auditor", None)])
    await store.close()
    log.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", *args],
        capture_output=True,
        env=child_env(),
        timeout=120,
        text=True,
    )


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def node_dir(tmp_path):
    return make_node_dir(tmp_path, "JPN-ISA")


def test_backup_while_serving_and_writing_then_the_restore_drill(node_dir, tmp_path):
    config = str(node_dir.config_path)
    node_dir.config_path.write_text(
        set_options(node_dir.config_path.read_text(), {"checkpoint_interval_seconds": 1})
    )
    serve = start_serve(node_dir)
    stop_file = tmp_path / "stop-writing"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(node_dir.data / "node.sqlite"), str(stop_file)],
        env=child_env(),
    )
    try:
        assert (
            cli(
                "--config", config, "token", "create", "--role", "auditor", "--name", "before"
            ).returncode
            == 0
        )
        for name in ("node.sqlite", "node.sqlite-wal", "node.sqlite-shm"):
            assert mode(node_dir.data / name) == 0o600, name
        backup, keks = tmp_path / "backup-1", tmp_path / "escrow"
        done = cli("--config", config, "backup", "--out", str(backup), "--keks-out", str(keks))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"backed up JPN-ISA into {backup} (")
    finally:
        stop_file.touch()
        assert writer.wait(timeout=60) == 0
        stop_process(serve)

    assert mode(backup) == 0o700
    files = [p for p in backup.rglob("*") if p.is_file()]
    assert {mode(p) for p in files} == {0o600}
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    assert {"data/node.sqlite", "data/card.pb", "data/keys/storage.key", "node.toml"} <= set(
        manifest["files"]
    )
    assert not any(name.endswith(("-wal", "-shm", "serve.lock")) for name in manifest["files"])
    # The key-encryption keys never travel with the database they unwrap: apart, 0600.
    assert not any("kek-" in name for name in manifest["files"])
    assert not list(backup.rglob("kek-*"))
    escrowed = sorted(p.name for p in keks.iterdir())
    assert escrowed == sorted(p.name for p in (node_dir.data / "keys").glob("kek-*.key"))
    assert escrowed and {mode(p) for p in keks.iterdir()} == {0o600}

    # The drill: set the data directory aside, restore, verify, start.
    node_dir.data.rename(tmp_path / "data.old")
    done = cli("--config", config, "restore", str(backup), "--keks", str(keks))
    assert done.returncode == 0, done.stderr
    assert "is missing" not in done.stderr
    assert sorted(p.name for p in (node_dir.data / "keys").glob("kek-*.key")) == escrowed
    assert mode(node_dir.data) == 0o700
    assert mode(node_dir.data / "card.pb") == 0o644
    assert mode(node_dir.data / "node.sqlite") == 0o600
    assert {mode(p) for p in (node_dir.data / "keys").glob("*.pem") if "cert" not in p.name} == {
        0o600
    }
    verified = cli("--config", config, "audit", "verify")
    assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stdout
    tokens = json.loads(cli("--config", config, "token", "list", "--json").stdout)["tokens"]
    assert "before" in {t["name"] for t in tokens}
    shown = cli("--config", config, "audit", "show", "--json").stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in shown]
    assert kinds.count("backup.made") == 1 and kinds[-1] == "backup.restored"
    again = start_serve(node_dir)
    stop_process(again)
    assert again.returncode == 0


def test_restore_refuses_a_data_directory_in_use_and_a_damaged_backup(node_dir, tmp_path):
    config = str(node_dir.config_path)
    backup = tmp_path / "backup"
    assert cli("--config", config, "backup", "--out", str(backup)).returncode == 0

    done = cli("--config", config, "restore", str(backup))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: data_dir_not_empty: {node_dir.data} is not empty;")

    node_dir.data.rename(tmp_path / "data.old")
    key = next((backup / "data" / "keys").glob("signing-*.pem"))
    key.write_bytes(key.read_bytes().replace(b"A", b"B", 1))
    done = cli("--config", config, "restore", str(backup))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: backup_damaged: {key} is missing or does not match")
    assert not node_dir.data.exists()

    done = cli("--config", config, "backup", "--out", str(backup))
    assert (done.returncode, done.stderr.split(":")[1].strip()) == (2, "out_exists")
