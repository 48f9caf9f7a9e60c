"""Generate the exchange-node protocol v1 test vectors in this directory.

Usage (from the repository root)::

    .venv/bin/python docs/test-vectors/generate.py               # rewrite the files
    .venv/bin/python docs/test-vectors/generate.py --check       # exit 1 if any differs
    .venv/bin/python docs/test-vectors/generate.py --regenerate  # new HPKE randomness

Everything here is a pure function of fixed seeds and fixed times, except the HPKE
output inside the sealed envelopes (HPKE encapsulation is randomised). The generator
therefore keeps the envelopes already committed in ``sealed-envelopes.json`` and only
draws new ones with ``--regenerate``; the files that depend on those envelopes (the
receipt, the rejection vectors) are then a deterministic function of them. Running the
generator without ``--regenerate`` must reproduce the committed files byte for byte;
``tests/test_vectors.py`` asserts exactly that.

Seeds. Every private seed is ``SHA-256("exchange-node/v1/test-vectors/" || name)`` for a
fixed ASCII ``name``. The MLKEM768-X25519 private key is an X-Wing decapsulation key:
a 32-byte seed that SHAKE256 expands to 96 bytes (ML-KEM-768 ``d || z``, then the
X25519 scalar), as draft-connolly-cfrg-xwing-kem specifies. These keys are public:
never use them for anything but tests.

All byte strings in the JSON are lower-case hex.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # run as a script: make the package importable
    sys.path.insert(0, str(HERE.parents[1]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from exchange_node.pb.exchange.v1 import (  # noqa: E402
    card_pb2,
    envelope_pb2,
    notice_pb2,
    types_pb2,
)
from exchange_node.protocol import framing  # noqa: E402
from exchange_node.protocol.cards import (  # noqa: E402
    CardKey,
    card_fingerprint,
    issue_card,
    sign_revocation,
    verify_card,
)
from exchange_node.protocol.envelope import (  # noqa: E402
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    Freshness,
    hpke_info,
    open_envelope,
    seal,
    signature_input,
)
from exchange_node.protocol.errors import OpenError, Reason, wire_reason  # noqa: E402
from exchange_node.protocol.keyring import Keyring, LocalIdentity  # noqa: E402
from exchange_node.protocol.keys import (  # noqa: E402
    EncryptionKey,
    SigningKey,
    Suite,
    hpke_public_key,
    key_id,
)
from exchange_node.protocol.receipts import (  # noqa: E402
    Outcome,
    build_receipt,
    receipt_signature_input,
)

SEED_PREFIX = b"exchange-node/v1/test-vectors/"

# 2026-01-01T00:00:00Z and 2025-12-01T00:00:00Z in Unix milliseconds.
T_SEND_MS = 1_767_225_600_000
T_KEYS_MS = 1_764_547_200_000
# The receiver opens the envelopes one second after they were sealed.
T_OPEN_MS = T_SEND_MS + 1_000

# The receiver settings of open-failures.json: stated in the file, not the defaults.
VECTOR_FRESHNESS = Freshness(max_skew_ms=300_000, max_age_ms=604_800_000)

SEALED_FILE = "sealed-envelopes.json"
FILES = (
    "keys.json",
    "frame.json",
    "cards.json",
    "signatures.json",
    SEALED_FILE,
    "receipt.json",
    "open-failures.json",
)


def seed(name: str) -> bytes:
    """The documented seed derivation: SHA-256(SEED_PREFIX || name)."""
    return hashlib.sha256(SEED_PREFIX + name.encode("ascii")).digest()


def xwing_expand(xwing_seed: bytes) -> bytes:
    """X-Wing decapsulation key (32 bytes) to ML-KEM-768 seed (64) || X25519 scalar (32)."""
    return hashlib.shake_256(xwing_seed).digest(96)


def tls_certificate(node_id: str) -> bytes:
    """A reproducible self-signed P-256 certificate (DER) for ``node_id``: private scalar
    from seed("<node_id>/tls"), serial 1, deterministic ECDSA (RFC 6979)."""
    scalar = int.from_bytes(seed(f"{node_id}/tls"), "big") % (2**255)
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    start = dt.datetime.fromtimestamp(T_KEYS_MS / 1000, tz=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
    )
    cert = builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return cert.public_bytes(serialization.Encoding.DER)


def _fixed(name: str, n: int = 16) -> bytes:
    """Fixed identifiers (message ids, notice ids, batch ids) for the vectors."""
    return seed(name)[:n]


# --- the two nodes ---------------------------------------------------------------------


class Node:
    """A test node: its seeds, keys, local identity and card."""

    def __init__(
        self,
        node_id: str,
        country: str,
        display_name: str,
        suite: Suite,
        serial: int = 1,
    ) -> None:
        self.node_id = node_id
        self.country = country
        self.display_name = display_name
        self.endpoint = f"https://{node_id.lower()}.example:8443"
        self.tls_certificate = tls_certificate(node_id)
        self.signing_seed = seed(f"{node_id}/signing")
        self.signing = SigningKey.from_seed(self.signing_seed)
        if suite is Suite.MLKEM768_X25519:
            self.encryption_seed = seed(f"{node_id}/encryption/mlkem768-x25519")
            self.encryption_seed_expanded = xwing_expand(self.encryption_seed)
        else:
            self.encryption_seed = seed(f"{node_id}/encryption/x25519")
            self.encryption_seed_expanded = self.encryption_seed
        self.encryption = EncryptionKey.from_seed(suite, self.encryption_seed_expanded)
        self.identity = LocalIdentity(node_id, self.signing, (self.encryption,))
        self.card = issue_card(
            node_id=node_id,
            country=country,
            endpoint=self.endpoint,
            display_name=display_name,
            signing_keys=[CardKey(self.signing, T_KEYS_MS)],
            encryption_keys=[CardKey(self.encryption, T_KEYS_MS)],
            tls_certificate=self.tls_certificate,
            serial=serial,
            issued_at_ms=T_KEYS_MS,
        )


def nodes() -> tuple[Node, Node]:
    """JPN-ISA (classic X25519 encryption key) and PHL-DFA (hybrid, the default)."""
    jpn = Node("JPN-ISA", "JPN", "Immigration Services Agency of Japan", Suite.X25519)
    phl = Node(
        "PHL-DFA", "PHL", "Department of Foreign Affairs, Philippines", Suite.MLKEM768_X25519
    )
    return jpn, phl


# --- bodies ------------------------------------------------------------------------------

DOCUMENT = notice_pb2.DocumentRef(
    issuing_state="PHL", document_type="P", document_number="P1234567A"
)


def fraud_body() -> bytes:
    """JPN-ISA reports a counterfeit Philippine passport detected at Narita."""
    return notice_pb2.Body(
        fraud_notice=notice_pb2.FraudDetectionNotice(
            notice_id=_fixed("notice/fraud"),
            document=DOCUMENT,
            fraud_type=notice_pb2.FRAUD_TYPE_COUNTERFEIT,
            detected_at_ms=T_SEND_MS - 3_600_000,
            detection_place="JPNRT",
            detecting_authority="Immigration Services Agency, Narita",
        )
    ).SerializeToString()


def status_body() -> bytes:
    """PHL-DFA, the issuing state, declares the same passport revoked."""
    return notice_pb2.Body(
        status_notice=notice_pb2.TravelDocumentStatusNotice(
            notice_id=_fixed("notice/status"),
            document=DOCUMENT,
            status=notice_pb2.DOCUMENT_STATUS_REVOKED,
            effective_at_ms=T_SEND_MS,
            remarks="Revoked after fraud report",
        )
    ).SerializeToString()


# --- helpers ----------------------------------------------------------------------------


def h(b: bytes) -> str:
    return b.hex()


def header_fields(header_bytes: bytes) -> dict[str, Any]:
    hd = envelope_pb2.EnvelopeHeader.FromString(header_bytes)
    return {
        "version": hd.version,
        "message_id": h(hd.message_id),
        "sender": hd.sender,
        "recipient": hd.recipient,
        "created_at_ms": hd.created_at_ms,
        "sender_key_id": h(hd.sender_key_id),
        "recipient_key_id": h(hd.recipient_key_id),
        "suite": hd.suite,
        "suite_name": types_pb2.Suite.Name(hd.suite),
    }


def doc(description: str, vectors: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    out.update(extra)
    out["vectors"] = vectors
    return out


def render(obj: dict[str, Any]) -> str:
    """The exact text written to disk (the regeneration test compares it)."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


COMMON = (
    "Normative reference: docs/protocol.md. All byte strings are lower-case hex. "
    "Times are Unix milliseconds (UTC). Generated by docs/test-vectors/generate.py."
)


# --- deterministic vector files -----------------------------------------------------------


def keys_file(jpn: Node, phl: Node, rotated: SigningKey) -> dict[str, Any]:
    def entry(name: str, algorithm: int, seed_hex: str, public: bytes, kid: bytes, **more: Any):
        layout = {
            types_pb2.KEY_ALGORITHM_ED25519: "Ed25519 public key, 32 bytes (RFC 8032)",
            types_pb2.KEY_ALGORITHM_X25519: "X25519 public key, 32 bytes (RFC 7748)",
            types_pb2.KEY_ALGORITHM_MLKEM768_X25519: (
                "ML-KEM-768 encapsulation key (1,184 bytes) || X25519 public key (32 bytes)"
            ),
        }[algorithm]
        return {
            "name": name,
            "description": f'{layout}. key_id = SHA-256(frame("exchange-node/v1/key-id", '
            "u16be(algorithm), public_key))[0:16].",
            "algorithm": algorithm,
            "algorithm_name": types_pb2.KeyAlgorithm.Name(algorithm),
            "seed_name": name,
            "seed": seed_hex,
            **more,
            "public_key": h(public),
            "key_id_input": h(
                framing.frame(framing.LABEL_KEY_ID, struct.pack(">H", algorithm), public)
            ),
            "key_id": h(kid),
        }

    vectors = [
        entry(
            f"{jpn.node_id}/signing",
            types_pb2.KEY_ALGORITHM_ED25519,
            h(jpn.signing_seed),
            jpn.signing.public,
            jpn.signing.key_id,
        ),
        entry(
            f"{jpn.node_id}/signing-2",
            types_pb2.KEY_ALGORITHM_ED25519,
            h(seed(f"{jpn.node_id}/signing-2")),
            rotated.public,
            rotated.key_id,
        ),
        entry(
            f"{jpn.node_id}/encryption/x25519",
            types_pb2.KEY_ALGORITHM_X25519,
            h(jpn.encryption_seed),
            jpn.encryption.public,
            jpn.encryption.key_id,
        ),
        entry(
            f"{phl.node_id}/signing",
            types_pb2.KEY_ALGORITHM_ED25519,
            h(phl.signing_seed),
            phl.signing.public,
            phl.signing.key_id,
        ),
        entry(
            f"{phl.node_id}/encryption/mlkem768-x25519",
            types_pb2.KEY_ALGORITHM_MLKEM768_X25519,
            h(phl.encryption_seed),
            phl.encryption.public,
            phl.encryption.key_id,
            seed_expanded=h(phl.encryption_seed_expanded),
            mlkem768_seed=h(phl.encryption_seed_expanded[:64]),
            x25519_private=h(phl.encryption_seed_expanded[64:]),
            mlkem768_public=h(phl.encryption.public[:1184]),
            x25519_public=h(phl.encryption.public[1184:]),
        ),
    ]
    return doc(
        'Key material of the two test nodes. seed = SHA-256("exchange-node/v1/test-vectors/" '
        "|| seed_name). Ed25519: the seed is the RFC 8032 private key. X25519: the seed is "
        "the RFC 7748 scalar. MLKEM768-X25519: the seed is the 32-byte X-Wing decapsulation "
        "key (the HPKE private key of KEM 0x647a); SHAKE256(seed, 96 bytes) = seed_expanded "
        "= ML-KEM-768 seed d||z (64 bytes, FIPS 203 KeyGen_internal) || X25519 scalar "
        "(32 bytes). " + COMMON,
        vectors,
    )


def frame_file() -> dict[str, Any]:
    labels = [
        ("LABEL_ENVELOPE_SIGNATURE", framing.LABEL_ENVELOPE_SIGNATURE),
        ("LABEL_RECEIPT_SIGNATURE", framing.LABEL_RECEIPT_SIGNATURE),
        ("LABEL_CARD_SIGNATURE", framing.LABEL_CARD_SIGNATURE),
        ("LABEL_REVOCATION_SIGNATURE", framing.LABEL_REVOCATION_SIGNATURE),
        ("LABEL_HPKE_INFO", framing.LABEL_HPKE_INFO),
        ("LABEL_KEY_ID", framing.LABEL_KEY_ID),
        ("LABEL_CARD_FINGERPRINT", framing.LABEL_CARD_FINGERPRINT),
    ]
    parts_cases = [
        ("no parts", []),
        ("one empty part", [b""]),
        ("two parts", [b"abc", b"\x00\x01"]),
    ]
    vectors = []
    for const, label in labels:
        for case, parts in parts_cases:
            vectors.append(
                {
                    "name": f"{const}: {case}",
                    "description": f"frame({label.decode()!r}, {len(parts)} part(s)) = label "
                    "|| 0x00 || for each part: u32be(len(part)) || part.",
                    "label": label.decode("ascii"),
                    "label_hex": h(label),
                    "parts": [h(p) for p in parts],
                    "framed": h(framing.frame(label, *parts)),
                }
            )
    return doc("Outputs of frame(label, *parts) for every label of protocol v1. " + COMMON, vectors)


def _card_vector(name: str, description: str, signed: bytes) -> dict[str, Any]:
    sc = card_pb2.SignedCard.FromString(signed)
    card = verify_card(signed)
    return {
        "name": name,
        "description": description,
        "node_id": card.node_id,
        "serial": card.serial,
        "tls_certificate": h(card.tls_certificate),
        "tls_cert_sha256": h(card.tls_cert_sha256),
        "signed_card": h(signed),
        "card": h(sc.card),
        "signature_input": h(framing.frame(framing.LABEL_CARD_SIGNATURE, sc.card)),
        "signatures": [{"key_id": h(s.key_id), "signature": h(s.signature)} for s in sc.signatures],
        "fingerprint_input": h(framing.frame(framing.LABEL_CARD_FINGERPRINT, sc.card)),
        "fingerprint_digest": h(
            hashlib.sha256(framing.frame(framing.LABEL_CARD_FINGERPRINT, sc.card)).digest()
        ),
        "fingerprint": card_fingerprint(sc.card),
    }


def rotated_jpn_card(jpn: Node, rotated: SigningKey) -> bytes:
    return issue_card(
        node_id=jpn.node_id,
        country=jpn.country,
        endpoint=jpn.endpoint,
        display_name=jpn.display_name,
        signing_keys=[CardKey(rotated, T_SEND_MS), CardKey(jpn.signing, T_KEYS_MS)],
        encryption_keys=[CardKey(jpn.encryption, T_KEYS_MS)],
        tls_certificate=jpn.tls_certificate,
        serial=2,
        issued_at_ms=T_SEND_MS,
        previous_signing_key=jpn.signing,
    )


def revocation(jpn: Node, rotated: SigningKey) -> bytes:
    return sign_revocation(
        node_id=jpn.node_id,
        revoked_key_id=jpn.signing.key_id,
        revoked_at_ms=T_SEND_MS + 60_000,
        reason="key retired after rotation",
        signer=rotated,
    )


def _altered_card(phl: Node, change) -> bytes:
    """PHL-DFA's card after ``change(NodeCard)``, signed again by PHL-DFA's signing key."""
    card = card_pb2.NodeCard.FromString(card_pb2.SignedCard.FromString(phl.card).card)
    change(card)
    data = card.SerializeToString()
    sig = phl.signing.sign(framing.frame(framing.LABEL_CARD_SIGNATURE, data))
    return card_pb2.SignedCard(
        card=data, signatures=[card_pb2.CardSignature(key_id=phl.signing.key_id, signature=sig)]
    ).SerializeToString()


def _set(field: str, value: Any):
    return lambda card: setattr(card, field, value)


def _mlkem_out_of_range(card: card_pb2.NodeCard) -> None:
    """The first 12-bit coefficient of the ML-KEM key set to 4095 (>= q = 3329)."""
    key = card.encryption_keys[0]
    public = b"\xff" + bytes([key.public_key[1] | 0x0F]) + key.public_key[2:]
    key.public_key = public
    key.key_id = key_id(key.algorithm, public)


def _x25519_short(card: card_pb2.NodeCard) -> None:
    key = card.encryption_keys[0]
    key.algorithm = types_pb2.KEY_ALGORITHM_X25519
    key.public_key = key.public_key[-31:]
    key.key_id = key_id(key.algorithm, key.public_key)


def _signature_flipped(phl: Node) -> bytes:
    sc = card_pb2.SignedCard.FromString(phl.card)
    sig = sc.signatures[0].signature
    sc.signatures[0].signature = sig[:-1] + bytes([sig[-1] ^ 0x01])
    return sc.SerializeToString()


def invalid_card_vectors(phl: Node) -> list[dict[str, Any]]:
    """Cards derived from PHL-DFA's, each failing one rule of docs/protocol.md 10.2."""
    cases = [
        (
            "country not an ICAO code",
            "4",
            "country `phl` (lower case).",
            _altered_card(phl, _set("country", "phl")),
        ),
        (
            "TLS certificate digest mismatch",
            "6",
            "tls_cert_sha256 is 32 zero bytes while tls_certificate is present.",
            _altered_card(phl, _set("tls_cert_sha256", b"\x00" * 32)),
        ),
        (
            "ML-KEM key not loadable",
            "7",
            "The encryption key's ML-KEM-768 part has its first 12-bit coefficient set to "
            "4095, which is not below q = 3329: it fails the FIPS 203 encapsulation key "
            "check, so the key is not loadable, although its length and key id are right.",
            _altered_card(phl, _mlkem_out_of_range),
        ),
        (
            "X25519 key of 31 bytes",
            "7",
            "The encryption key as KEY_ALGORITHM_X25519 with a 31-byte public key (key id "
            "recomputed over those bytes).",
            _altered_card(phl, _x25519_short),
        ),
        (
            "card signature does not verify",
            "9",
            "PHL-DFA's own card with the last bit of its signature flipped.",
            _signature_flipped(phl),
        ),
        (
            "not signed by its current key",
            "10",
            "PHL-DFA's card with no signatures.",
            card_pb2.SignedCard(
                card=card_pb2.SignedCard.FromString(phl.card).card
            ).SerializeToString(),
        ),
    ]
    expected = {"4": Reason.MALFORMED, "6": Reason.MALFORMED, "7": Reason.MALFORMED}
    vectors = []
    for name, check, description, signed in cases:
        try:
            verify_card(signed)
        except OpenError as exc:
            reason = exc.reason
        else:  # pragma: no cover - the generator itself checks its vectors
            raise RuntimeError(f"invalid card vector {name!r} verified")
        if reason is not expected.get(check, Reason.BAD_SIGNATURE):
            raise RuntimeError(f"invalid card vector {name!r}: {reason}")
        vectors.append(
            {
                "name": name,
                "check": check,
                "description": description + " Otherwise a well-formed card, signed by "
                "PHL-DFA's current signing key (except where the signature is the fault).",
                "signed_card": h(signed),
                "expected_reason": reason.value,
            }
        )
    return vectors


def cards_file(jpn: Node, phl: Node, rotated: SigningKey) -> dict[str, Any]:
    rot = rotated_jpn_card(jpn, rotated)
    rev = revocation(jpn, rotated)
    sr = card_pb2.SignedRevocation.FromString(rev)
    vectors = [
        _card_vector(
            "JPN-ISA card serial 1",
            "First card of JPN-ISA: one Ed25519 signing key, one X25519 encryption key, "
            "signed by its own signing key. Operators compare `fingerprint` out of band.",
            jpn.card,
        ),
        _card_vector(
            "PHL-DFA card serial 1",
            "First card of PHL-DFA: one Ed25519 signing key, one MLKEM768-X25519 "
            "encryption key, signed by its own signing key.",
            phl.card,
        ),
        _card_vector(
            "JPN-ISA card serial 2 (rotation)",
            "Successor of JPN-ISA serial 1: new current signing key JPN-ISA/signing-2 first, "
            "the old key kept second. Signed by the new key (first signature) and by the "
            "current signing key of the pinned serial-1 card (second signature), so a peer "
            "that pinned serial 1 accepts it without a new out-of-band comparison.",
            rot,
        ),
    ]
    rev_vector = {
        "name": "JPN-ISA revokes its first signing key",
        "description": "A SignedRevocation of key JPN-ISA/signing, signed by another signing "
        "key of the same node (JPN-ISA/signing-2). Verified against the serial-2 card.",
        "signed_revocation": h(rev),
        "revocation": h(sr.revocation),
        "revoked_key_id": h(jpn.signing.key_id),
        "revoked_at_ms": T_SEND_MS + 60_000,
        "signer_key_id": h(sr.signature.key_id),
        "signature_input": h(framing.frame(framing.LABEL_REVOCATION_SIGNATURE, sr.revocation)),
        "signature": h(sr.signature.signature),
    }
    return doc(
        "SignedCard bytes, card signature inputs, fingerprints, a rotation and a revocation. "
        "fingerprint = base32 (RFC 4648, upper case, no padding) of the first 20 bytes of "
        'SHA-256(frame("exchange-node/v1/card-fingerprint", card)), in groups of four '
        "joined with '-'. `invalid`: cards a receiver must refuse, each with the check of "
        "docs/protocol.md 10.2 it fails first and the reason. " + COMMON,
        vectors,
        revocation=rev_vector,
        invalid=invalid_card_vectors(phl),
    )


def envelope_parts(sender: Node, recipient: Node, body: bytes, name: str) -> tuple[bytes, bytes]:
    """Deterministic header bytes and signature of the envelope ``name``."""
    suite = recipient.encryption.suite
    header = envelope_pb2.EnvelopeHeader(
        version=1,
        message_id=_fixed(f"message/{name}"),
        sender=sender.node_id,
        recipient=recipient.node_id,
        created_at_ms=T_SEND_MS,
        sender_key_id=sender.signing.key_id,
        recipient_key_id=recipient.encryption.key_id,
        suite=suite.value,
    ).SerializeToString()
    return header, sender.signing.sign(signature_input(header, body))


ENVELOPES = (
    # (name, sender, recipient, body)
    ("fraud-notice-mlkem768-x25519", "JPN-ISA", "PHL-DFA", fraud_body),
    ("status-notice-x25519", "PHL-DFA", "JPN-ISA", status_body),
)


def signatures_file(jpn: Node, phl: Node) -> dict[str, Any]:
    by_id = {jpn.node_id: jpn, phl.node_id: phl}
    vectors = []
    for name, s, r, body_fn in ENVELOPES:
        sender, recipient = by_id[s], by_id[r]
        body = body_fn()
        header, sig = envelope_parts(sender, recipient, body, name)
        vectors.append(
            {
                "name": f"envelope {name}",
                "description": f"Envelope signature of {s} over header and body. "
                'signature_input = frame("exchange-node/v1/envelope-signature", header, '
                "body); signature = Ed25519(sender signing key, signature_input). "
                'hpke_info = frame("exchange-node/v1/hpke-info", header).',
                "signer_key_id": h(sender.signing.key_id),
                "signer_public_key": h(sender.signing.public),
                "header": h(header),
                "header_fields": header_fields(header),
                "body": h(body),
                "signature_input": h(signature_input(header, body)),
                "signature": h(sig),
                "signed_body": h(
                    envelope_pb2.SignedBody(body=body, signature=sig).SerializeToString()
                ),
                "hpke_info": h(hpke_info(header)),
            }
        )
    return doc(
        "Ed25519 signature inputs and signatures (deterministic, RFC 8032) for envelopes. "
        "Card and revocation signatures are in cards.json, the receipt's in receipt.json. "
        + COMMON,
        vectors,
    )


# --- sealed envelopes (HPKE randomness kept unless --regenerate) ----------------------


def sealed_file(jpn: Node, phl: Node, existing: dict[str, Any] | None) -> dict[str, Any]:
    """Sealed envelopes; reuse the envelope bytes of ``existing`` when given.

    Raises RuntimeError when a kept envelope no longer carries the deterministic header,
    body and signature (the inputs changed): regenerate them then.
    """
    by_id = {jpn.node_id: jpn, phl.node_id: phl}
    kept = {v["name"]: bytes.fromhex(v["envelope"]) for v in (existing or {}).get("vectors", [])}
    vectors = []
    for name, s, r, body_fn in ENVELOPES:
        sender, recipient = by_id[s], by_id[r]
        body = body_fn()
        header, sig = envelope_parts(sender, recipient, body, name)
        data = kept.get(name)
        if data is None:
            data = seal(
                body,
                sender=sender.identity,
                recipient=verify_card(recipient.card),
                now_ms=T_SEND_MS,
                message_id=_fixed(f"message/{name}"),
            ).data
        opened = open_envelope(
            data, me=recipient.identity, keyring=Keyring.from_cards([sender.card]), now_ms=T_OPEN_MS
        )
        if (opened.header_bytes, opened.body_bytes, opened.signature) != (header, body, sig):
            raise RuntimeError(f"{SEALED_FILE}: {name} is stale; run with --regenerate")
        env = envelope_pb2.Envelope.FromString(data)
        suite = recipient.encryption.suite
        enc_len = 1120 if suite is Suite.MLKEM768_X25519 else 32
        vectors.append(
            {
                "name": name,
                "description": f"An Envelope from {s} to {r}, sealed to {r}'s "
                f"{types_pb2.Suite.Name(suite.value)} key. Open it at now_ms with the "
                "recipient's private key (recipient_private_seed, see keys.json) and the "
                "sender's pinned card (cards.json); expect header_fields, body and "
                f"signature. sealed = enc ({enc_len} bytes) || AES-256-GCM ciphertext of "
                "the SignedBody (plaintext length + 16).",
                "sender": s,
                "recipient": r,
                "suite": suite.value,
                "suite_name": types_pb2.Suite.Name(suite.value),
                "recipient_private_seed": h(recipient.encryption_seed),
                "recipient_private_seed_expanded": h(recipient.encryption_seed_expanded),
                "sender_signing_public_key": h(sender.signing.public),
                "now_ms": T_OPEN_MS,
                "envelope": h(data),
                "envelope_hash": h(hashlib.sha256(data).digest()),
                "header": h(env.header),
                "header_fields": header_fields(env.header),
                "hpke_info": h(hpke_info(env.header)),
                "sealed": h(env.sealed),
                "enc": h(env.sealed[:enc_len]),
                "ciphertext": h(env.sealed[enc_len:]),
                "signed_body": h(
                    envelope_pb2.SignedBody(body=body, signature=sig).SerializeToString()
                ),
                "body": h(body),
                "body_variant": notice_pb2.Body.FromString(body).WhichOneof("content"),
                "signature": h(sig),
            }
        )
    return doc(
        "Sealed envelopes for both HPKE suites (mode_base, single-shot, aad empty). HPKE is "
        "randomised: these bytes were drawn once and are kept; generate.py --regenerate "
        "draws new ones. `bad_signature` is a correctly sealed envelope whose signature was "
        "made by the wrong key; `inner_failures` are correctly sealed envelopes whose "
        "plaintext fails a check after decryption (both used by open-failures.json). " + COMMON,
        vectors,
        bad_signature=bad_signature_vector(jpn, phl, existing),
        inner_failures=inner_failure_vectors(jpn, phl, existing),
    )


def _seal_kept(name: str, recipient: Node, header: bytes, plaintext: bytes, kept: str | None):
    """Envelope bytes sealing ``plaintext`` under ``header``; ``kept`` (hex) is reused.

    Raises RuntimeError when the kept envelope no longer holds that header and plaintext.
    """
    if kept is not None:
        data = bytes.fromhex(kept)
        env = envelope_pb2.Envelope.FromString(data)
        if (
            env.header != header
            or recipient.encryption.decrypt(env.sealed, hpke_info(header)) != plaintext
        ):
            raise RuntimeError(f"{SEALED_FILE}: {name} is stale; run with --regenerate")
        return data
    suite = recipient.encryption.suite
    sealed = suite.hpke.encrypt(
        plaintext,
        hpke_public_key(suite.key_algorithm, recipient.encryption.public),
        info=hpke_info(header),
    )
    return envelope_pb2.Envelope(header=header, sealed=sealed).SerializeToString()


def bad_signature_vector(jpn: Node, phl: Node, existing: dict[str, Any] | None) -> dict[str, Any]:
    """JPN-ISA's header and body, signed by PHL-DFA's key instead, sealed to PHL-DFA."""
    name = "fraud-notice-bad-signature"
    body = fraud_body()
    header, _ = envelope_parts(jpn, phl, body, name)
    wrong = phl.signing.sign(signature_input(header, body))
    plaintext = envelope_pb2.SignedBody(body=body, signature=wrong).SerializeToString()
    kept = (existing or {}).get("bad_signature", {}).get("envelope")
    data = _seal_kept(name, phl, header, plaintext, kept)
    return {
        "name": name,
        "description": "Sealed correctly to PHL-DFA under JPN-ISA's header, but the "
        "SignedBody signature was made with PHL-DFA's signing key, not JPN-ISA's. "
        "Decryption succeeds; the signature check fails.",
        "envelope": h(data),
        "header_fields": header_fields(header),
        "signed_body": h(plaintext),
    }


def _bad_utf8(body: bytes, placeholder: bytes) -> bytes:
    """``body`` with the string ``placeholder`` replaced by as many bytes of bad UTF-8."""
    assert body.count(placeholder) == 1
    return body.replace(placeholder, b"\xc3\x28" + b"\xff" * (len(placeholder) - 2))


def _truncated_signed_body(jpn: Node, phl: Node, name: str) -> bytes:
    body = fraud_body()
    header, sig = envelope_parts(jpn, phl, body, name)
    return envelope_pb2.SignedBody(body=body, signature=sig).SerializeToString()[:-1]


def _signed(jpn: Node, phl: Node, name: str, body: bytes) -> bytes:
    _, sig = envelope_parts(jpn, phl, body, name)
    return envelope_pb2.SignedBody(body=body, signature=sig).SerializeToString()


# (name, check of 8.4, description, plaintext(jpn, phl, name)) for envelopes that decrypt
# but fail a later check; sealed once, like the other envelopes, and kept.
INNER_FAILURES = (
    (
        "signed body does not parse",
        16,
        "The plaintext is a SignedBody with its last byte cut off: the signature field's "
        "length runs past the end. Correctly sealed to PHL-DFA.",
        _truncated_signed_body,
    ),
    (
        "body does not parse (truncated)",
        18,
        "SignedBody.body is the fraud notice body with its last byte cut off, correctly "
        "signed by JPN-ISA: the signature verifies, the body does not parse.",
        lambda jpn, phl, name: _signed(jpn, phl, name, fraud_body()[:-1]),
    ),
    (
        "body does not parse (invalid UTF-8)",
        18,
        "SignedBody.body is the fraud notice body whose detection_place string is the "
        "five bytes c3 28 ff ff ff (not UTF-8), correctly signed by JPN-ISA. A string field "
        "that is not valid UTF-8 does not parse.",
        lambda jpn, phl, name: _signed(jpn, phl, name, _bad_utf8(fraud_body(), b"JPNRT")),
    ),
    (
        "body with no content",
        19,
        "SignedBody.body is empty (zero bytes), correctly signed by JPN-ISA: it parses "
        "as a Body with no content variant set.",
        lambda jpn, phl, name: _signed(jpn, phl, name, b""),
    ),
    (
        "body with only a wire-type mismatch",
        19,
        "SignedBody.body is 08 01: field 1 (status_notice, a message, wire type 2) encoded "
        "as a varint (wire type 0), correctly signed by JPN-ISA. A known field number with "
        "another wire type is an unknown field, so the Body parses with no content set.",
        lambda jpn, phl, name: _signed(jpn, phl, name, b"\x08\x01"),
    ),
)


def inner_failure_vectors(
    jpn: Node, phl: Node, existing: dict[str, Any] | None
) -> list[dict[str, Any]]:
    kept = {v["name"]: v["envelope"] for v in (existing or {}).get("inner_failures", [])}
    vectors = []
    for name, check, description, plaintext_fn in INNER_FAILURES:
        header, _ = envelope_parts(jpn, phl, fraud_body(), name)
        plaintext = plaintext_fn(jpn, phl, name)
        data = _seal_kept(name, phl, header, plaintext, kept.get(name))
        vectors.append(
            {
                "name": name,
                "check": str(check),
                "description": description,
                "envelope": h(data),
                "header_fields": header_fields(header),
                "signed_body": h(plaintext),
            }
        )
    return vectors


# The internal reason each check of docs/protocol.md 8.4 fails with, in check order.
CHECK_REASONS = {
    "1": Reason.OVERSIZED,
    "2": Reason.MALFORMED,
    "2a": Reason.MALFORMED,
    "3": Reason.UNSUPPORTED_VERSION,
    "4": Reason.MALFORMED,
    "5": Reason.WRONG_RECIPIENT,
    "6": Reason.SENDER_MISMATCH,
    "7": Reason.UNKNOWN_SENDER,
    "8": Reason.FUTURE_DATED,
    "9": Reason.EXPIRED,
    "10": Reason.UNKNOWN_KEY,
    "11": Reason.KEY_REVOKED,
    "12": Reason.KEY_NOT_VALID,
    "13": Reason.UNKNOWN_RECIPIENT_KEY,
    "14": Reason.SUITE_MISMATCH,
    "15": Reason.DECRYPTION_FAILED,
    "16": Reason.MALFORMED,
    "17": Reason.BAD_SIGNATURE,
    "18": Reason.MALFORMED,
    "19": Reason.MALFORMED,
}


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2), for hand-made encodings."""
    assert number < 16 and len(value) < 1 << 21
    length, out = len(value), bytearray()
    while True:
        out.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(out) + value


def _padded_to(data: bytes, size: int) -> bytes:
    """``data`` with zero bytes appended to ``sealed`` until the envelope is ``size`` bytes."""
    env = envelope_pb2.Envelope.FromString(data)
    pad = size - len(data)
    while True:
        out = envelope_pb2.Envelope(
            header=env.header, sealed=env.sealed + b"\x00" * pad
        ).SerializeToString()
        if len(out) == size:
            return out
        pad -= len(out) - size


def _reenvelope(data: bytes, **changes: Any) -> bytes:
    """The same sealed bytes under a modified clear header."""
    env = envelope_pb2.Envelope.FromString(data)
    hd = envelope_pb2.EnvelopeHeader.FromString(env.header)
    for k, v in changes.items():
        setattr(hd, k, v)
    return envelope_pb2.Envelope(
        header=hd.SerializeToString(), sealed=env.sealed
    ).SerializeToString()


def receipt_file(jpn: Node, phl: Node, sealed: dict[str, Any]) -> dict[str, Any]:
    """PHL-DFA's receipt for a batch from JPN-ISA: accepted, duplicate, rejected."""
    data = bytes.fromhex(sealed["vectors"][0]["envelope"])
    tampered = data[:-1] + bytes([data[-1] ^ 0x01])  # last byte of the AEAD tag
    mid = envelope_pb2.EnvelopeHeader.FromString(
        envelope_pb2.Envelope.FromString(data).header
    ).message_id
    batch_id = _fixed("batch/1")
    outcomes = [
        Outcome(hashlib.sha256(data).digest(), mid, envelope_pb2.OUTCOME_ACCEPTED),
        Outcome(hashlib.sha256(data).digest(), mid, envelope_pb2.OUTCOME_DUPLICATE),
        Outcome(
            hashlib.sha256(tampered).digest(),
            mid,
            envelope_pb2.OUTCOME_REJECTED,
            types_pb2.REASON_VERIFICATION_FAILED,
        ),
    ]
    batch = envelope_pb2.Batch(
        batch_id=batch_id, sender=jpn.node_id, envelopes=[data, data, tampered]
    ).SerializeToString()
    signed = build_receipt(
        batch_id=batch_id,
        receiver=phl.node_id,
        sender=jpn.node_id,
        received_at_ms=T_OPEN_MS,
        outcomes=outcomes,
        signing_key=phl.signing,
        checkpoint=b"",
    )
    sr = envelope_pb2.SignedReceipt.FromString(signed)
    return doc(
        "A SignedReceipt from PHL-DFA for a Batch from JPN-ISA of three envelopes: the "
        "sealed envelope fraud-notice-mlkem768-x25519 (ACCEPTED), the same bytes again "
        "(DUPLICATE), and a copy whose last byte (inside the AES-GCM tag) is flipped "
        "(REJECTED, VERIFICATION_FAILED). Receipt signature_input = "
        'frame("exchange-node/v1/receipt-signature", receipt). ' + COMMON,
        [
            {
                "name": "receipt for batch/1",
                "description": "Verify the signature with PHL-DFA's signing key, then check "
                "batch_id, receiver, sender and that envelope_hashes equal SHA-256 of each "
                "batch envelope in order.",
                "batch": h(batch),
                "batch_id": h(batch_id),
                "sender": jpn.node_id,
                "receiver": phl.node_id,
                "received_at_ms": T_OPEN_MS,
                "envelope_hashes": [h(o.envelope_hash) for o in outcomes],
                "outcomes": [
                    {
                        "message_id": h(o.message_id),
                        "outcome": o.outcome,
                        "outcome_name": envelope_pb2.Outcome.Name(o.outcome),
                        "reason": o.reason,
                        "reason_name": types_pb2.Reason.Name(o.reason),
                    }
                    for o in outcomes
                ],
                "signer_key_id": h(phl.signing.key_id),
                "signed_receipt": h(signed),
                "receipt": h(sr.receipt),
                "signature_input": h(receipt_signature_input(sr.receipt)),
                "signature": h(sr.signature),
            }
        ],
    )


def open_failures_file(jpn: Node, phl: Node, sealed: dict[str, Any]) -> dict[str, Any]:
    """Envelopes PHL-DFA must refuse, each with the reason its checks reach first."""
    data = bytes.fromhex(sealed["vectors"][0]["envelope"])
    far = T_OPEN_MS + 8 * 24 * 3600 * 1000
    bad_sig = bytes.fromhex(sealed["bad_signature"]["envelope"])
    jpn_kid = jpn.signing.key_id
    header = envelope_pb2.Envelope.FromString(data).header
    sealed_part = envelope_pb2.Envelope.FromString(data).sealed
    max_age, skew = 604_800_000, 300_000
    # (name, check of 8.4, description, envelope, now_ms, expected_sender, revoked key ids)
    cases: list[tuple[str, int, str, bytes, int, str | None, list[bytes]]] = [
        (
            "oversized",
            1,
            "The envelope with 65,537 - len(envelope) bytes appended to `sealed`: one byte over "
            "MAX_ENVELOPE_BYTES (65,536).",
            _padded_to(data, MAX_ENVELOPE_BYTES + 1),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "at the size limit",
            15,
            "The same, padded to exactly MAX_ENVELOPE_BYTES (65,536) bytes: not oversized, "
            "so it fails only at decryption.",
            _padded_to(data, MAX_ENVELOPE_BYTES),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "header does not parse (invalid UTF-8)",
            2,
            "The header's sender string JPN-ISA replaced by the seven bytes c3 28 ff ff ff ff "
            "ff (not UTF-8): the header does not parse as EnvelopeHeader.",
            envelope_pb2.Envelope(
                header=_bad_utf8(header, b"JPN-ISA"), sealed=sealed_part
            ).SerializeToString(),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "envelope truncated",
            2,
            "The envelope with its last byte cut off: the sealed field's length runs past the end.",
            data[:-1],
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "not canonical (unknown field)",
            "2a",
            "The envelope followed by 18 01 (field 3, varint 1), a field Envelope does not "
            "define. It parses, but is not the canonical encoding.",
            data + b"\x18\x01",
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "not canonical (fields reordered)",
            "2a",
            "The same two fields, sealed (2) before header (1).",
            _field(2, sealed_part) + _field(1, header),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "not canonical (field repeated)",
            "2a",
            "header (1) twice, then sealed (2). A parser keeps the last header (the same "
            "bytes), but the encoding is not canonical.",
            _field(1, header) + _field(1, header) + _field(2, sealed_part),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "not canonical (wire-type mismatch)",
            "2a",
            "The envelope followed by 08 01: field 1 (header, wire type 2) as a varint. A "
            "parser treats it as an unknown field; the encoding is not canonical.",
            data + b"\x08\x01",
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "message id too short",
            4,
            "message_id of 15 bytes.",
            _reenvelope(data, message_id=b"\x00" * 15),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "sender not a node id",
            4,
            "Header sender jpn-isa (lower case is not a node id, section 4).",
            _reenvelope(data, sender="jpn-isa"),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "recipient not a node id",
            4,
            "Header recipient PHL_DFA (an underscore is not allowed, section 4): malformed, "
            "before the recipient is compared (check 5).",
            _reenvelope(data, recipient="PHL_DFA"),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "sealed empty",
            4,
            "The header alone: Envelope.sealed is empty (absent).",
            envelope_pb2.Envelope(header=header).SerializeToString(),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "future dated by 1 ms past the skew",
            8,
            "The untouched envelope opened at created_at_ms - 300,001: created_at_ms is one "
            "millisecond beyond now_ms + max_skew_ms. (At exactly max_skew_ms it opens: "
            "opens_at_bounds.)",
            data,
            T_SEND_MS - skew - 1,
            None,
            [],
        ),
        (
            "expired by 1 ms",
            9,
            "The untouched envelope opened at created_at_ms + 604,800,001: one millisecond "
            "older than max_age_ms. (At exactly max_age_ms it opens: opens_at_bounds.)",
            data,
            T_SEND_MS + max_age + 1,
            None,
            [],
        ),
        (
            "malformed",
            2,
            "Bytes that do not parse as an Envelope.",
            b"\xff\xff\xff",
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "unsupported version",
            3,
            "Header version 2.",
            _reenvelope(data, version=2),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "wrong recipient",
            5,
            "Header recipient names another node (IOM-MNL).",
            _reenvelope(data, recipient="IOM-MNL"),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "unknown sender",
            7,
            "Header sender is a well-formed node id that PHL-DFA has not pinned.",
            _reenvelope(data, sender="XXA-TEST"),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "sender mismatch",
            6,
            "The untouched envelope delivered over a TLS connection authenticated as "
            "IOM-MNL (expected_sender), while its header names JPN-ISA.",
            data,
            T_OPEN_MS,
            "IOM-MNL",
            [],
        ),
        (
            "future dated",
            8,
            "created_at_ms is 5 minutes and 1 ms after the receiver's clock (skew 5 min).",
            _reenvelope(data, created_at_ms=T_OPEN_MS + 300_001),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "expired",
            9,
            "The untouched envelope opened 8 days after it was sealed (max age 7 days).",
            data,
            far,
            None,
            [],
        ),
        (
            "unknown signing key",
            10,
            "sender_key_id is not a signing key on JPN-ISA's card.",
            _reenvelope(data, sender_key_id=b"\x00" * 16),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "signing key revoked",
            11,
            "The untouched envelope, after PHL-DFA applied a revocation of JPN-ISA's "
            "signing key dated after created_at_ms: refused whatever date it claims.",
            data,
            T_OPEN_MS,
            None,
            [jpn_kid],
        ),
        (
            "signing key not yet valid",
            12,
            "created_at_ms one millisecond before the signing key's not_before_ms, opened at "
            "not_before_ms.",
            _reenvelope(data, created_at_ms=T_KEYS_MS - 1),
            T_KEYS_MS,
            None,
            [],
        ),
        (
            "unknown recipient key",
            13,
            "recipient_key_id is not a key PHL-DFA holds.",
            _reenvelope(data, recipient_key_id=b"\x00" * 16),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "suite mismatch",
            14,
            "Header suite says X25519 but the recipient key is MLKEM768-X25519.",
            _reenvelope(data, suite=types_pb2.SUITE_X25519_SHA256_AES256GCM),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "header altered",
            15,
            "created_at_ms moved back by one millisecond: the header no longer matches the "
            "HPKE info the sender used, so decryption fails.",
            _reenvelope(data, created_at_ms=T_SEND_MS - 1),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "ciphertext altered",
            15,
            "The last byte of the envelope (inside the AES-GCM tag) flipped.",
            data[:-1] + bytes([data[-1] ^ 0x01]),
            T_OPEN_MS,
            None,
            [],
        ),
        (
            "bad signature",
            17,
            "sealed-envelopes.json bad_signature: decrypts, but the signature is not "
            "JPN-ISA's. On the wire the same reason as a decryption failure.",
            bad_sig,
            T_OPEN_MS,
            None,
            [],
        ),
    ]
    cases += [
        (
            v["name"],
            v["check"],
            f"sealed-envelopes.json inner_failures {v['name']!r}: " + v["description"],
            bytes.fromhex(v["envelope"]),
            T_OPEN_MS,
            None,
            [],
        )
        for v in sealed["inner_failures"]
    ]
    order = list(CHECK_REASONS)
    cases.sort(key=lambda c: order.index(str(c[1])))
    vectors = []
    for name, check, description, env, now, expected_sender, revoked in cases:
        ring = Keyring.from_cards([jpn.card], [(k, T_SEND_MS + 60_000) for k in revoked])
        try:
            open_envelope(
                env,
                me=phl.identity,
                keyring=ring,
                now_ms=now,
                freshness=VECTOR_FRESHNESS,
                expected_sender=expected_sender,
            )
        except OpenError as exc:
            reason = exc.reason
        else:  # pragma: no cover - the generator itself checks its vectors
            raise RuntimeError(f"open failure vector {name!r} opened")
        if reason is not CHECK_REASONS[str(check)]:
            raise RuntimeError(f"open failure vector {name!r}: {reason} at check {check}")
        wire = wire_reason(reason)
        vectors.append(
            {
                "name": name,
                "check": str(check),
                "description": description,
                "envelope": h(env),
                "now_ms": now,
                "expected_sender": expected_sender,
                "revocations": [
                    {"key_id": h(k), "revoked_at_ms": T_SEND_MS + 60_000} for k in revoked
                ],
                "expected_reason": reason.value,
                "expected_wire_reason": wire,
                "expected_wire_reason_name": types_pb2.Reason.Name(wire),
            }
        )
    return doc(
        "Envelopes derived from sealed-envelopes.json vector fraud-notice-mlkem768-x25519 "
        "that PHL-DFA (holding only its own key and JPN-ISA's serial-1 card, skew 300,000 ms, "
        "max age 604,800,000 ms) must refuse. expected_wire_reason is what the receipt "
        "carries; expected_reason the internal code logged and audited. The checks run in "
        "the order of docs/protocol.md 8.4; `check` names the check each vector fails "
        "(the first that fails). `opens_at_bounds`: the untouched envelope opened at the "
        "exact freshness bounds, where it must open. " + COMMON,
        vectors,
        opens_at_bounds=opens_at_bounds(jpn, phl, data),
        limits={"MAX_ENVELOPE_BYTES": MAX_ENVELOPE_BYTES, "MAX_BODY_BYTES": MAX_BODY_BYTES},
    )


def opens_at_bounds(jpn: Node, phl: Node, data: bytes) -> list[dict[str, Any]]:
    """The envelope opened at now_ms = created_at_ms - skew and created_at_ms + max age."""
    vectors = []
    for name, description, now in (
        (
            "created at exactly now + max skew",
            "now_ms = created_at_ms - 300,000: created_at_ms <= now_ms + max_skew_ms holds "
            "with equality (check 8).",
            T_SEND_MS - 300_000,
        ),
        (
            "created at exactly now - max age",
            "now_ms = created_at_ms + 604,800,000: created_at_ms >= now_ms - max_age_ms "
            "holds with equality (check 9).",
            T_SEND_MS + 604_800_000,
        ),
    ):
        open_envelope(
            data,
            me=phl.identity,
            keyring=Keyring.from_cards([jpn.card]),
            now_ms=now,
            freshness=VECTOR_FRESHNESS,
        )
        vectors.append(
            {"name": name, "description": description, "envelope": h(data), "now_ms": now}
        )
    return vectors


# --- entry points -------------------------------------------------------------------------


def build(existing_sealed: dict[str, Any] | None) -> dict[str, str]:
    """Every vector file's text, keyed by file name, reusing ``existing_sealed``'s
    envelopes (None: seal new ones)."""
    jpn, phl = nodes()
    rotated = SigningKey.from_seed(seed(f"{jpn.node_id}/signing-2"))
    sealed = sealed_file(jpn, phl, existing_sealed)
    files = {
        "keys.json": keys_file(jpn, phl, rotated),
        "frame.json": frame_file(),
        "cards.json": cards_file(jpn, phl, rotated),
        "signatures.json": signatures_file(jpn, phl),
        SEALED_FILE: sealed,
        "receipt.json": receipt_file(jpn, phl, sealed),
        "open-failures.json": open_failures_file(jpn, phl, sealed),
    }
    assert tuple(files) == FILES
    return {name: render(obj) for name, obj in files.items()}


def load_committed_sealed(directory: Path = HERE) -> dict[str, Any] | None:
    path = directory / SEALED_FILE
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--regenerate", action="store_true", help="seal new envelopes (new HPKE randomness)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file would change"
    )
    args = parser.parse_args(argv)
    texts = build(None if args.regenerate else load_committed_sealed())
    changed = [
        n for n, t in texts.items() if not (HERE / n).exists() or (HERE / n).read_text() != t
    ]
    if args.check:
        for n in changed:
            print(f"{n}: differs from what generate.py produces")
        return 1 if changed else 0
    for name, text in texts.items():
        (HERE / name).write_text(text)
    print(f"wrote {len(texts)} files ({len(changed)} changed) in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
