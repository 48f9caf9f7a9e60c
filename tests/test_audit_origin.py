"""The log's origin is ``exchange-node.example/<node id>`` (a tlog-checkpoint schema-less
URL). A log written by a release that named it ``exchange-node/<node id>/audit`` keeps
every checkpoint it signed then, valid as it is; opened with its signing key it signs
under the new origin from then on, recorded by one leaf, and everything that checks a
checkpoint (verify, bundles, priors, proofs, peers witnessing it) spans the change."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.bundle import export_bundle, verify_bundle
from exchange_node.audit.checkpoint import (
    legacy_origin_for,
    node_of_origin,
    origin_for,
    parse_checkpoint,
    same_log,
)
from exchange_node.audit.commands import prove, verify_proof
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog

NODE = "JPN-ISA"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def event(i: int) -> AuditEvent:
    return AuditEvent(time=1_700_000_000_000 + i, kind=LeafKind.CONFIG_LOADED, actor="operator")


def legacy_log(path: Path, monkeypatch: pytest.MonkeyPatch, leaves: int = 5) -> str:
    """A log as the release before the change wrote it: legacy origin, one checkpoint."""
    with monkeypatch.context() as m:
        m.setattr("exchange_node.audit.log.origin_for", legacy_origin_for)
        with AuditLog(path, node_id=NODE, signing_key=KEY) as log:
            log.append_many(event(i) for i in range(leaves))
            return log.sign_checkpoint(1_700_000_100_000).note


def test_the_origin_is_a_schema_less_url_naming_the_node() -> None:
    assert origin_for(NODE) == "exchange-node.example/JPN-ISA"
    assert node_of_origin("exchange-node.example/JPN-ISA") == NODE
    assert node_of_origin("exchange-node/JPN-ISA/audit") == NODE
    assert node_of_origin("example.com/behind-the-sofa") is None
    assert same_log("exchange-node/JPN-ISA/audit", "exchange-node.example/JPN-ISA")
    assert not same_log("exchange-node/PHL-DFA/audit", "exchange-node.example/JPN-ISA")


def test_a_legacy_log_changes_origin_once_with_a_leaf_and_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "node.sqlite"
    old_note = legacy_log(db, monkeypatch)
    assert parse_checkpoint(old_note)[0].origin == "exchange-node/JPN-ISA/audit"

    with AuditLog(db, node_id=NODE) as reader:  # no signing key: read as it is
        assert reader.origin == legacy_origin_for(NODE) and reader.size == 5

    with AuditLog(db, node_id=NODE, signing_key=KEY) as log:
        assert log.origin == origin_for(NODE)
        [changed] = log.query(kind=LeafKind.AUDIT_ORIGIN_CHANGED)
        assert changed.seq == 5
        assert changed.record.attrs == {
            "old_origin": "exchange-node/JPN-ISA/audit",
            "new_origin": "exchange-node.example/JPN-ISA",
        }
        new = log.sign_checkpoint(1_700_000_200_000)
        assert parse_checkpoint(new.note)[0].origin == origin_for(NODE)
        report = log.verify(KEY.public_key())
        assert report.ok, report.problems
        assert report.checkpoints_checked == 2
        # The earlier checkpoint is still the one it was, and proofs to it still work.
        assert [c.note for c in log.checkpoints()][0] == old_note
        assert log.inclusion_proof(2, 5).checkpoint.note == old_note
        bundle = export_bundle(log, log.query(), PUB, consistency_from=[5])

    with AuditLog(db, node_id=NODE, signing_key=KEY) as log:  # reopening changes nothing
        assert len(log.query(kind=LeafKind.AUDIT_ORIGIN_CHANGED)) == 1

    # An auditor who kept the legacy checkpoint: the new bundle extends it.
    report = verify_bundle(bundle, KEY.public_key(), priors=[old_note])
    assert report.ok, report.problems
    assert report.origin == origin_for(NODE) and report.priors_checked == 1


def test_a_proof_against_a_legacy_checkpoint_names_its_origin_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "node.sqlite"
    legacy_log(db, monkeypatch)
    with AuditLog(db, node_id=NODE, signing_key=KEY) as log:
        log.sign_checkpoint(1_700_000_200_000)
    path = tmp_path / "proof.json"
    path.write_text(prove(db, 1, tree_size=5, public_keys=[PUB]))
    ok, report = verify_proof(path, [PUB])
    assert ok, report
    assert "exchange-node/JPN-ISA/audit" in path.read_text()


def test_a_peer_holding_a_legacy_checkpoint_accepts_the_renamed_log_as_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "jpn.sqlite"
    old_note = legacy_log(theirs, monkeypatch)
    with AuditLog(theirs, node_id=NODE, signing_key=KEY) as log:
        log.append_many(event(i) for i in range(3))
        new_note = log.sign_checkpoint(1_700_000_200_000).note
        proof = log.consistency_hashes

        witness_key = Ed25519PrivateKey.generate()
        with AuditLog(tmp_path / "phl.sqlite", node_id="PHL-DFA", signing_key=witness_key) as phl:
            first = phl.record_peer_checkpoint(NODE, old_note, KEY.public_key(), proof, now=1)
            second = phl.record_peer_checkpoint(NODE, new_note, KEY.public_key(), proof, now=2)
    assert first.status == "first"
    assert second.status == "consistent" and (second.old_size, second.new_size) == (5, 9)


def test_the_worked_example_of_the_format_verifies_under_the_new_origin() -> None:
    """docs/audit-format.md section 8: its bundle, checked by its own verifier and ours."""
    import base64
    import re

    text = (Path(__file__).parent.parent / "docs" / "audit-format.md").read_text()
    section = text[text.index("## 8. Example") : text.index("## 9.")]
    bundle = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    program = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(program, namespace)  # noqa: S102 - the document's own verifier
    public = base64.b64decode("O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=")
    doc = namespace["load"](bundle.encode())
    assert doc["origin"] == "exchange-node.example/JPN-ISA"
    assert namespace["verify_bundle"](doc, public)[0] == 3
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    report = verify_bundle(bundle.encode(), Ed25519PublicKey.from_public_bytes(public))
    assert report.ok, report.problems
