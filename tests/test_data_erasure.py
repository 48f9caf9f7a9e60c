"""Erasure that the audit log survives: per-record data keys, crypto-shredding, KEK rotation.

Real nodes on loopback, real files: an erased case is looked for in the raw bytes of the
database (and its write-ahead log) with every key file the node had before the erasure.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import aiohttp
import pytest
from cryptography.exceptions import InvalidTag

from exchange_node.at_rest import AtRest
from exchange_node.audit.leaf import LeafKind
from exchange_node.domain.repatriation import Role
from exchange_node.node import DATABASE, Node
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.record_keys import KekFiles
from exchange_node.services.cases import (
    Participant,
    PersonalData,
    _note_context,
    _personal_context,
)
from exchange_node.store.migrations import MIGRATIONS, migrate
from tests import node_helpers
from tests.node_helpers import (
    child_env,
    make_net,
    run_cli,
    settled,
    start_serve,
    stop_process,
    wait_for,
)

JPN, PHL = "JPN-ISA", "PHL-DFA"
NAME = "Maria Santos Dela Cruz"
NOTE = "referred by the Manila shelter, room 12"
HELPER = [sys.executable, node_helpers.__file__]


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def _open_case(node: Node) -> str:
    case, ids = await node.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)],
        PersonalData(full_name=NAME, nationality="PHL", sex="F"),
        NOTE,
        actor="officer-1",
    )
    await wait_for(lambda: settled(node.store, list(ids.values())), what="delivery")
    return case.case_ref


def _db_bytes(data_dir) -> bytes:
    """Everything of the database on disk: the file and its write-ahead log."""
    out = b""
    for suffix in ("", "-wal"):
        path = data_dir / (DATABASE + suffix)
        if path.exists():
            out += path.read_bytes()
    return out


def _blobs(data_dir, ref: str) -> dict[str, bytes]:
    with sqlite3.connect(data_dir / DATABASE) as db:
        personal = db.execute("SELECT personal FROM cases WHERE case_ref = ?", (ref,)).fetchone()
        note = db.execute(
            "SELECT note FROM case_events WHERE case_ref = ? AND sequence = 1", (ref,)
        ).fetchone()
        key = db.execute(
            "SELECT wrapped, kek_version FROM record_keys WHERE record_id = ?", (f"case:{ref}",)
        ).fetchone()
    return {"personal": personal[0], "note": note[0], "wrapped": key[0], "version": key[1]}


async def _token(node: Node, role: str, name: str) -> str:
    secret = "xn_" + "t" * 30 + name.replace("-", "")
    await node.store.create_token(name, role, secret, int(time.time() * 1000))
    return secret


async def test_an_erased_case_is_unreadable_with_the_database_and_every_key_file_of_its_time(
    net, tmp_path
):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _open_case(jpn)
    before = _blobs(net[JPN].data, ref)
    assert NAME.encode() not in _db_bytes(net[JPN].data)  # encrypted at rest from the start
    keys_then = tmp_path / "keys-of-the-time"
    shutil.copytree(net[JPN].data / "keys", keys_then)
    operator = await _token(jpn, "operator", "dpo-1")
    officer = await _token(jpn, "case_officer", "officer-1")

    base = f"http://127.0.0.1:{jpn.local_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/cases/{ref}/erasure",
            json={"reason": "erasure_request"},
            headers={"Authorization": f"Bearer {operator}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            purge = await resp.json()
        async with http.get(
            f"{base}/api/v1/cases/{ref}?purpose=case_management",
            headers={"Authorization": f"Bearer {officer}"},
        ) as resp:
            shown = await resp.json()
        async with http.post(
            f"{base}/api/v1/cases/{ref}/erasure",
            json={"reason": "erasure_request"},
            headers={"Authorization": f"Bearer {operator}"},
        ) as resp:
            assert resp.status == 409
            assert (await resp.json())["code"] == "record_purged"
    assert purge == {
        "record": f"case:{ref}",
        "record_type": "case",
        "reason": "erasure_request",
        "approver": "dpo-1",
        "purged_at_ms": purge["purged_at_ms"],
        # The peer that holds the case is told (tests/test_data_purge_travels.py).
        "confirmations": [{**purge["confirmations"][0], "recipient": PHL}],
    }
    # The case keeps its steps; its content is gone and it says why.
    assert shown["personal_data"] is None
    assert shown["timeline"][0]["note"] == ""
    assert shown["timeline"][0]["type"] == "open_case"
    assert shown["purged"]["reason"] == "erasure_request"
    assert shown["allowed_events"] == []

    # Nothing left to decrypt: neither the wrapped key nor any ciphertext is in the file
    # or its log, even in free pages; and what was there does not open with the keys of
    # the time without the wrapped key.
    raw = _db_bytes(net[JPN].data)
    for name in ("personal", "note", "wrapped"):
        assert before[name] not in raw, f"the {name} blob survived in the database file"
    assert NAME.encode() not in raw and NOTE.encode() not in raw
    with sqlite3.connect(net[JPN].data / DATABASE) as db:
        assert db.execute(
            "SELECT COUNT(*) FROM record_keys WHERE record_id = ?", (f"case:{ref}",)
        ).fetchone() == (0,)
        assert db.execute("SELECT personal FROM cases WHERE case_ref = ?", (ref,)).fetchone() == (
            None,
        )
    storage = AtRest.load_or_create(keys_then / "storage.key")
    with pytest.raises(InvalidTag):
        storage.decrypt(before["personal"], _personal_context(ref))

    # Audited, verifying, and the leaf names no one.
    [leaf] = jpn.audit.query(kind=LeafKind.RECORD_PURGED)
    assert leaf.record.actor == "dpo-1"
    assert leaf.record.attrs == {"record_type": "case", "record": "", "reason": "erasure_request"}
    assert leaf.record.subject_hash == jpn.services.case_subject_hash(ref)
    assert NAME.encode() not in leaf.data
    assert jpn.audit.verify().ok

    assert jpn.services.cases.get(ref).personal is None
    with pytest.raises(Exception) as refused:
        await jpn.services.cases.add_event(ref, "record_consent", "", actor="officer-1")
    assert getattr(refused.value, "code", "") == "case_purged"


async def test_an_erased_case_still_has_a_proof_of_delivery_that_reports_the_purge(
    net, tmp_path, capsys
):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _open_case(jpn)
    mid = jpn.services.cases.get(ref).events[0].message_ids[PHL]
    await jpn.services.cases.erase(ref, "retention", approver="retention")
    await net.stop_all()
    out = tmp_path / "proof.json"
    args = ["--config", str(net[JPN].config_path), "proof", "export", mid, "--out", str(out)]
    assert await asyncio.to_thread(run_cli, args) == 0
    capsys.readouterr()
    fingerprint = net[PHL].keys().fingerprint
    assert (
        await asyncio.to_thread(
            run_cli, ["proof", "verify", str(out), "--fingerprint", fingerprint]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"delivery proof {out}: OK"
    [purged] = [line for line in lines if "content purged" in line]
    subject = jpn.services.case_subject_hash(ref)
    assert f"case {subject}: personal content purged (retention, approved by retention)" in purged
    assert ref not in purged

    bundle = tmp_path / "bundle.json"
    export = ["--config", str(net[JPN].config_path), "audit", "export", "--out", str(bundle)]
    assert await asyncio.to_thread(run_cli, export) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(run_cli, ["audit", "verify-bundle", str(bundle)]) == 0
    report = capsys.readouterr().out
    assert "OK" in report.splitlines()[0]
    assert "purged: seq " in report and f"case {subject}: personal content purged" in report


async def test_kek_rotation_rewraps_data_keys_and_leaves_the_ciphertext_untouched(net):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _open_case(jpn)
    before = _blobs(net[JPN].data, ref)
    assert before["version"] == 1

    version, count = await jpn.services.protection.rotate_kek("operator")
    after = _blobs(net[JPN].data, ref)
    assert (version, count) == (2, 1)
    assert after["version"] == 2 and after["wrapped"] != before["wrapped"]
    assert (after["personal"], after["note"]) == (before["personal"], before["note"])
    assert jpn.services.cases.get(ref).personal.full_name == NAME
    [rotated] = [
        leaf
        for leaf in jpn.audit.query(kind=LeafKind.KEK_ROTATED)
        if leaf.record.attrs["to"] == "2"
    ]
    assert rotated.record.attrs == {"from": "1", "to": "2", "rewrapped": "1"}

    # Version 1 is kept for the backup horizon, then destroyed: the case still reads.
    kek_files = KekFiles(net[JPN].data / "keys")
    assert kek_files.versions() == [1, 2]
    assert await jpn.services.protection.destroy_expired_keks("retention") == []
    real_clock = jpn.clock
    horizon = jpn.config.data_protection.backup_horizon_days * DAY_MS
    jpn.clock = lambda: real_clock() + horizon
    assert await jpn.services.protection.destroy_expired_keks("retention") == [1]
    assert kek_files.versions() == [2]
    assert (net[JPN].data / "keys" / "kek-2.key").stat().st_mode & 0o777 == 0o600
    [destroyed] = jpn.audit.query(kind=LeafKind.KEK_DESTROYED)
    assert destroyed.record.attrs["version"] == "1"
    assert [v.destroyed_at is not None for v in jpn.store.kek_versions()] == [True, False]
    assert jpn.services.cases.get(ref).personal.full_name == NAME
    assert jpn.audit.verify().ok


async def test_a_backup_from_before_an_erasure_is_dead_once_its_kek_is_destroyed(net, tmp_path):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _open_case(jpn)
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(net[JPN].data / DATABASE) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    await jpn.services.cases.erase(ref, "erasure_request", approver="dpo-1")
    await jpn.services.protection.rotate_kek("operator")
    real_clock = jpn.clock
    jpn.clock = lambda: real_clock() + jpn.config.data_protection.backup_horizon_days * DAY_MS
    await jpn.services.protection.destroy_expired_keks("retention")

    # The old backup still holds the wrapped key, but under version 1, which is gone.
    with sqlite3.connect(backup) as db:
        wrapped, version = db.execute(
            "SELECT wrapped, kek_version FROM record_keys WHERE record_id = ?", (f"case:{ref}",)
        ).fetchone()
    assert version == 1
    kek_files = KekFiles(net[JPN].data / "keys")
    with pytest.raises(Exception) as gone:
        kek_files.unwrap(f"case:{ref}", wrapped, 1)
    assert type(gone.value).__name__ == "KekMissing"
    with pytest.raises(InvalidTag):  # nor does the current KEK open it
        kek_files.unwrap(f"case:{ref}", wrapped, 2)


def _legacy_database(net) -> tuple[str, bytes, bytes]:
    """A database as the release before per-record keys left it: one case encrypted under
    the node-wide storage key. Returns its reference and its two blobs."""
    data = net[JPN].data
    path = data / DATABASE
    for suffix in ("", "-wal", "-shm"):
        (data / (DATABASE + suffix)).unlink(missing_ok=True)
    path.touch(mode=0o600)
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, str(path), MIGRATIONS[:5])
    storage = AtRest.load_or_create(data / "keys" / "storage.key")
    ref = "JPN-2026-K7QW2M4D"
    personal = storage.encrypt(
        json.dumps(
            {"full_name": NAME, "date_of_birth": "", "nationality": "PHL", "sex": "F",
             "languages": "", "special_needs": ""}
        ).encode(),
        _personal_context(ref),
    )  # fmt: skip
    note = storage.encrypt(NOTE.encode(), _note_context(ref, 1))
    participants = json.dumps(
        [{"node_id": JPN, "role": "IDENTIFYING_STATE"}, {"node_id": PHL, "role": "ORIGIN_STATE"}]
    )
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO cases VALUES (?, ?, ?, ?, ?)", (ref, JPN, participants, personal, 1000)
        )
        db.execute(
            "INSERT INTO case_events VALUES (?, 1, ?, 'open_case', ?, 'IDENTIFYING_STATE', 1000,"
            " ?, 'officer-1', '{}', 1000)",
            (ref, b"\x01" * 16, JPN, note),
        )
    return ref, personal, note


async def test_a_node_upgraded_from_schema_5_keeps_reading_its_cases(net):
    """The first start converts the cases; the old blobs are gone."""
    data = net[JPN].data
    ref, personal, note = _legacy_database(net)
    storage = AtRest.load_or_create(data / "keys" / "storage.key")
    jpn = await net[JPN].open()
    case = jpn.services.cases.get(ref)
    assert case.personal.full_name == NAME
    assert case.events[0].note == NOTE
    assert jpn.store.record_key(f"case:{ref}").kek_version == 1
    now = _blobs(data, ref)
    assert now["personal"] != personal
    with pytest.raises(InvalidTag):
        storage.decrypt(now["personal"], _personal_context(ref))
    raw = _db_bytes(data)
    assert personal not in raw and note not in raw
    assert await jpn.services.cases.adopt_record_keys(jpn.at_rest) == 0  # done once


# --- all or nothing: an erasure killed at each commit point ---------------------------------


async def _erase_through_the_api(nd, secret: str, ref: str) -> tuple[int, str]:
    port = json.loads((nd.dir / "ready.json").read_text())["local_port"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/v1/cases/{ref}/erasure",
            json={"reason": "erasure_request"},
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_an_erasure_killed_at_its_commit_is_whole_or_not_at_all(net, point):
    jpn = await net[JPN].open()  # PHL-DFA stays down: the case's envelope stays queued
    case, ids = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name=NAME), NOTE,
        actor="officer-1",
    )  # fmt: skip
    ref = case.case_ref
    secret = await _token(jpn, "operator", "dpo-1")
    await net[JPN].stop()

    proc = start_serve(net[JPN], "--crash-at", f"record.purge:{point}", script=HELPER)
    try:
        with pytest.raises(aiohttp.ClientError):  # killed before it could answer
            await _erase_through_the_api(net[JPN], secret, ref)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        stop_process(proc)

    jpn = await net[JPN].open()
    erased = point == "committed"
    kept = jpn.services.cases.get(ref)
    assert (kept.personal is None, kept.events[0].note == "") == (erased, erased)
    assert (jpn.store.record_key(f"case:{ref}") is None) == erased
    assert (jpn.store.record_purge(f"case:{ref}") is not None) == erased
    assert len(jpn.audit.query(kind=LeafKind.RECORD_PURGED)) == (1 if erased else 0)
    [row] = jpn.store.message_status(ids[PHL])
    assert row.state.value == ("dead" if erased else "queued")
    if not erased:  # nothing happened: the erasure can be asked again and is done once
        await jpn.services.cases.erase(ref, "erasure_request", approver="dpo-1")
        assert jpn.services.cases.get(ref).personal is None
        assert len(jpn.audit.query(kind=LeafKind.RECORD_PURGED)) == 1
    assert jpn.audit.verify().ok


def _cli_killed_at(net, label: str, point: str, *args: str) -> int:
    env = {**child_env(), "EXCHANGE_NODE_CRASH_AT": f"{label}:{point}"}
    proc = subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "--config", str(net[JPN].config_path), *args],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    return proc.returncode


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_kek_rotation_killed_at_its_commit_is_whole_or_not_at_all(net, point):
    jpn = await net[JPN].open()
    case, _ = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name=NAME), NOTE, actor="o-1"
    )
    await net[JPN].stop()
    rc = await asyncio.to_thread(_cli_killed_at, net, "kek.rotate", point, "data", "kek", "rotate")
    assert rc == -signal.SIGKILL

    jpn = await net[JPN].open()  # a file without its row is deleted at the start
    rotated = point == "committed"
    assert KekFiles(net[JPN].data / "keys").versions() == ([1, 2] if rotated else [1])
    assert jpn.store.current_kek() == (2 if rotated else 1)
    assert jpn.store.record_key(f"case:{case.case_ref}").kek_version == (2 if rotated else 1)
    assert jpn.services.cases.get(case.case_ref).personal.full_name == NAME
    version, _ = await jpn.services.protection.rotate_kek("operator")
    assert version == (3 if rotated else 2)  # a version number is never used twice


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_the_upgrade_data_step_killed_at_its_commit_converts_each_case_once(net, point):
    ref, personal, _ = _legacy_database(net)
    rc = await asyncio.to_thread(
        _cli_killed_at, net, "case.adopt_keys", point, "data", "kek", "list"
    )
    assert rc == -signal.SIGKILL
    with sqlite3.connect(net[JPN].data / DATABASE) as db:
        kept = db.execute("SELECT personal FROM cases WHERE case_ref = ?", (ref,)).fetchone()[0]
    assert (kept == personal) == (point == "applied")  # converted whole, or not at all

    jpn = await net[JPN].open()  # the next start finishes (or has nothing left to do)
    assert jpn.services.cases.get(ref).personal.full_name == NAME
    assert jpn.services.cases.get(ref).events[0].note == NOTE


# --- a rotation is never undone by another process, nor by its own cancellation -------------


async def test_a_rotation_under_way_keeps_its_new_file_when_another_process_starts(net):
    """Another process opening the node (every CLI command does) while a rotation has
    written its new KEK file but not committed must not take the file for a leftover."""
    jpn = await net[JPN].open()
    files = KekFiles(net[JPN].data / "keys")
    with files.changing():  # a rotation under way: file written, row not committed yet
        files.create(2)
        assert await jpn.services.protection.ensure_kek() == 1
        assert files.versions() == [1, 2]
    # Once no rotation holds the lock, a file no row names is a leftover and goes.
    assert await jpn.services.protection.ensure_kek() == 1
    assert files.versions() == [1]


async def test_a_cancelled_rotation_that_commits_keeps_its_key_file(net):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _open_case(jpn)
    task = asyncio.ensure_future(jpn.services.protection.rotate_kek("operator"))
    await asyncio.sleep(0)  # the file is written and the transaction handed to the store
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    current = jpn.store.current_kek()
    files = KekFiles(net[JPN].data / "keys").versions()
    assert current in files  # whatever was committed, its key exists
    assert jpn.store.record_key(f"case:{ref}").kek_version in files
    assert jpn.services.cases.get(ref).personal.full_name == NAME


async def test_a_kek_destroyed_elsewhere_is_destroyed_here_too(net):
    """Processes on several machines share one database but each has its keys folder:
    a version one of them destroyed must not survive in another's copy."""
    jpn = await net[JPN].start()
    await jpn.services.protection.rotate_kek("operator")
    files = KekFiles(net[JPN].data / "keys")
    spare = files.path(1).read_bytes()
    real_clock = jpn.clock
    jpn.clock = lambda: real_clock() + jpn.config.data_protection.backup_horizon_days * DAY_MS
    assert await jpn.services.protection.destroy_expired_keks("retention") == [1]
    files.path(1).write_bytes(spare)  # the copy another machine still holds
    files.path(1).chmod(0o600)
    assert await jpn.services.protection.destroy_expired_keks("retention") == []
    assert files.versions() == [2]
