"""C2SP tlog-witness and tlog-cosignature (cosignature/v1), without a server.

The cosignatures this code makes are checked by a verifier written here from the
specification's text alone (c2sp.org/tlog-cosignature: key ID, timestamped signature,
signed message), and the signed-note key IDs and Ed25519 signatures against the Go
reference implementation's published vector (golang.org/x/mod/sumdb/note). Every
status of add-checkpoint is decided as the specification orders it.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import Checkpoint, key_hash, sign_checkpoint, split_note
from exchange_node.audit.cosignature import (
    cosign,
    parse_vkey,
    verify_cosignatures,
    witness_vkey,
)
from exchange_node.audit.tlog_witness import (
    LogState,
    WitnessRefusal,
    add_checkpoint,
    encode_request,
    parse_cosignatures,
    parse_request,
    parse_size_body,
)
from exchange_node.errors import ValidationError

LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
ORIGIN = "exchange-node.example/JPN-ISA"
WITNESS = "exchange-node.example/PHL-DFA/witness"


def raw(key) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def tree(n: int) -> tuple[list[bytes], merkle.SubtreeHash]:
    hashes = [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(n)]
    return hashes, merkle.list_hash_source(hashes)


def checkpoint(n: int, key: Ed25519PrivateKey = LOG_KEY, origin: str = ORIGIN) -> str:
    hashes, _ = tree(n)
    root = merkle.root_from_leaf_hashes(hashes) if n else merkle.EMPTY_ROOT
    return sign_checkpoint(Checkpoint(origin, n, root), key, origin).note


def root(n: int) -> bytes:
    return merkle.root_from_leaf_hashes(tree(n)[0]) if n else merkle.EMPTY_ROOT


def proof(m: int, n: int) -> list[bytes]:
    return merkle.consistency_proof(m, n, tree(n)[1])


# --- an independent cosignature/v1 verifier, from the text of c2sp.org/tlog-cosignature ---


def spec_verify(note: str, name: str, public: bytes) -> int:
    """Return the timestamp of the valid cosignature/v1 by (name, public) in ``note``."""
    # "SHA-256(<name> || "\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]"
    want_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    body, sigs = note.split("\n\n", 1)[0] + "\n", note.split("\n\n", 1)[1]
    for line in sigs.splitlines():
        assert line.startswith("\u2014 ")
        key_name, b64 = line[2:].split(" ")
        blob = base64.b64decode(b64)
        if key_name != name or blob[:4] != want_id:
            continue
        # timestamped_signature: u64 timestamp (big-endian), then the 64-byte signature.
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        signature = blob[12:]
        assert len(signature) == 64
        # "cosignature/v1" line, "time <t>" line, then the whole checkpoint body.
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return timestamp
    raise AssertionError("no cosignature by that key")


def test_a_cosignature_verifies_under_an_implementation_written_from_the_spec() -> None:
    note = checkpoint(7)
    body = split_note(note)[0]
    line = cosign(body, WITNESS, WITNESS_KEY, 1_767_225_600)
    assert spec_verify(note + line, WITNESS, raw(WITNESS_KEY.public_key())) == 1_767_225_600
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 64 and line.endswith("\n")


def test_cosignatures_are_found_by_name_and_key_id_and_a_forged_one_is_refused() -> None:
    note = checkpoint(7)
    body = split_note(note)[0]
    vkey = witness_vkey(WITNESS, WITNESS_KEY.public_key())
    other = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)
    lines = cosign(body, WITNESS, WITNESS_KEY, 5) + cosign(body, "other.example/w", other, 6)
    [found] = verify_cosignatures(note + lines, [vkey])
    assert (found.witness, found.timestamp) == (vkey, 5)
    assert found.line == lines.splitlines(keepends=True)[0]
    # A line with the witness's name and key ID whose signature fails: the note is bad.
    forged = cosign(body.replace(b"\n7\n", b"\n8\n"), WITNESS, WITNESS_KEY, 5)
    with pytest.raises(ValidationError) as exc:
        verify_cosignatures(note + forged, [vkey])
    assert exc.value.code == "cosignature_invalid"
    # The log's own signature is not a cosignature (type 0x01, not 0x04).
    assert verify_cosignatures(note, [vkey]) == []


def test_verifier_keys_round_trip_and_carry_their_signature_type() -> None:
    vkey = witness_vkey(WITNESS, WITNESS_KEY.public_key())
    text = vkey.encode()
    name, hex_id, b64 = text.split("+", 2)
    assert name == WITNESS and base64.b64decode(b64)[0] == 0x04
    assert (
        bytes.fromhex(hex_id)
        == hashlib.sha256(WITNESS.encode() + b"\n\x04" + raw(WITNESS_KEY.public_key())).digest()[:4]
    )
    assert parse_vkey(text) == vkey
    with pytest.raises(ValidationError):
        parse_vkey(text, alg=b"\x01")
    with pytest.raises(ValidationError):
        parse_vkey(f"{name}+00000000+{b64}")  # a key ID that is not the key's


def test_the_go_reference_note_vector_key_id_and_signature() -> None:
    """golang.org/x/mod/sumdb/note's example key and note, reproduced byte for byte."""
    vkey = parse_vkey("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert raw(key.public_key()) == vkey.public
    assert key_hash("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    text = (
        b"If you think cryptography is the answer to your problem,\n"
        b"then you don't know what your problem is.\n"
    )
    blob = base64.b64encode(key_hash("PeterNeumann", key.public_key()) + key.sign(text))
    assert blob.decode() == (
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    )


def test_the_example_cosignature_of_the_spec_carries_its_timestamp() -> None:
    """c2sp.org/tlog-cosignature's example line: key ID, then the time of its message."""
    line = (
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0"
        "xUe+mbIUBkBIfZ+qnA=="
    )
    blob = base64.b64decode(line)
    assert len(blob) == 76 and struct.unpack(">Q", blob[4:12])[0] == 1679315147


# --- add-checkpoint: the request, and every answer in the specification's order ------------


def keys_for(origin: str):
    return [LOG_KEY.public_key()] if origin == ORIGIN else None


def sign(body: bytes) -> str:
    return cosign(body, WITNESS, WITNESS_KEY, 1_767_225_600)


def decide(body: bytes, held: LogState | None):
    return add_checkpoint(parse_request(body), keys_for, lambda _o: held, sign)


def refusal(body: bytes, held: LogState | None) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as exc:
        decide(body, held)
    return exc.value


def test_the_request_body_is_old_size_proof_lines_a_blank_line_and_the_checkpoint() -> None:
    body = encode_request(3, proof(3, 7), checkpoint(7))
    lines = body.decode().split("\n")
    assert lines[0] == "old 3" and lines[len(proof(3, 7)) + 1] == ""
    parsed = parse_request(body)
    assert (parsed.old_size, list(parsed.proof)) == (3, proof(3, 7))
    assert parsed.note == checkpoint(7).encode()


def test_a_first_checkpoint_and_a_consistent_next_one_are_cosigned() -> None:
    first = decide(encode_request(0, [], checkpoint(3)), None)
    assert first.checkpoint.tree_size == 3 and first.old_size == 0
    assert spec_verify(checkpoint(3) + first.cosignature, WITNESS, raw(WITNESS_KEY.public_key()))
    nxt = decide(encode_request(3, proof(3, 7), checkpoint(7)), LogState(3, root(3)))
    assert nxt.checkpoint.tree_size == 7
    same = decide(encode_request(7, [], checkpoint(7)), LogState(7, root(7)))
    assert same.checkpoint.root_hash == root(7)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"old 3\n", "request_malformed"),
        (b"new 3\n\n" + checkpoint(3).encode(), "request_malformed"),
        (b"old 03\n\n" + checkpoint(3).encode(), "request_malformed"),
        (b"old 3\nnot-a-hash\n\n" + checkpoint(3).encode(), "request_malformed"),
        (b"old 1\n" + b"".join([base64.b64encode(b"x" * 32) + b"\n"] * 64) + b"\n", "request_malformed"),
        (b"old 0\n\nnot a checkpoint\n", "checkpoint_malformed"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_400(body: bytes, code: str) -> None:
    r = refusal(body, None)
    assert (r.status, r.code) == (400, code)


def test_an_unknown_log_is_404() -> None:
    other = checkpoint(3, origin="example.com/behind-the-sofa")
    assert refusal(encode_request(0, [], other), None).status == 404


def test_no_trusted_signature_or_a_bad_one_is_403() -> None:
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x44" * 32)
    r = refusal(encode_request(0, [], checkpoint(3, key=stranger)), None)
    assert (r.status, r.code) == (403, "signature_missing")
    tampered = checkpoint(3).replace(
        base64.b64encode(root(3)).decode(), base64.b64encode(root(2)).decode()
    )
    r = refusal(encode_request(0, [], tampered), None)
    assert (r.status, r.code) == (403, "signature_invalid")


def test_an_old_size_beyond_the_checkpoint_is_400() -> None:
    r = refusal(encode_request(9, [], checkpoint(3)), LogState(9, root(9)))
    assert (r.status, r.code, r.authentic) == (400, "old_size_too_large", True)


def test_an_old_size_other_than_the_one_cosigned_is_409_with_that_size() -> None:
    r = refusal(encode_request(0, [], checkpoint(7)), LogState(3, root(3)))
    assert (r.status, r.latest_size) == (409, 3)
    r = refusal(encode_request(2, proof(2, 7), checkpoint(7)), None)
    assert (r.status, r.latest_size) == (409, 0)


def test_inconsistent_checkpoints_are_422() -> None:
    # A proof that does not lead from the held root to the new one.
    r = refusal(encode_request(3, proof(2, 7), checkpoint(7)), LogState(3, root(3)))
    assert (r.status, r.code) == (422, "consistency_proof_invalid")
    # The held tree was another one (a fork): no proof verifies.
    r = refusal(encode_request(3, proof(3, 7), checkpoint(7)), LogState(3, root(2)))
    assert (r.status, r.code) == (422, "consistency_proof_invalid")
    # Same size, another root.
    r = refusal(encode_request(7, [], checkpoint(7)), LogState(7, root(6)))
    assert (r.status, r.code) == (422, "root_mismatch")
    # A proof from size 0.
    r = refusal(encode_request(0, proof(1, 3), checkpoint(3)), None)
    assert (r.status, r.code) == (422, "proof_unexpected")


def test_a_size_zero_checkpoint_must_have_the_empty_root() -> None:
    assert decide(encode_request(0, [], checkpoint(0)), None).checkpoint.tree_size == 0
    bad = sign_checkpoint(Checkpoint(ORIGIN, 0, root(1)), LOG_KEY, ORIGIN).note
    assert refusal(encode_request(0, [], bad), None).status == 422


def test_answers_parse_as_the_log_reads_them() -> None:
    assert parse_size_body(b"42\n") == 42
    for bad in (b"42", b"042\n", b"x\n"):
        with pytest.raises(ValueError):
            parse_size_body(bad)
    line = sign(split_note(checkpoint(3))[0])
    assert parse_cosignatures(line.encode()) == [line]
    with pytest.raises(ValueError):
        parse_cosignatures(b"hello\n")
