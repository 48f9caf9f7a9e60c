"""Checkpoints in C2SP signed-note format: sign, parse, verify, reject malformed notes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.checkpoint import (
    Checkpoint,
    key_hash,
    origin_for,
    parse_checkpoint,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
)
from exchange_node.errors import ValidationError

ORIGIN = origin_for("JPN-ISA")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()
ROOT = hashlib.sha256(b"root").digest()


def _note(size: int = 42) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, ROOT), KEY, ORIGIN).note


def _code(note: str | bytes, key_name: str = ORIGIN, pub=PUB, **kw) -> str:
    with pytest.raises(ValidationError) as exc:
        verify_checkpoint(note, key_name, pub, **kw)
    return exc.value.code


def test_origin_names_the_node_audit_log() -> None:
    assert origin_for("PHL-DFA") == "exchange-node.example/PHL-DFA"


def test_signed_note_has_body_blank_line_and_em_dash_signature_line() -> None:
    lines = _note().split("\n")
    assert lines[:4] == [ORIGIN, "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith(f"\u2014 {ORIGIN} ")
    assert lines[5:] == [""]


def test_signature_blob_is_key_hash_then_ed25519_signature_over_body() -> None:
    note = _note()
    blob = base64.b64decode(note.split("\n")[4].rsplit(" ", 1)[1])
    pub = PUB.public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()[:4]
    assert blob[:4] == expected == key_hash(ORIGIN, PUB)
    body = note[: note.index("\n\n") + 1].encode()
    PUB.verify(blob[4:], body)  # raises if not the signature over the body
    assert len(blob) == 68


def test_verify_returns_the_checkpoint() -> None:
    signed = verify_checkpoint(_note(7), ORIGIN, PUB, origin=ORIGIN)
    assert (signed.checkpoint.origin, signed.tree_size, signed.root_hash) == (ORIGIN, 7, ROOT)


def test_parse_without_verifying_returns_checkpoint_and_signatures() -> None:
    cp, sigs = parse_checkpoint(_note(9))
    assert cp.tree_size == 9 and [s.key_name for s in sigs] == [ORIGIN]


def test_verifier_key_is_c2sp_vkey() -> None:
    name, kh, key = verifier_key(ORIGIN, PUB).split("+", 2)
    assert name == ORIGIN and bytes.fromhex(kh) == key_hash(ORIGIN, PUB)
    assert base64.b64decode(key)[0] == 1 and len(base64.b64decode(key)) == 33


def test_empty_tree_checkpoint_round_trips() -> None:
    assert verify_checkpoint(_note(0), ORIGIN, PUB).tree_size == 0


def test_extra_signature_by_unknown_key_is_ignored() -> None:
    other = Ed25519PrivateKey.generate()
    extra = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), other, "witness.example").note
    note = _note() + extra.split("\n\n")[1]
    assert verify_checkpoint(note, ORIGIN, PUB).tree_size == 42


def test_note_signed_by_another_key_is_rejected_as_missing_signature() -> None:
    assert _code(_note(), pub=Ed25519PrivateKey.generate().public_key()) == "note_signature_missing"


def test_altered_size_is_rejected_as_invalid_signature() -> None:
    assert _code(_note(42).replace("\n42\n", "\n43\n")) == "note_signature_invalid"


def test_wrong_origin_is_rejected() -> None:
    assert _code(_note(), origin=origin_for("PHL-DFA")) == "checkpoint_origin_mismatch"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda n: n[:-1], "no final newline"),
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.replace("\u2014", "-"), "hyphen instead of em dash"),
        (lambda n: n.replace("\n\n", "\n\r\n"), "control character"),
        (lambda n: n + "\n", "trailing blank line"),
        (lambda n: n.rsplit(" ", 1)[0] + " !!!!\n", "signature not base64"),
        (lambda n: n.rsplit(" ", 1)[0] + " AAAA\n", "signature too short"),
        (lambda n: "\n" + n, "empty first line"),
    ],
)
def test_malformed_note_is_rejected_with_note_malformed(mutate, why: str) -> None:
    assert _code(mutate(_note())) == "note_malformed", why


def test_non_utf8_note_is_rejected() -> None:
    assert _code(b"\xff" + _note().encode()) == "note_malformed"


def _signed_body(body: str) -> str:
    sig = KEY.sign(body.encode())
    blob = base64.b64encode(key_hash(ORIGIN, PUB) + sig).decode()
    return f"{body}\n\u2014 {ORIGIN} {blob}\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (f"{ORIGIN}\n42\n", "checkpoint"),
        (f"{ORIGIN}\n042\n{base64.b64encode(ROOT).decode()}\n", "tree_size"),
        (f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", "tree_size"),
        (f"{ORIGIN}\n42\n{base64.b64encode(ROOT[:31]).decode()}\n", "root_hash"),
        (f"{ORIGIN}\n42\n{base64.urlsafe_b64encode(b'?' * 32).decode()}\n", "root_hash"),
        (f" {ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n", "origin"),
    ],
)
def test_validly_signed_body_that_is_not_a_checkpoint_is_rejected(body: str, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        verify_checkpoint(_signed_body(body), ORIGIN, PUB)
    assert (exc.value.code, exc.value.field) == ("checkpoint_malformed", field)


def test_extension_lines_are_kept_when_parsing() -> None:
    body = f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\nextension one\n"
    assert verify_checkpoint(_signed_body(body), ORIGIN, PUB).checkpoint.extensions == (
        "extension one",
    )


def test_key_name_with_space_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), KEY, "bad name")
    assert exc.value.code == "note_key_name_invalid"
