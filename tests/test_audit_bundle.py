"""Offline bundles: export, verify without a database, reject tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.bundle import export_bundle, verify_bundle
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog, LeafFilter

KEY = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture
def bundle(tmp_path: Path) -> bytes:
    with AuditLog(tmp_path / "a.db", node_id="JPN-ISA", signing_key=KEY) as log:
        log.append_many(
            AuditEvent(
                time=1_700_000_000_000 + i,
                kind=LeafKind.DOCUMENT_LOOKUP if i % 3 == 0 else LeafKind.ENVELOPE_SENT,
                actor="officer-a",
                peer="PHL-DFA",
            )
            for i in range(50)
        )
        log.sign_checkpoint(now=1)
        log.append(AuditEvent(time=2, kind=LeafKind.AUTH_FAILED, actor="operator"))
        return export_bundle(log, log.iter_query(LeafFilter(kind="document.lookup")), PUB)


def _edit(data: bytes, change) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()


def test_exported_bundle_verifies_offline(bundle: bytes) -> None:
    report = verify_bundle(bundle)
    assert report.ok and report.problems == ()
    assert [r.seq for r in report.leaves] == list(range(0, 50, 3))
    assert report.tree_size == 50


def test_bundle_verifies_against_the_trusted_key(bundle: bytes) -> None:
    report = verify_bundle(bundle, KEY.public_key())
    assert report.ok and report.key_trusted


def test_bundle_from_another_key_is_rejected_when_a_key_is_trusted(bundle: bytes) -> None:
    report = verify_bundle(bundle, Ed25519PrivateKey.generate().public_key())
    assert not report.ok and not report.key_trusted


def test_bundle_leaves_out_entries_after_the_checkpoint(bundle: bytes) -> None:
    assert all(leaf["seq"] < 50 for leaf in json.loads(bundle)["leaves"])


def test_tampered_leaf_bytes_are_rejected(bundle: bytes) -> None:
    def change(doc: dict) -> None:
        data = base64.b64decode(doc["leaves"][2]["data"]).replace(b"officer-a", b"officer-b")
        doc["leaves"][2]["data"] = base64.b64encode(data).decode()

    report = verify_bundle(_edit(bundle, change))
    assert not report.ok
    assert len(report.leaves) == 16 and "seq 6" in report.problems[0]


def test_leaf_presented_under_another_seq_is_rejected(bundle: bytes) -> None:
    report = verify_bundle(_edit(bundle, lambda d: d["leaves"][1].update(seq=4)))
    assert not report.ok


def test_altered_checkpoint_is_rejected(bundle: bytes) -> None:
    report = verify_bundle(bundle.replace(b"\\n50\\n", b"\\n51\\n"))
    assert not report.ok and "note_signature_invalid" in report.problems[0]


def test_key_swapped_for_another_is_rejected(bundle: bytes) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    doc_change = lambda d: d.update(public_key=base64.b64encode(other).decode())  # noqa: E731
    assert not verify_bundle(_edit(bundle, doc_change)).ok


def test_malformed_bundle_is_reported_not_raised() -> None:
    report = verify_bundle(b"{not json")
    assert not report.ok and report.problems[0].startswith("bundle_malformed")
