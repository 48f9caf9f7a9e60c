"""Nodes as C2SP tlog-witnesses of each other, over the peer API.

PHL-DFA cosigns JPN-ISA's checkpoints (POST /exchange/v1/witness/add-checkpoint),
checking each extends the last one it cosigned; JPN-ISA pushes its checkpoints to the
witnesses its config names, keeps their cosignatures and puts them in its bundles,
which ``verify-bundle`` checks against a k-of-n witness policy. Every refusal status is
answered as the specification says, audited, and leaves the witness's state as it was;
a witness killed at the commit of its state update keeps the update and its leaf whole
or neither.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node.audit import leaves, merkle
from exchange_node.audit.bundle import verify_bundle
from exchange_node.audit.checkpoint import (
    Checkpoint,
    origin_for,
    sign_checkpoint,
    split_note,
    verifier_key,
)
from exchange_node.audit.commands import export
from exchange_node.audit.cosignature import verify_cosignatures, witness_vkey
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.audit.tlog_witness import encode_request
from exchange_node.errors import ValidationError
from exchange_node.identity import load_or_create_witness_key, witness_name
from exchange_node.store.sqlite import SqliteStore
from tests import node_helpers
from tests.node_helpers import (
    audit_leaves,
    child_env,
    fraud_notice,
    make_net,
    run_cli,
    settled,
    start_serve,
    stop_process,
    wait_for,
)

JPN, PHL, IOM = "JPN-ISA", "PHL-DFA", "IOM-MNL"
HELPER = [sys.executable, node_helpers.__file__]
PATH = "/exchange/v1/witness/add-checkpoint"


def witness_vkey_of(nd) -> str:
    key = load_or_create_witness_key(nd.data)
    return witness_vkey(witness_name(nd.node_id), key.public_key()).encode()


def push_to(nd, *witnesses) -> None:
    """Name ``witnesses`` (node dirs) in ``nd``'s config as witnesses to push to."""
    text = nd.config_path.read_text()
    for w in witnesses:
        text += f'\n[[witness.push]]\nvkey = "{witness_vkey_of(w)}"\npeer = "{w.node_id}"\n'
    nd.config_path.write_text(text)


def log_checkpoint(nd, size: int, leaves_seed: str = "leaf") -> tuple[str, merkle.SubtreeHash]:
    """A checkpoint of ``nd``'s log origin signed with its signing key, over a tree of
    ``size`` made-up leaves (the witness checks signatures and proofs, not leaves)."""
    hashes = [merkle.leaf_hash(f"{leaves_seed} {i}".encode()) for i in range(size)]
    root = merkle.root_from_leaf_hashes(hashes) if size else merkle.EMPTY_ROOT
    key = nd.keys().local.signing_key.private
    origin = origin_for(nd.node_id)
    return sign_checkpoint(
        Checkpoint(origin, size, root), key, origin
    ).note, merkle.list_hash_source(hashes)


async def post(nd, body: bytes) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{nd.url}{PATH}", data=body) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


# --- both ways, over mutual TLS ----------------------------------------------------------------


@pytest.fixture
async def tls_net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL, IOM], tls=True)
    yield net
    await net.stop_all()


async def test_a_node_pushes_its_checkpoints_to_its_peers_and_keeps_their_cosignatures(tls_net):
    net = tls_net
    push_to(net[JPN], net[PHL], net[IOM])
    await net[PHL].start()
    await net[IOM].start()
    jpn = await net[JPN].start()
    await jpn.push_to_witnesses()
    first = jpn.audit.latest_checkpoint()
    kept = jpn.store.cosignatures(first.tree_size)
    assert sorted(c.witness for c in kept) == [witness_name(IOM), witness_name(PHL)]

    # The log grows: the next push carries a consistency proof from the size cosigned.
    ids = [(await jpn.submit(fraud_notice(), [PHL]))[0].message_id for _ in range(3)]
    await wait_for(lambda: settled(jpn.store, ids), what="delivery")
    await jpn.sign_checkpoint()
    await jpn.push_to_witnesses()
    latest = jpn.audit.latest_checkpoint()
    assert latest.tree_size > first.tree_size
    assert len(jpn.store.cosignatures(latest.tree_size)) == 2

    # Each witness holds JPN's latest as what it cosigned, with the leaves to show it.
    phl = net[PHL].running
    [held] = phl.store.witness_logs()
    assert (held.origin, held.log_peer, held.tree_size) == (origin_for(JPN), JPN, latest.tree_size)
    sizes = [
        (r.attrs["old_size"], r.attrs["size"])
        for r in audit_leaves(phl.audit, "checkpoint.cosigned")
    ]
    assert sizes[-2:] == [
        ("0", str(first.tree_size)),
        (str(first.tree_size), str(latest.tree_size)),
    ]
    assert all(
        r.actor == JPN and r.peer == JPN for r in audit_leaves(phl.audit, "checkpoint.cosigned")
    )
    cosigned = [r.attrs for r in audit_leaves(jpn.audit, "witness.cosigned")]
    assert {a["witness"] for a in cosigned} == {witness_name(PHL), witness_name(IOM)}

    # The cosignatures verify under the witnesses' keys, read from the kept lines.
    vkeys = [witness_vkey(witness_name(n.node_id), load_or_create_witness_key(n.data).public_key())
             for n in (net[PHL], net[IOM])]  # fmt: skip
    lines = "".join(c.line for c in jpn.store.cosignatures(latest.tree_size))
    assert len(verify_cosignatures(latest.note + lines, vkeys)) == 2

    # Bundles of that checkpoint carry them; a 2-of-2 policy holds, 2 of 1 cannot.
    out = net[JPN].dir / "bundle.json"
    db = net[JPN].data / "node.sqlite"
    export(db, out, LeafFilter(kind="envelope.sent"), [])
    data = out.read_bytes()
    signing = jpn.keys.local.signing_key.private.public_key()
    report = verify_bundle(data, signing, witnesses=vkeys, witness_threshold=2)
    assert report.ok, report.problems
    assert report.witnessed == 2
    absent = witness_vkey("witness.example.org/w1", Ed25519PrivateKey.generate().public_key())
    report = verify_bundle(data, signing, witnesses=[*vkeys, absent], witness_threshold=2)
    assert report.ok and report.witnessed == 2
    report = verify_bundle(data, signing, witnesses=[*vkeys, absent])  # default: all of them
    assert not report.ok
    assert report.problems == (
        f"witness_policy_unmet: 2 of the 3 witnesses given cosigned the checkpoint of size"
        f" {latest.tree_size}; the policy needs 3",
    )
    with pytest.raises(ValidationError):
        verify_bundle(data, signing, witnesses=vkeys[:1], witness_threshold=2)


async def test_a_witness_that_lost_track_answers_409_and_the_log_retries_from_its_size(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    try:
        push_to(net[JPN], net[PHL])
        await net[PHL].start()
        jpn = await net[JPN].start()
        await jpn.push_to_witnesses()
        size = jpn.audit.latest_checkpoint().tree_size
        assert jpn.store.cosignatures(size)
        await net[JPN].stop()
        db = sqlite3.connect(net[JPN].data / "node.sqlite")  # JPN forgets what was cosigned
        with db:
            db.execute("DELETE FROM audit_cosignatures")
        db.close()
        jpn = await net[JPN].start()  # a new checkpoint: config.loaded was appended
        await jpn.push_to_witnesses()
        latest = jpn.audit.latest_checkpoint()
        assert latest.tree_size > size and jpn.store.cosignatures(latest.tree_size)
        [refused] = [
            r for r in audit_leaves(net[PHL].running.audit, "checkpoint.refused")
            if r.reason == "old_size_mismatch"
        ]  # fmt: skip
        assert refused.attrs["status"] == "409" and refused.attrs["latest_size"] == str(size)
    finally:
        await net.stop_all()


# --- every answer of the witness ---------------------------------------------------------------


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def test_every_refusal_is_answered_as_the_spec_says_audited_and_changes_nothing(net):
    phl = await net[PHL].start()
    cp3, _ = log_checkpoint(net[JPN], 3)
    cp7, tree7 = log_checkpoint(net[JPN], 7)

    status, ctype, body = await post(net[PHL], encode_request(0, [], cp3))
    assert status == 200 and ctype == "text/plain"
    assert body.decode().startswith(f"\u2014 {witness_name(PHL)} ")
    vkey = witness_vkey(witness_name(PHL), load_or_create_witness_key(net[PHL].data).public_key())
    [c] = verify_cosignatures(cp3 + body.decode(), [vkey])
    assert c.timestamp > 0
    held = phl.store.witness_logs()

    async def refused(request: bytes, status: int, code: str) -> None:
        got, ctype, body = await post(net[PHL], request)
        assert got == status
        if status == 409:
            assert (ctype, body) == ("text/x.tlog.size", b"3\n")
        else:
            assert ctype == "application/json" and code.encode() in body
        assert phl.store.witness_logs() == held  # nothing changed
        leaf = audit_leaves(phl.audit, "checkpoint.refused")[-1]
        assert (leaf.reason, leaf.attrs["status"]) == (code, str(status))

    await refused(b"old 3\n", 400, "request_malformed")
    await refused(encode_request(9, [], cp7), 400, "old_size_too_large")
    stranger, _ = log_checkpoint(net[PHL], 3)  # PHL's own log: not a peer's, not witnessed
    await refused(encode_request(0, [], stranger), 404, "log_unknown")
    # JPN's key hash, but a signature that is not JPN's: a malformed note, 403.
    key_hash = split_note(cp7)[1][0].key_hash
    forged = cp7[: cp7.rindex(" ") + 1] + base64.b64encode(key_hash + b"\x00" * 64).decode() + "\n"
    proof7 = merkle.consistency_proof(3, 7, tree7)
    await refused(encode_request(3, proof7, forged), 403, "signature_invalid")
    await refused(encode_request(0, [], cp7), 409, "old_size_mismatch")
    other7, other_tree = log_checkpoint(net[JPN], 7, leaves_seed="rewritten")
    await refused(
        encode_request(3, merkle.consistency_proof(3, 7, other_tree), other7),
        422,
        "consistency_proof_invalid",
    )
    assert phl.metrics.witness_refused.labels("consistency_proof_invalid")._value.get() == 1

    # And the consistent next checkpoint is cosigned.
    status, _, line = await post(net[PHL], encode_request(3, proof7, cp7))
    assert status == 200
    assert phl.store.witness_logs()[0].tree_size == 7

    # A monitor reads the latest cosigned checkpoint by the hash of its origin.
    origin_hash = hashlib.sha256(origin_for(JPN).encode()).hexdigest()
    async with aiohttp.ClientSession() as session:
        url = f"{net[PHL].url}/exchange/v1/witness/{origin_hash}/checkpoint"
        async with session.get(url) as resp:
            assert resp.status == 200
            assert await resp.text() == cp7 + line.decode()
        async with session.get(url.replace(origin_hash, "0" * 64)) as resp:
            assert resp.status == 404


async def test_a_node_configured_not_to_cosign_answers_404(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    try:
        text = net[PHL].config_path.read_text().replace("cosign = true", "cosign = false")
        net[PHL].config_path.write_text(text)
        await net[PHL].start()
        cp, _ = log_checkpoint(net[JPN], 3)
        status, _, _ = await post(net[PHL], encode_request(0, [], cp))
        assert status == 404
    finally:
        await net.stop_all()


# --- the commit point of the witness's state update -----------------------------------------


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_witness_killed_at_its_commit_keeps_state_and_leaf_whole_or_neither(net, point):
    cp, _ = log_checkpoint(net[JPN], 5)
    proc = start_serve(net[PHL], "--crash-at", f"witness.cosign:{point}", script=HELPER)
    try:
        with pytest.raises(aiohttp.ClientError):  # killed before it answered
            await post(net[PHL], encode_request(0, [], cp))
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        stop_process(proc)

    store = await SqliteStore.open(net[PHL].data / "node.sqlite")
    audit = AuditLog(net[PHL].data / "node.sqlite", node_id=PHL)
    try:
        rows = store.witness_logs()
        cosigned = audit_leaves(audit, "checkpoint.cosigned")
        assert len(rows) == len(cosigned) == (1 if point == "committed" else 0)
        if rows:
            assert rows[0].tree_size == 5 and cosigned[0].attrs["size"] == "5"
    finally:
        audit.close()
        await store.close()

    proc = start_serve(net[PHL])
    try:  # asked again from 0: cosigned if the update was lost, 409 with 5 if it was kept
        status, _, body = await post(net[PHL], encode_request(0, [], cp))
    finally:
        stop_process(proc)
    if point == "committed":
        assert (status, body) == (409, b"5\n")
    else:
        assert status == 200 and body.decode().startswith("\u2014 ")


# --- the auditor's side: keys show, verify-bundle with a witness policy -----------------------


async def cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(run_cli, args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_verify_bundle_applies_a_witness_policy_to_the_bundle_or_a_named_checkpoint(
    net, capsys, tmp_path
):
    push_to(net[JPN], net[PHL])
    await net[PHL].start()
    jpn = await net[JPN].start()
    await jpn.push_to_witnesses()
    witnessed = jpn.audit.latest_checkpoint()
    jpn_config = ["--config", str(net[JPN].config_path)]
    code, out = await cli(capsys, "--config", str(net[PHL].config_path), "keys", "show")
    [vkey] = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("witness key")]
    assert vkey == witness_vkey_of(net[PHL])
    signing = jpn.keys.local.signing_key.public.hex()

    bundle = tmp_path / "bundle.json"
    await cli(
        capsys, *jpn_config, "audit", "export", "--kind", "config.loaded", "--out", str(bundle)
    )
    code, out = await cli(
        capsys, "audit", "verify-bundle", str(bundle), "--key", signing, "--witness", vkey
    )
    assert code == 0, out
    assert f"witnesses: 1 of 1 cosigned the checkpoint of size {witnessed.tree_size}" in out
    code, out = await cli(capsys, "audit", "verify-bundle", str(bundle), "--witness-threshold", "1")
    assert code != 0 and "--witness-threshold and --witnessed need --witness VKEY" in out

    # The log grows and signs a checkpoint no witness has seen: the bundle of it fails the
    # policy, unless the policy is applied to the witnessed checkpoint it extends.
    cosigned = tmp_path / "cosigned.txt"
    cosigned.write_text(json.loads(bundle.read_text())["checkpoint"])
    jpn.witnesses.witnesses = ()  # pushes off: the next checkpoint stays unwitnessed
    await jpn.record_audit(leaves.config_loaded(jpn.now_ms(), "", False))
    await jpn.sign_checkpoint()
    later = tmp_path / "later.json"
    await cli(capsys, *jpn_config, "audit", "export", "--kind", "config.loaded", "--out", str(later),
              "--consistency-from", str(witnessed.tree_size))  # fmt: skip
    policy = ["--key", signing, "--witness", vkey]
    code, out = await cli(capsys, "audit", "verify-bundle", str(later), *policy)
    assert code == 1 and "witness_policy_unmet: 0 of the 1 witnesses given" in out
    code, out = await cli(
        capsys, "audit", "verify-bundle", str(later), *policy, "--witnessed", str(cosigned)
    )
    assert code == 0, out
    assert f"witnesses: 1 of 1 cosigned the checkpoint of size {witnessed.tree_size}" in out
    assert "not covered by the witnessed checkpoint" in out  # the entry appended since


async def test_a_log_named_in_the_config_is_witnessed_like_a_peers(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    try:
        key = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
        origin = "transparency.example.org/log1"
        text = net[PHL].config_path.read_text()
        vkey = verifier_key(origin, key.public_key())
        net[PHL].config_path.write_text(text.replace("logs = []", f'logs = ["{vkey}"]'))
        phl = await net[PHL].start()
        note = sign_checkpoint(Checkpoint(origin, 0, merkle.EMPTY_ROOT), key, origin).note
        status, _, _ = await post(net[PHL], encode_request(0, [], note))
        assert status == 200
        [held] = phl.store.witness_logs()
        assert (held.origin, held.log_peer, held.tree_size) == (origin, "", 0)
        [leaf] = audit_leaves(phl.audit, "checkpoint.cosigned")
        assert (leaf.peer, leaf.attrs["origin"]) == ("", origin)
    finally:
        await net.stop_all()


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_log_killed_while_keeping_a_cosignature_keeps_it_and_its_leaf_or_neither(
    net, point
):
    push_to(net[JPN], net[PHL])
    await net[PHL].start()
    # JPN signs a checkpoint at start and pushes it; killed as it keeps the cosignature.
    proc = subprocess.Popen(
        [*HELPER, "--config", str(net[JPN].config_path), "--crash-at", f"witness.keep:{point}",
         "serve", "--ready-file", str(net[JPN].dir / "ready.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    try:
        assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL
    finally:
        stop_process(proc)
    [held] = net[PHL].running.store.witness_logs()  # the witness did cosign

    store = await SqliteStore.open(net[JPN].data / "node.sqlite")
    audit = AuditLog(net[JPN].data / "node.sqlite", node_id=JPN)
    try:
        kept, leaves_kept = store.cosignatures(), audit_leaves(audit, "witness.cosigned")
        assert len(kept) == len(leaves_kept) == (1 if point == "committed" else 0)
    finally:
        audit.close()
        await store.close()

    # After a restart the next checkpoint is cosigned either way: from the size kept, or
    # (the cosignature lost with its transaction) after a 409 stating the witness's size.
    jpn = await net[JPN].start()
    await jpn.push_to_witnesses()
    latest = jpn.audit.latest_checkpoint()
    assert latest.tree_size > held.tree_size and jpn.store.cosignatures(latest.tree_size)
    conflicts = [
        r for r in audit_leaves(net[PHL].running.audit, "checkpoint.refused")
        if r.reason == "old_size_mismatch"
    ]  # fmt: skip
    assert len(conflicts) == (0 if point == "committed" else 1)
