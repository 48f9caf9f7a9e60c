"""The published protocol v1 test vectors (docs/test-vectors/) hold for this implementation.

Every vector is recomputed or checked against ``exchange_node.protocol``; the sealed
envelopes are also opened by a small independent HPKE (RFC 9180) and X-Wing
implementation written from docs/protocol.md, so the spec, the vectors and the code
agree with each other. Finally, running the generator again reproduces the committed
files byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange_node.pb.exchange.v1 import card_pb2, envelope_pb2, types_pb2
from exchange_node.protocol import framing
from exchange_node.protocol.cards import card_fingerprint, verify_card, verify_revocation
from exchange_node.protocol.envelope import (
    Freshness,
    hpke_info,
    open_envelope,
    signature_input,
    verify_evidence,
)
from exchange_node.protocol.errors import OpenError, wire_reason
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.protocol.keys import EncryptionKey, SigningKey, Suite, key_id
from exchange_node.protocol.receipts import receipt_signature_input, verify_receipt

VECTORS = Path(__file__).resolve().parents[1] / "docs" / "test-vectors"


def _load_generator():
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


KEYS = _load("keys.json")
FRAMES = _load("frame.json")
CARDS = _load("cards.json")
SIGNATURES = _load("signatures.json")
SEALED = _load("sealed-envelopes.json")
RECEIPT = _load("receipt.json")
FAILURES = _load("open-failures.json")

x = bytes.fromhex


def _key(name: str) -> dict:
    return next(v for v in KEYS["vectors"] if v["name"] == name)


def _card(node_id: str, serial: int = 1) -> dict:
    return next(v for v in CARDS["vectors"] if v["node_id"] == node_id and v["serial"] == serial)


def _identity(node_id: str) -> LocalIdentity:
    """The node's private keys, rebuilt from the published seeds alone."""
    signing = _key(f"{node_id}/signing")
    enc = next(v for v in KEYS["vectors"] if v["name"].startswith(f"{node_id}/encryption/"))
    if enc["algorithm"] == types_pb2.KEY_ALGORITHM_MLKEM768_X25519:
        key = EncryptionKey.from_seed(Suite.MLKEM768_X25519, x(enc["seed_expanded"]))
    else:
        key = EncryptionKey.from_seed(Suite.X25519, x(enc["seed"]))
    return LocalIdentity(node_id, SigningKey.from_seed(x(signing["seed"])), (key,))


def _ids(vectors: list[dict]) -> list[str]:
    return [v["name"] for v in vectors]


# --- frame and key ids -------------------------------------------------------------------


@pytest.mark.parametrize("vector", FRAMES["vectors"], ids=_ids(FRAMES["vectors"]))
def test_frame_output_matches_vector(vector):
    label = vector["label"].encode("ascii")
    assert label.hex() == vector["label_hex"]
    assert framing.frame(label, *(x(p) for p in vector["parts"])) == x(vector["framed"])


def test_frame_vectors_cover_every_label_of_the_framing_module():
    labels = {v for k, v in vars(framing).items() if k.startswith("LABEL_")}
    assert {v["label"].encode() for v in FRAMES["vectors"]} == labels


@pytest.mark.parametrize("vector", KEYS["vectors"], ids=_ids(KEYS["vectors"]))
def test_key_seed_gives_published_public_key_and_key_id(vector):
    seed = x(vector["seed"])
    generator_prefix = b"exchange-node/v1/test-vectors/"
    assert seed == hashlib.sha256(generator_prefix + vector["seed_name"].encode()).digest()
    algorithm = vector["algorithm"]
    if algorithm == types_pb2.KEY_ALGORITHM_ED25519:
        key = SigningKey.from_seed(seed)
    elif algorithm == types_pb2.KEY_ALGORITHM_X25519:
        key = EncryptionKey.from_seed(Suite.X25519, seed)
    else:
        expanded = hashlib.shake_256(seed).digest(96)
        assert expanded == x(vector["seed_expanded"])
        key = EncryptionKey.from_seed(Suite.MLKEM768_X25519, expanded)
        assert key.public == x(vector["mlkem768_public"]) + x(vector["x25519_public"])
    assert key.public == x(vector["public_key"])
    framed = framing.frame(framing.LABEL_KEY_ID, struct.pack(">H", algorithm), key.public)
    assert framed == x(vector["key_id_input"])
    assert hashlib.sha256(framed).digest()[:16] == x(vector["key_id"])
    assert key.key_id == key_id(algorithm, key.public) == x(vector["key_id"])


def test_xwing_seed_expansion_matches_the_xwing_draft():
    # draft-connolly-cfrg-xwing-kem, Appendix C, first vector: seed -> encapsulation key.
    seed = x("7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26")
    key = EncryptionKey.from_seed(Suite.MLKEM768_X25519, hashlib.shake_256(seed).digest(96))
    assert len(key.public) == 1216
    assert key.public[:16] == x("e2236b35a8c24b39b10aa1323a96a919")
    assert key.public[-16:] == x("23593d4ba32d9abac8cd049040ef6534")


# --- cards, rotation, revocation -----------------------------------------------------------


@pytest.mark.parametrize("vector", CARDS["vectors"], ids=_ids(CARDS["vectors"]))
def test_card_verifies_with_published_signatures_and_fingerprint(vector):
    card = verify_card(x(vector["signed_card"]))
    assert card.card_bytes == x(vector["card"])
    assert card.tls_certificate == x(vector["tls_certificate"])
    assert hashlib.sha256(card.tls_certificate).digest() == x(vector["tls_cert_sha256"])
    message = framing.frame(framing.LABEL_CARD_SIGNATURE, card.card_bytes)
    assert message == x(vector["signature_input"])
    public = {k["key_id"]: k["public_key"] for k in KEYS["vectors"]}
    for sig in vector["signatures"]:
        ed25519.Ed25519PublicKey.from_public_bytes(x(public[sig["key_id"]])).verify(
            x(sig["signature"]), message
        )
    fp_input = framing.frame(framing.LABEL_CARD_FINGERPRINT, card.card_bytes)
    assert fp_input == x(vector["fingerprint_input"])
    assert hashlib.sha256(fp_input).digest() == x(vector["fingerprint_digest"])
    assert card_fingerprint(card.card_bytes) == card.fingerprint == vector["fingerprint"]


@pytest.mark.parametrize("vector", CARDS["invalid"], ids=_ids(CARDS["invalid"]))
def test_invalid_card_is_refused_with_the_published_reason(vector):
    with pytest.raises(OpenError) as caught:
        verify_card(x(vector["signed_card"]))
    assert caught.value.reason.value == vector["expected_reason"]


def test_unloadable_mlkem_card_key_has_the_right_length_and_key_id():
    """The key is refused for its content alone: FIPS 203's encapsulation key check."""
    vector = next(v for v in CARDS["invalid"] if v["name"] == "ML-KEM key not loadable")
    card = card_pb2.NodeCard.FromString(
        card_pb2.SignedCard.FromString(x(vector["signed_card"])).card
    )
    key = card.encryption_keys[0]
    assert len(key.public_key) == 1216
    assert key_id(key.algorithm, key.public_key) == key.key_id
    with pytest.raises(ValueError):
        mlkem.MLKEM768PublicKey.from_public_bytes(key.public_key[:1184])
    x25519.X25519PublicKey.from_public_bytes(key.public_key[1184:])


def test_card_signatures_are_reproduced_from_the_seeds():
    vector = _card("JPN-ISA", 2)
    signers = {v["key_id"]: v["seed"] for v in KEYS["vectors"]}
    for sig in vector["signatures"]:
        key = SigningKey.from_seed(x(signers[sig["key_id"]]))
        assert key.sign(x(vector["signature_input"])) == x(sig["signature"])


def test_rotated_card_is_accepted_by_a_peer_that_pinned_the_first_card():
    first, second = _card("JPN-ISA", 1), _card("JPN-ISA", 2)
    ring = Keyring()
    ring.pin(x(first["signed_card"]), first["fingerprint"].lower().replace("-", " "))
    new = ring.rotate(x(second["signed_card"]))
    assert new.serial == 2
    assert ring.get("JPN-ISA").fingerprint == second["fingerprint"]


def test_revocation_verifies_against_the_rotated_card():
    vector = CARDS["revocation"]
    card = verify_card(x(_card("JPN-ISA", 2)["signed_card"]))
    assert framing.frame(framing.LABEL_REVOCATION_SIGNATURE, x(vector["revocation"])) == x(
        vector["signature_input"]
    )
    rev = verify_revocation(x(vector["signed_revocation"]), card)
    assert rev.key_id == x(vector["revoked_key_id"])
    assert rev.revoked_at_ms == vector["revoked_at_ms"]
    signer = SigningKey.from_seed(x(_key("JPN-ISA/signing-2")["seed"]))
    assert signer.key_id == x(vector["signer_key_id"])
    assert signer.sign(x(vector["signature_input"])) == x(vector["signature"])


# --- envelope signatures -------------------------------------------------------------------


@pytest.mark.parametrize("vector", SIGNATURES["vectors"], ids=_ids(SIGNATURES["vectors"]))
def test_envelope_signature_is_reproduced_from_the_sender_seed(vector):
    header, body = x(vector["header"]), x(vector["body"])
    assert signature_input(header, body) == x(vector["signature_input"])
    assert signature_input(header, body) == framing.frame(
        framing.LABEL_ENVELOPE_SIGNATURE, header, body
    )
    assert hpke_info(header) == x(vector["hpke_info"])
    sender = _identity(vector["header_fields"]["sender"]).signing_key
    assert sender.key_id == x(vector["signer_key_id"])
    assert sender.sign(x(vector["signature_input"])) == x(vector["signature"])
    assert verify_evidence(header, body, x(vector["signature"]), x(vector["signer_public_key"]))
    signed = envelope_pb2.SignedBody(body=body, signature=x(vector["signature"]))
    assert signed.SerializeToString() == x(vector["signed_body"])


# --- sealed envelopes ----------------------------------------------------------------------


def _header_fields(header: envelope_pb2.EnvelopeHeader) -> dict:
    return {
        "version": header.version,
        "message_id": header.message_id.hex(),
        "sender": header.sender,
        "recipient": header.recipient,
        "created_at_ms": header.created_at_ms,
        "sender_key_id": header.sender_key_id.hex(),
        "recipient_key_id": header.recipient_key_id.hex(),
        "suite": header.suite,
        "suite_name": types_pb2.Suite.Name(header.suite),
    }


@pytest.mark.parametrize("vector", SEALED["vectors"], ids=_ids(SEALED["vectors"]))
def test_sealed_envelope_opens_with_the_published_private_key(vector):
    me = _identity(vector["recipient"])
    assert me.encryption_keys[0].suite.value == vector["suite"]
    ring = Keyring.from_cards([x(_card(vector["sender"])["signed_card"])])
    opened = open_envelope(x(vector["envelope"]), me=me, keyring=ring, now_ms=vector["now_ms"])
    assert _header_fields(opened.header) == vector["header_fields"]
    assert opened.header_bytes == x(vector["header"])
    assert opened.body_bytes == x(vector["body"])
    assert opened.signature == x(vector["signature"])
    assert opened.envelope_hash == x(vector["envelope_hash"])
    assert opened.body.WhichOneof("content") == vector["body_variant"]


# An independent reading of docs/protocol.md section 7, "HPKE suites": RFC 9180 base mode,
# single shot, with DHKEM(X25519, HKDF-SHA256) or X-Wing, HKDF-SHA256 and AES-256-GCM,
# empty aad.


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _expand(prk, struct.pack(">H", n) + b"HPKE-v1" + suite_id + label + info, n)


XWING_LABEL = b"\\./" + b"/^\\"


def _decap(kem_id: int, enc: bytes, private_seed: bytes) -> bytes:
    if kem_id == 0x647A:
        expanded = hashlib.shake_256(private_seed).digest(96)
        sk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        sk_x = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        ct_m, ct_x = enc[:1088], enc[1088:]
        ss_m = sk_m.decapsulate(ct_m)
        ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        pk_x = sk_x.public_key().public_bytes_raw()
        return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()
    sk = x25519.X25519PrivateKey.from_private_bytes(private_seed)
    dh = sk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    kem_context = enc + sk.public_key().public_bytes_raw()
    kem_suite = b"KEM" + struct.pack(">H", kem_id)
    prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return _labeled_expand(kem_suite, prk, b"shared_secret", kem_context, 32)


def _hpke_open(kem_id: int, sealed: bytes, private_seed: bytes, info: bytes) -> bytes:
    n_enc = 1120 if kem_id == 0x647A else 32
    enc, ciphertext = sealed[:n_enc], sealed[n_enc:]
    shared = _decap(kem_id, enc, private_seed)
    suite_id = b"HPKE" + struct.pack(">HHH", kem_id, 0x0001, 0x0002)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared, b"secret", b"")
    key = _labeled_expand(suite_id, secret, b"key", context, 32)
    nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ciphertext, b"")


@pytest.mark.parametrize("vector", SEALED["vectors"], ids=_ids(SEALED["vectors"]))
def test_sealed_envelope_opens_with_an_independent_hpke_reading_of_the_spec(vector):
    kem_id = {"SUITE_MLKEM768_X25519_SHA256_AES256GCM": 0x647A}.get(vector["suite_name"], 0x0020)
    env = envelope_pb2.Envelope.FromString(x(vector["envelope"]))
    assert env.sealed == x(vector["sealed"]) == x(vector["enc"]) + x(vector["ciphertext"])
    info = framing.frame(framing.LABEL_HPKE_INFO, env.header)
    assert info == x(vector["hpke_info"])
    plaintext = _hpke_open(kem_id, env.sealed, x(vector["recipient_private_seed"]), info)
    assert plaintext == x(vector["signed_body"])
    signed = envelope_pb2.SignedBody.FromString(plaintext)
    ed25519.Ed25519PublicKey.from_public_bytes(x(vector["sender_signing_public_key"])).verify(
        signed.signature, framing.frame(framing.LABEL_ENVELOPE_SIGNATURE, env.header, signed.body)
    )


# --- receipt -----------------------------------------------------------------------------


def test_receipt_verifies_for_the_batch_it_names():
    vector = RECEIPT["vectors"][0]
    batch = envelope_pb2.Batch.FromString(x(vector["batch"]))
    hashes = [hashlib.sha256(e).digest() for e in batch.envelopes]
    assert [h.hex() for h in hashes] == vector["envelope_hashes"]
    ring = Keyring.from_cards([x(_card(vector["receiver"])["signed_card"])])
    verified = verify_receipt(
        x(vector["signed_receipt"]),
        keyring=ring,
        receiver=vector["receiver"],
        sender=vector["sender"],
        batch_id=x(vector["batch_id"]),
        envelope_hashes=hashes,
    )
    got = [
        {
            "message_id": o.message_id.hex(),
            "outcome": o.outcome,
            "outcome_name": envelope_pb2.Outcome.Name(o.outcome),
            "reason": o.reason,
            "reason_name": types_pb2.Reason.Name(o.reason),
        }
        for o in verified.outcomes
    ]
    assert got == vector["outcomes"]
    assert verified.receipt.signer_key_id == x(vector["signer_key_id"])
    assert receipt_signature_input(x(vector["receipt"])) == x(vector["signature_input"])
    signer = _identity(vector["receiver"]).signing_key
    assert signer.sign(x(vector["signature_input"])) == x(vector["signature"])


def test_receipt_outcomes_are_what_the_receiver_computes_for_the_batch():
    vector = RECEIPT["vectors"][0]
    batch = envelope_pb2.Batch.FromString(x(vector["batch"]))
    me = _identity(vector["receiver"])
    ring = Keyring.from_cards([x(_card(vector["sender"])["signed_card"])])
    stored: set[bytes] = set()
    outcomes = []
    for data in batch.envelopes:
        try:
            opened = open_envelope(data, me=me, keyring=ring, now_ms=vector["received_at_ms"])
        except OpenError as exc:
            outcomes.append((envelope_pb2.OUTCOME_REJECTED, wire_reason(exc.reason)))
            continue
        duplicate = opened.envelope_hash in stored
        stored.add(opened.envelope_hash)
        outcomes.append(
            (envelope_pb2.OUTCOME_DUPLICATE if duplicate else envelope_pb2.OUTCOME_ACCEPTED, 0)
        )
    assert outcomes == [(o["outcome"], o["reason"]) for o in vector["outcomes"]]


def test_receipt_is_refused_for_a_different_batch():
    vector = RECEIPT["vectors"][0]
    ring = Keyring.from_cards([x(_card(vector["receiver"])["signed_card"])])
    with pytest.raises(OpenError):
        verify_receipt(
            x(vector["signed_receipt"]),
            keyring=ring,
            receiver=vector["receiver"],
            sender=vector["sender"],
            batch_id=x(vector["batch_id"]),
            envelope_hashes=[x(h) for h in vector["envelope_hashes"][:2]],
        )


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", FAILURES["vectors"], ids=_ids(FAILURES["vectors"]))
def test_envelope_is_refused_with_the_published_reason(vector):
    me = _identity("PHL-DFA")
    revoked = [(x(r["key_id"]), r["revoked_at_ms"]) for r in vector["revocations"]]
    ring = Keyring.from_cards([x(_card("JPN-ISA")["signed_card"])], revoked)
    with pytest.raises(OpenError) as caught:
        open_envelope(
            x(vector["envelope"]),
            me=me,
            keyring=ring,
            now_ms=vector["now_ms"],
            freshness=Freshness(max_skew_ms=300_000, max_age_ms=604_800_000),
            expected_sender=vector["expected_sender"],
        )
    assert caught.value.reason.value == vector["expected_reason"]
    assert wire_reason(caught.value.reason) == vector["expected_wire_reason"]
    assert (
        types_pb2.Reason.Name(vector["expected_wire_reason"])
        == (vector["expected_wire_reason_name"])
    )


_OPEN_FRESHNESS = Freshness(max_skew_ms=300_000, max_age_ms=604_800_000)


@pytest.mark.parametrize(
    "vector", FAILURES["opens_at_bounds"], ids=_ids(FAILURES["opens_at_bounds"])
)
def test_envelope_opens_at_the_exact_freshness_bounds(vector):
    ring = Keyring.from_cards([x(_card("JPN-ISA")["signed_card"])])
    opened = open_envelope(
        x(vector["envelope"]),
        me=_identity("PHL-DFA"),
        keyring=ring,
        now_ms=vector["now_ms"],
        freshness=_OPEN_FRESHNESS,
    )
    assert opened.sender == "JPN-ISA"


def _spec_open_checks() -> dict[str, str]:
    """Check number -> internal reason, read from the table of docs/protocol.md 8.4."""
    section = SPEC.split("### 8.4 ")[1].split("\n## ")[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    return {
        cells[0].strip(): cells[-1].strip().strip("`")
        for cells in rows
        if re.fullmatch(r"[0-9]+a?", cells[0].strip())
    }


def test_every_check_of_the_spec_has_a_refusal_vector_with_its_reason():
    checks = _spec_open_checks()
    assert list(checks) == [str(n) for n in range(1, 3)] + ["2a"] + [str(n) for n in range(3, 20)]
    for vector in FAILURES["vectors"]:
        assert checks[vector["check"]] == vector["expected_reason"], vector["name"]
    assert {v["check"] for v in FAILURES["vectors"]} == set(checks)


def test_decryption_and_signature_failures_look_the_same_on_the_wire():
    wire = {
        v["expected_wire_reason"]
        for v in FAILURES["vectors"]
        if v["expected_reason"] in ("decryption_failed", "bad_signature")
    }
    assert wire == {types_pb2.REASON_VERIFICATION_FAILED}


# --- the generator -----------------------------------------------------------------------


def test_generator_reproduces_every_committed_file_exactly():
    generator = _load_generator()
    texts = generator.build(generator.load_committed_sealed(VECTORS))
    assert sorted(texts) == sorted(p.name for p in VECTORS.glob("*.json"))
    for name, text in texts.items():
        assert (VECTORS / name).read_text() == text, f"{name} differs from the generator"


# --- the specification quotes the vectors correctly ----------------------------------------

SPEC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()


def test_spec_label_table_matches_the_framing_module():
    for name, label in vars(framing).items():
        if name.startswith("LABEL_"):
            assert f"| `{name}` | `{label.decode()}` | `{label.hex()}` |" in SPEC


def test_spec_worked_example_quotes_published_values():
    quoted = [
        _key("JPN-ISA/signing")["key_id"],
        _key("JPN-ISA/signing")["key_id_input"][-64:],
        _key("PHL-DFA/encryption/mlkem768-x25519")["key_id"],
        _card("JPN-ISA")["fingerprint"],
        _card("PHL-DFA")["fingerprint"],
        SEALED["vectors"][0]["header_fields"]["message_id"],
    ]
    for value in quoted:
        assert value in SPEC
