"""Shared material for the protocol-core tests: deterministic identities, pinned
keyrings, a fixed clock, sample bodies and a hand-crafting kit for envelopes.

A plain module (not conftest.py) so each test file states what it uses. Every key is
derived from a label, so a failing test reproduces with the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from exchange_node.pb.exchange.v1 import card_pb2, envelope_pb2, notice_pb2
from exchange_node.protocol.cards import CardKey, PeerCard, issue_card, verify_card
from exchange_node.protocol.envelope import PROTOCOL_VERSION, hpke_info, signature_input
from exchange_node.protocol.framing import LABEL_CARD_SIGNATURE, frame
from exchange_node.protocol.keyring import Keyring, LocalIdentity
from exchange_node.protocol.keys import EncryptionKey, SigningKey, Suite, hpke_public_key

# The fixed clock every test reads: 2026-05-28T20:26:40Z.
NOW_MS = 1_780_000_000_000
MINUTE_MS = 60 * 1000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Cards are valid from a year before the clock.
KEYS_FROM_MS = NOW_MS - 365 * DAY_MS
# Stands in for a DER certificate: cards only hash it.
TLS_CERTIFICATE = b"test tls certificate"

BOTH_SUITES = (Suite.MLKEM768_X25519, Suite.X25519)


def seed(label: str, length: int) -> bytes:
    """``length`` deterministic bytes for ``label``."""
    return hashlib.shake_256(label.encode()).digest(length)


def signing_key(label: str) -> SigningKey:
    return SigningKey.from_seed(seed(f"sign/{label}", 32))


def encryption_key(label: str, suite: Suite) -> EncryptionKey:
    length = 96 if suite is Suite.MLKEM768_X25519 else 32
    return EncryptionKey.from_seed(suite, seed(f"enc/{suite.name}/{label}", length))


@dataclass(frozen=True)
class Node:
    """One test node: its private keys and its SignedCard bytes."""

    node_id: str
    signing_keys: tuple[SigningKey, ...]
    encryption_keys: tuple[EncryptionKey, ...]
    signed_card: bytes

    @property
    def signing_key(self) -> SigningKey:
        return self.signing_keys[0]

    @property
    def identity(self) -> LocalIdentity:
        return LocalIdentity(self.node_id, self.signing_keys[0], self.encryption_keys)

    @property
    def card(self) -> PeerCard:
        return verify_card(self.signed_card)

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint


COUNTRIES = {"JPN-ISA": "JPN", "PHL-DFA": "PHL", "IOM-MNL": "XOM"}


@functools.cache
def make_node(
    node_id: str,
    suite: Suite = Suite.MLKEM768_X25519,
    *,
    generation: int = 0,
    signing_not_before_ms: int = KEYS_FROM_MS,
    signing_not_after_ms: int = 0,
) -> Node:
    """A node with one signing key and one encryption key of ``suite``. Different
    ``generation`` values give different keys for the same node id (a stranger who
    claims the name)."""
    sk = signing_key(f"{node_id}/{generation}")
    ek = encryption_key(f"{node_id}/{generation}", suite)
    signed = issue_card(
        node_id=node_id,
        country=COUNTRIES.get(node_id, "UNO"),
        endpoint=f"https://{node_id.lower()}.example:8443",
        display_name=f"Test authority {node_id}",
        signing_keys=[CardKey(sk, signing_not_before_ms, signing_not_after_ms)],
        encryption_keys=[CardKey(ek, KEYS_FROM_MS)],
        tls_certificate=TLS_CERTIFICATE,
        serial=1,
        issued_at_ms=KEYS_FROM_MS,
    )
    return Node(node_id, (sk,), (ek,), signed)


def rotated(
    node: Node,
    *,
    label: str = "rotated",
    new_signing: bool = True,
    new_encryption: bool = True,
    keep_old_encryption: bool = True,
    keep_old_signing: bool = False,
    signed_by_previous: bool = True,
    serial: int | None = None,
) -> Node:
    """The successor of ``node``: new keys first, optionally the old ones after them,
    signed by the new current key and (by default) by the old current signing key."""
    old = node.card
    suite = node.encryption_keys[0].suite
    sks = list(node.signing_keys)
    if new_signing:
        sks = [signing_key(f"{node.node_id}/{label}")] + (sks if keep_old_signing else [])
    eks = list(node.encryption_keys)
    if new_encryption:
        new_ek = encryption_key(f"{node.node_id}/{label}", suite)
        eks = [new_ek] + (eks if keep_old_encryption else [])
    signed = issue_card(
        node_id=node.node_id,
        country=old.country,
        endpoint=old.endpoint,
        display_name=old.display_name,
        signing_keys=[CardKey(k, KEYS_FROM_MS) for k in sks],
        encryption_keys=[CardKey(k, KEYS_FROM_MS) for k in eks],
        tls_certificate=old.tls_certificate,
        serial=old.serial + 1 if serial is None else serial,
        issued_at_ms=NOW_MS,
        previous_signing_key=node.signing_key if signed_by_previous else None,
    )
    return Node(node.node_id, tuple(sks), tuple(eks), signed)


def pinned_keyring(*nodes: Node) -> Keyring:
    """A keyring that pinned each node's card after comparing its fingerprint."""
    ring = Keyring()
    for node in nodes:
        ring.pin(node.signed_card, node.fingerprint)
    return ring


# --- bodies ----------------------------------------------------------------------------


def fraud_notice_body(
    remarks: str = "Laminate lifted on the data page; photo substituted.",
) -> bytes:
    """A serialized Body carrying a fraud detection notice (about 600 bytes with the
    default padding of :func:`typical_body`)."""
    return notice_pb2.Body(
        fraud_notice=notice_pb2.FraudDetectionNotice(
            notice_id=seed("notice", 16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL",
                document_type="P",
                document_number="P1234567A",
                mrz=(
                    "P<PHLSPECIMEN<<MARIA<<<<<<<<<<<<<<<<<<<<<<<<\n"
                    "P1234567A1PHL8001014F3001019<<<<<<<<<<<<<<00"
                ),
            ),
            fraud_type=notice_pb2.FRAUD_TYPE_FORGED,
            detected_at_ms=NOW_MS - HOUR_MS,
            detection_place="JPNRT",
            detecting_authority="Immigration Services Agency, Narita",
            remarks=remarks,
        )
    ).SerializeToString()


def typical_body() -> bytes:
    """A notice body of about 600 bytes, the size the benchmark uses."""
    return fraud_notice_body("Observed at primary inspection. " * 13)


def ping_body(nonce: bytes = b"\x01" * 8) -> bytes:
    return notice_pb2.Body(ping=notice_pb2.Ping(nonce=nonce)).SerializeToString()


# --- hand-crafted envelopes -------------------------------------------------------------


def header_bytes(sender: Node, recipient: Node, /, **overrides: object) -> bytes:
    """An EnvelopeHeader from ``sender`` to ``recipient``'s current encryption key, with
    any field replaced by ``overrides`` (``None`` leaves a field unset)."""
    rkey = recipient.encryption_keys[0]
    fields: dict[str, object] = {
        "version": PROTOCOL_VERSION,
        "message_id": seed("message-id", 16),
        "sender": sender.node_id,
        "recipient": recipient.node_id,
        "created_at_ms": NOW_MS,
        "sender_key_id": sender.signing_key.key_id,
        "recipient_key_id": rkey.key_id,
        "suite": rkey.suite.value,
    }
    fields.update(overrides)
    present = {k: v for k, v in fields.items() if v is not None}
    return envelope_pb2.EnvelopeHeader(**present).SerializeToString()  # type: ignore[arg-type]


def craft_envelope(
    header: bytes,
    body: bytes,
    *,
    signer: SigningKey,
    to: EncryptionKey,
    signature: bytes | None = None,
    plaintext: bytes | None = None,
) -> bytes:
    """Build an envelope by hand with the same primitives as ``seal``: sign header and
    body with ``signer`` (or use ``signature``), HPKE-seal the SignedBody (or
    ``plaintext``) to ``to`` with the header bound into ``info``."""
    if plaintext is None:
        sig = signer.sign(signature_input(header, body)) if signature is None else signature
        plaintext = envelope_pb2.SignedBody(body=body, signature=sig).SerializeToString()
    public = hpke_public_key(to.suite.key_algorithm, to.public)
    sealed = to.suite.hpke.encrypt(plaintext, public, info=hpke_info(header))
    return envelope_pb2.Envelope(header=header, sealed=sealed).SerializeToString()


def sign_card_bytes(card: card_pb2.NodeCard, *signers: SigningKey) -> bytes:
    """SignedCard bytes for a hand-built NodeCard, signed by each of ``signers``."""
    card_bytes = card.SerializeToString()
    message = frame(LABEL_CARD_SIGNATURE, card_bytes)
    return card_pb2.SignedCard(
        card=card_bytes,
        signatures=[
            card_pb2.CardSignature(key_id=s.key_id, signature=s.sign(message)) for s in signers
        ],
    ).SerializeToString()
