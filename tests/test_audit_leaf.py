"""Audit leaf records: canonical bytes, strict decoding, identifiers only."""

from __future__ import annotations

import json

import pytest

from exchange_node.audit.leaf import (
    KINDS,
    AuditEvent,
    LeafKind,
    decode_leaf,
    encode_leaf,
    keyed_hash,
)
from exchange_node.errors import ValidationError

EVENT = AuditEvent(
    time=1_700_000_000_000,
    kind=LeafKind.DOCUMENT_LOOKUP,
    actor="border-system-1",
    peer="PHL-DFA",
    message_id="0a1b2c3d",
    reason="",
    subject_hash=keyed_hash(b"k" * 32, "JPN:P:TK1234567"),
    attrs={"result": "stolen", "doc_type": "P"},
)


def test_all_documented_kinds_are_defined() -> None:
    documented = {
        "envelope.sent", "envelope.received", "envelope.rejected", "receipt.sent",
        "receipt.received", "document.lookup", "case.transition", "case.accessed", "peer.added",
        "peer.removed", "peer.paused", "peer.resumed", "peer.catchup", "key.rotated", "key.revoked",
        "token.created", "token.revoked", "auth.failed", "config.loaded",
        "checkpoint.inconsistent", "notice.submitted", "request.refused",
        "audit.origin_changed", "checkpoint.cosigned", "checkpoint.refused", "witness.cosigned",
        "record.purged", "kek.rotated", "kek.destroyed", "record.hold",
        "record.reviewed", "subject.report",
        "dead_letter.retried", "dead_letter.acknowledged", "peer.pinged", "console.signed_in",
        "console.signed_out",
        "backup.made", "backup.restored", "keys.encrypted",
    }  # fmt: skip
    assert documented == KINDS


def test_encoding_is_compact_json_with_sorted_keys() -> None:
    data = encode_leaf(5, EVENT)
    obj = json.loads(data)
    assert list(obj) == sorted(obj) and list(obj["attrs"]) == sorted(obj["attrs"])
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj["seq"] == 5 and obj["v"] == 1 and obj["kind"] == "document.lookup"


def test_decode_returns_the_encoded_record() -> None:
    rec = decode_leaf(encode_leaf(5, EVENT))
    assert (rec.seq, rec.time, rec.kind, rec.peer, rec.attrs) == (
        5, EVENT.time, "document.lookup", "PHL-DFA", {"doc_type": "P", "result": "stolen"},
    )  # fmt: skip


def test_decode_rejects_non_canonical_bytes() -> None:
    obj = json.loads(encode_leaf(5, EVENT))
    spaced = json.dumps(obj, sort_keys=True).encode()
    with pytest.raises(ValidationError) as exc:
        decode_leaf(spaced)
    assert exc.value.code == "audit_leaf_invalid"


def test_decode_rejects_unknown_field() -> None:
    obj = json.loads(encode_leaf(5, EVENT)) | {"name": "Maria"}
    with pytest.raises(ValidationError):
        decode_leaf(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def test_decode_rejects_one_flipped_byte() -> None:
    data = bytearray(encode_leaf(5, EVENT))
    data[data.index(b"PHL")] = ord(" ")
    with pytest.raises(ValidationError):
        decode_leaf(bytes(data))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        AuditEvent(time=1, kind="document.printed", actor="x")
    assert exc.value.field == "kind"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "Maria Santos"),
        ("actor", ""),
        ("peer", "PHL DFA"),
        ("message_id", "XYZ"),
        ("reason", "Bad Reason"),
        ("subject_hash", "TK1234567"),
        ("attrs", {"name": "Maria Santos"}),
        ("attrs", {"Bad": "x"}),
        ("attrs", {f"k{i}": "v" for i in range(17)}),
        ("time", -1),
    ],
)
def test_free_text_and_malformed_identifiers_are_refused(field: str, value: object) -> None:
    fields = {"time": 1, "kind": "auth.failed", "actor": "operator", field: value}
    with pytest.raises(ValidationError) as exc:
        AuditEvent(**fields)
    assert exc.value.code == "audit_leaf_invalid"


def test_keyed_hash_is_hmac_sha256_hex() -> None:
    # RFC 4231 test case 2 (key "Jefe") is too short for our minimum; use case 1's shape.
    import hashlib
    import hmac

    key = b"\x0b" * 20
    assert keyed_hash(key, "Hi There") == hmac.new(key, b"Hi There", hashlib.sha256).hexdigest()
    assert keyed_hash(key, "Hi There") == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


def test_keyed_hash_refuses_short_key() -> None:
    with pytest.raises(ValidationError):
        keyed_hash(b"short", "x")
