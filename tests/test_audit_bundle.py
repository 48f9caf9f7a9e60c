"""Offline bundles: export, verify without a database, reject tampering."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.bundle import Bundle, export_bundle, verify_bundle, write_bundle
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


# --- the rules of docs/audit-format.md section 5 ------------------------------------------


def _manual_bundle(leaves: list[bytes], key: Ed25519PrivateKey = KEY) -> bytes:
    """A bundle of every leaf in ``leaves`` built by hand (leaves no AuditLog would write)."""
    from exchange_node.audit import merkle
    from exchange_node.audit.checkpoint import Checkpoint, sign_checkpoint, verifier_key

    origin = "exchange-node.example/JPN-ISA"
    hashes = [merkle.leaf_hash(d) for d in leaves]
    source = merkle.list_hash_source(hashes)
    cp = sign_checkpoint(
        Checkpoint(origin, len(leaves), merkle.root_from_leaf_hashes(hashes)), key, origin
    )
    pub = key.public_key()
    doc = {
        "format": "exchange-node-audit-bundle/1",
        "origin": origin,
        "public_key": base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode(),
        "verifier_key": verifier_key(origin, pub),
        "checkpoint": cp.note,
        "leaves": [
            {
                "seq": i,
                "data": base64.b64encode(d).decode(),
                "proof": [
                    base64.b64encode(h).decode()
                    for h in merkle.inclusion_proof(i, len(leaves), source)
                ],
            }
            for i, d in enumerate(leaves)
        ],
    }
    return json.dumps(doc).encode()


def _leaf(seq: int, kind: str) -> bytes:
    return json.dumps(
        {"actor": "operator", "attrs": {}, "kind": kind, "message_id": "", "peer": "",
         "reason": "", "seq": seq, "subject_hash": "", "time": 1, "v": 1},
        separators=(",", ":"), sort_keys=True,
    ).encode()  # fmt: skip


def test_an_entry_of_an_unknown_kind_is_accepted_and_reported() -> None:
    data = _manual_bundle([_leaf(0, "auth.failed"), _leaf(1, "mirror.synced")])
    report = verify_bundle(data, KEY.public_key())
    assert report.ok, report.problems
    assert [r.kind for r in report.leaves] == ["auth.failed", "mirror.synced"]
    assert len(report.notices) == 1 and "kind_unknown" in report.notices[0]
    assert "'mirror.synced'" in report.notices[0]


def test_a_kind_not_shaped_like_one_is_still_refused() -> None:
    report = verify_bundle(_manual_bundle([_leaf(0, "Not A Kind")]))
    assert not report.ok and "proved but unreadable" in report.problems[0]


def test_a_bundle_with_a_duplicate_key_is_refused(bundle: bytes) -> None:
    doc = json.loads(bundle)
    other = json.dumps(doc["leaves"][:1])
    text = json.dumps(doc)
    # Two "leaves" keys: one reader sees 17 entries, another sees one.
    forged = text[:-1] + f', "leaves": {other}}}'
    report = verify_bundle(forged.encode())
    assert not report.ok
    assert report.problems == (
        "bundle_duplicate_key: the key 'leaves' appears twice in one object; a bundle that"
        " two readers could read differently is refused",
    )


def test_a_duplicate_key_inside_an_entry_is_refused(bundle: bytes) -> None:
    text = bundle.decode().replace('"seq": 3,', '"seq": 3, "seq": 3,', 1)
    report = verify_bundle(text.encode())
    assert not report.ok and report.problems[0].startswith("bundle_duplicate_key: the key 'seq'")


def test_entries_out_of_seq_order_are_refused(bundle: bytes) -> None:
    def swap(doc: dict) -> None:
        doc["leaves"][0], doc["leaves"][1] = doc["leaves"][1], doc["leaves"][0]

    report = verify_bundle(_edit(bundle, swap))
    assert not report.ok
    assert any("seq 0" in p and "leaf_out_of_order" in p for p in report.problems)


def test_an_entry_listed_twice_is_refused(bundle: bytes) -> None:
    report = verify_bundle(_edit(bundle, lambda d: d["leaves"].insert(1, d["leaves"][0])))
    assert not report.ok and "leaf_duplicate" in report.problems[0]


# --- earlier checkpoints: truncated or rewritten logs, re-signed ----------------------------


def _log(path: Path, events: int, actor: str = "officer-a") -> AuditLog:
    log = AuditLog(path, node_id="JPN-ISA", signing_key=KEY)
    log.append_many(
        AuditEvent(time=1_700_000_000_000 + i, kind=LeafKind.AUTH_FAILED, actor=actor)
        for i in range(events)
    )
    return log


def test_a_bundle_proves_it_extends_an_earlier_checkpoint(tmp_path: Path) -> None:
    with _log(tmp_path / "a.db", 30) as log:
        prior = log.sign_checkpoint(now=1).note
        log.append_many(AuditEvent(time=i, kind=LeafKind.AUTH_FAILED, actor="x") for i in range(9))
        log.sign_checkpoint(now=2)
        data = export_bundle(log, log.iter_query(LeafFilter(limit=2)), PUB, consistency_from=[30])
    report = verify_bundle(data, KEY.public_key(), [prior])
    assert report.ok, report.problems
    assert report.tree_size == 39 and report.priors_checked == 1


def test_a_rewritten_log_re_signed_with_the_nodes_key_fails_against_an_earlier_checkpoint(
    tmp_path: Path,
) -> None:
    with _log(tmp_path / "a.db", 30) as log:
        prior = log.sign_checkpoint(now=1).note
    # The operator rebuilds the log with other entries and signs it with the same key.
    with _log(tmp_path / "b.db", 40, actor="officer-b") as forged:
        forged.sign_checkpoint(now=2)
        data = export_bundle(forged, forged.iter_query(LeafFilter()), PUB, consistency_from=[30])
    assert verify_bundle(data, KEY.public_key()).ok  # alone, it looks fine
    report = verify_bundle(data, KEY.public_key(), [prior])
    assert not report.ok
    assert report.problems[0].startswith("prior[0] (size 30): prior_inconsistent:")


def test_a_truncated_log_fails_against_an_earlier_checkpoint(tmp_path: Path) -> None:
    with _log(tmp_path / "a.db", 30) as log:
        prior = log.sign_checkpoint(now=1).note
    with _log(tmp_path / "b.db", 20) as truncated:
        truncated.sign_checkpoint(now=2)
        data = export_bundle(truncated, truncated.iter_query(LeafFilter()), PUB)
    report = verify_bundle(data, KEY.public_key(), [prior])
    assert not report.ok and "prior_newer" in report.problems[0]


def test_an_earlier_checkpoint_the_bundle_does_not_prove_fails(tmp_path: Path) -> None:
    with _log(tmp_path / "a.db", 30) as log:
        prior = log.sign_checkpoint(now=1).note
        log.append(AuditEvent(time=5, kind=LeafKind.AUTH_FAILED, actor="x"))
        log.sign_checkpoint(now=2)
        data = export_bundle(log, log.iter_query(LeafFilter(limit=1)), PUB)
    report = verify_bundle(data, KEY.public_key(), [prior])
    assert not report.ok
    assert "prior_unproved" in report.problems[0] and "--consistency-from 30" in report.problems[0]


def test_an_earlier_checkpoint_signed_before_a_rotation_needs_both_keys(tmp_path: Path) -> None:
    new_key = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
    new_pub = new_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with _log(tmp_path / "a.db", 30) as log:
        prior = log.sign_checkpoint(now=1).note
        log.set_signing_key(new_key)
        log.append(AuditEvent(time=5, kind=LeafKind.KEY_ROTATED, actor="operator"))
        log.sign_checkpoint(now=2)
        data = export_bundle(log, log.iter_query(LeafFilter()), [new_pub, PUB], [30])
    assert json.loads(data)["public_key"] == base64.b64encode(new_pub).decode()
    only_new = verify_bundle(data, new_key.public_key(), [prior])
    assert not only_new.ok and "prior_signature_unknown" in only_new.problems[0]
    both = verify_bundle(data, [new_key.public_key(), KEY.public_key()], [prior])
    assert both.ok, both.problems


def test_an_earlier_checkpoint_of_another_log_is_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "p.db", node_id="PHL-DFA", signing_key=KEY) as other:
        other.append(AuditEvent(time=1, kind=LeafKind.AUTH_FAILED, actor="x"))
        prior = other.sign_checkpoint(now=1).note
    with _log(tmp_path / "a.db", 3) as log:
        log.sign_checkpoint(now=2)
        data = export_bundle(log, log.iter_query(LeafFilter()), PUB)
    report = verify_bundle(data, KEY.public_key(), [prior, "not a note"])
    assert not report.ok
    assert report.problems[0] == (
        "prior[0]: prior_origin_mismatch: a checkpoint of 'exchange-node.example/PHL-DFA', not"
        " of 'exchange-node.example/JPN-ISA'"
    )
    assert report.problems[1].startswith("prior[1]: prior_malformed: ")


def test_consistency_entries_out_of_range_or_repeated_are_refused(tmp_path: Path) -> None:
    with _log(tmp_path / "a.db", 5) as log:
        log.sign_checkpoint(now=1)
        data = export_bundle(log, log.iter_query(LeafFilter()), PUB, consistency_from=[2])

    def change(doc: dict) -> None:
        doc["consistency"] += [doc["consistency"][0], {"old_size": 9, "proof": []}]

    report = verify_bundle(_edit(data, change))
    assert not report.ok
    assert [p.split(": ")[1] for p in report.problems] == [
        "consistency_duplicate",
        "consistency_size_invalid",
    ]


@pytest.mark.parametrize("picked", [0, 1, 3_001])
def test_a_bundle_written_a_leaf_at_a_time_is_the_whole_bundle_formatted_at_once(
    tmp_path: Path, picked: int
) -> None:
    """The streamed bytes equal msgspec's formatting of the decoded bundle, for no leaf,
    one, and past a progress step; consistency proofs come after the leaves."""
    told: list[int] = []
    with _log(tmp_path / "a.db", 3_010) as log:
        prior = log.sign_checkpoint(now=1).note
        log.append_many(AuditEvent(time=i, kind=LeafKind.AUTH_FAILED, actor="x") for i in range(5))
        log.sign_checkpoint(now=2)
        out = io.BytesIO()
        leaves = log.iter_query(LeafFilter(limit=picked)) if picked else iter(())
        assert write_bundle(out, log, leaves, PUB, [3_010], told.append) == picked
    data = out.getvalue()
    whole = msgspec.json.decode(data, type=Bundle)
    assert data == msgspec.json.format(msgspec.json.encode(whole), indent=1) + b"\n"
    assert [leaf.seq for leaf in whole.leaves] == list(range(picked))
    assert told == [n for n in range(1000, picked + 1, 1000)]
    report = verify_bundle(data, KEY.public_key(), [prior])
    assert report.ok and len(report.leaves) == picked and report.priors_checked == 1
