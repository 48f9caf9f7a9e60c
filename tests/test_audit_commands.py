"""The functions behind `exchange-node audit verify|show|prove|export|verify-bundle`."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node.audit import commands, merkle
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
