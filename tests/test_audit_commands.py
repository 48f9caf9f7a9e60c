"""The functions behind `exchange-node audit verify|show|prove|export|verify-bundle`."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node.audit import commands, merkle
from exchange_node.audit.checkpoint import verifier_key
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.errors import NotFoundError

KEY = Ed25519PrivateKey.from_private_bytes(b"\x04" * 32)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path, node_id="JPN-ISA", signing_key=KEY) as log:
        log.append_many(
            AuditEvent(
                time=1_700_000_000_000 + i * 1000,
                kind=LeafKind.DOCUMENT_LOOKUP,
                actor=f"officer-{i % 2}",
                peer="PHL-DFA",
                attrs={"result": "stolen"},
            )
            for i in range(12)
        )
        log.sign_checkpoint(now=1)
    return path


def test_verify_reports_ok_for_an_intact_log(db: Path) -> None:
    ok, text = commands.verify(db, KEY.public_key())
    assert ok and "OK" in text.splitlines()[0]


def test_verify_names_the_first_bad_entry(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM audit_leaves WHERE seq = 7")
    ok, text = commands.verify(db, KEY.public_key())
    assert not ok and "first bad entry: seq 7" in text


def test_show_table_has_header_and_one_row_per_entry(db: Path) -> None:
    lines = list(commands.show(db, LeafFilter(actor="officer-1")))
    assert lines[0].split()[:3] == ["seq", "time", "kind"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "3", "5", "7", "9", "11"]
    assert "2023-11-14T22:13:21.000Z" in lines[1]


def test_show_json_lines_are_the_stored_leaf_bytes(db: Path) -> None:
    lines = list(commands.show(db, LeafFilter(limit=2), as_json=True))
    assert [json.loads(x)["seq"] for x in lines] == [0, 1]
    with AuditLog.open(db) as log:
        assert lines[0].encode() == log.leaf(0).data


def test_prove_output_verifies_with_nothing_but_its_contents(db: Path) -> None:
    doc = json.loads(commands.prove(db, 5))
    leaf = base64.b64decode(doc["leaf"])
    root = base64.b64decode(doc["checkpoint"].split("\n")[2])
    proof = [base64.b64decode(h) for h in doc["proof"]]
    merkle.verify_inclusion(doc["seq"], doc["tree_size"], merkle.leaf_hash(leaf), proof, root)
    assert doc["record"]["seq"] == 5


def test_prove_unknown_seq_is_not_found(db: Path) -> None:
    with pytest.raises(NotFoundError):
        commands.prove(db, 99)


def test_export_then_verify_bundle(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    summary = commands.export(db, out, LeafFilter(actor="officer-0"))
    assert "6 entries" in summary
    ok, text = commands.verify_bundle(out, KEY.public_key())
    assert ok and "matches the trusted key" in text


def test_tampered_bundle_file_fails_verification(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    commands.export(db, out, LeafFilter())
    doc = json.loads(out.read_text())
    doc["leaves"][0], doc["leaves"][1] = doc["leaves"][1], doc["leaves"][0]
    doc["leaves"][0]["seq"], doc["leaves"][1]["seq"] = 0, 1
    out.write_text(json.dumps(doc))
    ok, text = commands.verify_bundle(out)
    assert not ok and "FAILED" in text


def test_commands_refuse_a_missing_log(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as exc:
        commands.verify(tmp_path / "none.db", KEY.public_key())
    assert exc.value.code == "audit_log_missing"


# --- `audit verify-proof`: the output of `audit prove`, checked offline ----------------------

NEW_KEY = Ed25519PrivateKey.from_private_bytes(b"\x06" * 32)


def _hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


def _verify_proof_cli(path: Path, *keys: Ed25519PrivateKey) -> int:
    from tests.node_helpers import run_cli

    return run_cli(["audit", "verify-proof", str(path), *(f"--key={_hex(k)}" for k in keys)])


def test_a_proof_verifies_offline_with_the_nodes_key(db: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "proof.json"
    out.write_text(commands.prove(db, 5))
    capsys.readouterr()

    assert _verify_proof_cli(out, KEY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"audit proof {out}: OK"
    assert lines[1] == "log: exchange-node.example/JPN-ISA, checkpoint size 12"
    assert lines[3].startswith("entry proved: 5  2023-11-14T22:13:25.000Z  document.lookup")


def test_a_proof_checked_against_another_key_fails(db: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "proof.json"
    out.write_text(commands.prove(db, 5))
    capsys.readouterr()

    assert _verify_proof_cli(out, NEW_KEY) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"audit proof {out}: FAILED"
    assert lines[1].startswith("  proof_key_untrusted: the checkpoint is not a checkpoint of")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda d: d["record"].update(actor="officer-9"), "proof_record_mismatch"),
        (lambda d: d.update(seq=4), "proof_not_in_tree"),
        (lambda d: d.update(tree_size=11), "proof_size_mismatch"),
        (lambda d: d["proof"].pop(), "proof_not_in_tree"),
        (lambda d: d.update(extra=1), "proof_malformed"),
    ],
)
def test_a_tampered_proof_fails(db: Path, tmp_path: Path, capsys, change, code) -> None:
    doc = json.loads(commands.prove(db, 5))
    change(doc)
    out = tmp_path / "proof.json"
    out.write_text(json.dumps(doc))
    capsys.readouterr()

    assert _verify_proof_cli(out, KEY) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"  {code}: ")


def test_a_proof_with_a_duplicate_key_fails(db: Path, tmp_path: Path, capsys) -> None:
    text = commands.prove(db, 5).replace('"seq": 5,', '"seq": 5, "seq": 4,', 1)
    out = tmp_path / "proof.json"
    out.write_text(text)
    capsys.readouterr()

    assert _verify_proof_cli(out, KEY) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "  proof_duplicate_key: the key 'seq' appears twice in one object"


# --- key rotation: the log's key and its recorded public key change together -----------------


@pytest.fixture
def rotated(db: Path) -> Path:
    """The log of ``db`` after the node rotated from KEY to NEW_KEY: checkpoint 12 is
    signed by KEY, checkpoint 13 by NEW_KEY."""
    with AuditLog(db, node_id="JPN-ISA", signing_key=KEY) as log:
        log.set_signing_key(NEW_KEY)
        log.append(AuditEvent(time=1_700_000_100_000, kind=LeafKind.KEY_ROTATED, actor="operator"))
        log.sign_checkpoint(now=2)
    return db


def test_the_recorded_public_key_follows_the_signing_key(rotated: Path) -> None:
    with AuditLog.open(rotated) as log:
        assert log.stored_public_key() == NEW_KEY.public_key().public_bytes_raw()


def test_export_after_a_rotation_names_the_new_key(rotated: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    commands.export(rotated, out, LeafFilter())
    ok, text = commands.verify_bundle(out, [NEW_KEY.public_key()])
    assert ok, text


def test_prove_names_the_key_that_signed_each_checkpoint(rotated: Path, tmp_path: Path) -> None:
    keys = [NEW_KEY.public_key().public_bytes_raw(), KEY.public_key().public_bytes_raw()]
    latest = json.loads(commands.prove(rotated, 5, None, keys))
    earlier = json.loads(commands.prove(rotated, 5, 12, keys))
    assert latest["verifier_key"] == verifier_key(
        "exchange-node.example/JPN-ISA", NEW_KEY.public_key()
    )
    assert earlier["verifier_key"] == verifier_key(
        "exchange-node.example/JPN-ISA", KEY.public_key()
    )
    out = tmp_path / "earlier.json"
    out.write_text(json.dumps(earlier))
    ok, text = commands.verify_proof(out, [NEW_KEY.public_key()])
    assert not ok and "proof_key_untrusted" in text
    ok, text = commands.verify_proof(out, [NEW_KEY.public_key(), KEY.public_key()])
    assert ok, text


def test_verify_spans_the_rotation(rotated: Path) -> None:
    ok, text = commands.verify(rotated, [NEW_KEY.public_key(), KEY.public_key()])
    assert ok, text
    ok, _ = commands.verify(rotated, [NEW_KEY.public_key()])
    assert not ok


# --- `audit verify-bundle --prior`: a log truncated or rewritten and re-signed ---------------


def _verify_bundle_cli(path: Path, *extra: str) -> int:
    from tests.node_helpers import run_cli

    return run_cli(["audit", "verify-bundle", str(path), f"--key={_hex(KEY)}", *extra])


def test_verify_bundle_proves_an_earlier_checkpoint_is_extended(
    db: Path, tmp_path: Path, capsys
) -> None:
    prior = tmp_path / "checkpoint-12.txt"
    with AuditLog(db, node_id="JPN-ISA", signing_key=KEY) as log:
        prior.write_text(log.latest_checkpoint().note)
        log.append(AuditEvent(time=1_700_000_100_000, kind=LeafKind.AUTH_FAILED, actor="x"))
        log.sign_checkpoint(now=2)
    out = tmp_path / "bundle.json"
    commands.export(db, out, LeafFilter(limit=1), consistency_from=[12])
    capsys.readouterr()

    assert _verify_bundle_cli(out, "--prior", str(prior)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"bundle {out}: OK"
    assert "earlier checkpoints given: 1" in lines


def test_verify_bundle_exposes_a_rewritten_log_re_signed_with_the_nodes_key(
    db: Path, tmp_path: Path, capsys
) -> None:
    prior = tmp_path / "checkpoint-12.txt"
    with AuditLog.open(db) as log:
        prior.write_text(log.latest_checkpoint().note)
    # The operator deletes the log and writes another, signed with the node's own key.
    db.unlink()
    with AuditLog(db, node_id="JPN-ISA", signing_key=KEY) as log:
        log.append_many(
            AuditEvent(time=1_700_000_000_000 + i, kind=LeafKind.AUTH_FAILED, actor="x")
            for i in range(14)
        )
        log.sign_checkpoint(now=3)
    out = tmp_path / "bundle.json"
    commands.export(db, out, LeafFilter(limit=1), consistency_from=[12])
    assert _verify_bundle_cli(out) == 0  # on its own, nothing shows
    capsys.readouterr()

    assert _verify_bundle_cli(out, "--prior", str(prior)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"bundle {out}: FAILED"
    assert lines[-1].startswith(
        "  prior[0] (size 12): prior_inconsistent: the log no longer extends this checkpoint"
        " (truncated or rewritten)"
    )


def test_verify_bundle_without_the_consistency_proof_says_how_to_get_it(
    db: Path, tmp_path: Path, capsys
) -> None:
    prior = tmp_path / "checkpoint-12.txt"
    with AuditLog(db, node_id="JPN-ISA", signing_key=KEY) as log:
        prior.write_text(log.latest_checkpoint().note)
        log.append(AuditEvent(time=1_700_000_100_000, kind=LeafKind.AUTH_FAILED, actor="x"))
        log.sign_checkpoint(now=2)
    out = tmp_path / "bundle.json"
    commands.export(db, out, LeafFilter(limit=1))
    capsys.readouterr()

    assert _verify_bundle_cli(out, "--prior", str(prior)) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  prior[0] (size 12): prior_unproved: the bundle carries no consistency proof from"
        " size 12; ask for one exported with --consistency-from 12"
    )
