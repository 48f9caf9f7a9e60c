"""C2SP tlog-cosignature, Ed25519 ``cosignature/v1``: a witness's signature on a
checkpoint, as one more signed-note line.

A cosignature line is ``— <witness name> base64(key ID || timestamp || signature)``:

- key ID: ``SHA-256(<name> || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]`` (0x04 is
  the cosignature/v1 signature type; a log's own Ed25519 note key uses 0x01);
- timestamp: 8 bytes, big-endian POSIX seconds, when the witness signed, never zero;
- signature: Ed25519 over ``"cosignature/v1\\n" "time <timestamp>\\n"`` followed by the
  whole checkpoint body (origin, size, root and any extension lines, each with its
  newline).

The witness states: as of that time, the largest consistent tree it has seen for that
origin has that root. Pure: bytes and values in, bytes and values out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.checkpoint import ED25519_ALG, SIGNATURE_PREFIX, split_note
from exchange_node.errors import ValidationError

COSIGNATURE_V1_ALG = b"\x04"
_HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key: ``name``, signature type (0x01 note, 0x04 cosignature/v1)
    and the raw Ed25519 public key. ``key_id`` is the 4-byte signed-note key ID."""

    name: str
    alg: bytes
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)

    def encode(self) -> str:
        """``<name>+<hex key ID>+<base64(type || public key)>``."""
        blob = base64.b64encode(self.alg + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: who (``witness``, its key), when (POSIX seconds), and
    the exact note line that carries it."""

    witness: VerifierKey
    timestamp: int
    line: str


def key_id(name: str, alg: bytes, public: bytes) -> bytes:
    """The signed-note key ID: ``SHA-256(name || 0x0A || type || public key)[:4]``."""
    _check_name(name)
    return hashlib.sha256(name.encode() + b"\n" + alg + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise ValidationError(
            "vkey_invalid", "key names are non-empty, without spaces or '+'", "name"
        )


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def witness_vkey(name: str, public_key: Ed25519PublicKey) -> VerifierKey:
    """The cosignature/v1 verifier key of a witness called ``name``."""
    _check_name(name)
    return VerifierKey(name, COSIGNATURE_V1_ALG, _raw(public_key))


def parse_vkey(text: str, *, alg: bytes | None = None) -> VerifierKey:
    """Parse a verifier key string; its stated key ID must match. With ``alg`` the key
    must be of that type. Raises ``vkey_invalid`` with what is wrong."""
    parts = text.strip().split("+", 2)  # the base64 key may hold "+" itself
    if len(parts) != 3:
        raise ValidationError("vkey_invalid", "a verifier key is <name>+<hex id>+<base64>", "vkey")
    name, hex_id, blob = parts
    _check_name(name)
    try:
        raw = base64.b64decode(blob, validate=True)
        stated = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise ValidationError(
            "vkey_invalid", "the key ID or key is not hex/base64", "vkey"
        ) from None
    if len(raw) != 33 or raw[:1] not in (ED25519_ALG, COSIGNATURE_V1_ALG):
        raise ValidationError(
            "vkey_invalid",
            "only Ed25519 keys are supported: type 0x01 (note) or 0x04 (cosignature/v1)",
            "vkey",
        )
    if alg is not None and raw[:1] != alg:
        raise ValidationError(
            "vkey_invalid", f"expected a key of signature type 0x{alg.hex()}", "vkey"
        )
    key = VerifierKey(name, raw[:1], raw[1:])
    if len(stated) != 4 or stated != key.key_id:
        raise ValidationError("vkey_invalid", "the key ID does not match the key", "vkey")
    return key


def signed_message(body: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header line, the time line, the checkpoint body."""
    return _HEADER + f"time {timestamp}\n".encode() + body


def cosign(body: bytes, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line (with its newline) of witness ``name`` over checkpoint
    ``body`` at ``timestamp`` (POSIX seconds, 1 to 2^63-1)."""
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise ValidationError("cosignature_time_invalid", "timestamp must be 1..2^63-1", "time")
    signature = private_key.sign(signed_message(body, timestamp))
    kid = key_id(name, COSIGNATURE_V1_ALG, _raw(private_key.public_key()))
    blob = kid + struct.pack(">Q", timestamp) + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def verify_cosignatures(note: str | bytes, witnesses: list[VerifierKey]) -> list[Cosignature]:
    """Every valid cosignature in ``note`` by one of ``witnesses`` (cosignature/v1 keys),
    at most one per witness. Lines of other keys are ignored; a line whose name and key
    ID match a witness but whose signature does not verify makes the note malformed
    (``cosignature_invalid``), as the signed-note spec requires."""
    body, signatures = split_note(note)
    text = note if isinstance(note, str) else note.decode()
    lines = text[text.rfind("\n\n") + 2 :].splitlines()
    found: dict[VerifierKey, Cosignature] = {}
    for sig, line in zip(signatures, lines, strict=True):
        for w in witnesses:
            if w.alg != COSIGNATURE_V1_ALG or sig.key_name != w.name or sig.key_hash != w.key_id:
                continue
            if len(sig.signature) != 8 + 64:
                raise ValidationError(
                    "cosignature_invalid", f"cosignature by {w.name!r} is not 72 bytes", "note"
                )
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            try:
                if timestamp > MAX_TIMESTAMP:
                    raise InvalidSignature
                w.public_key.verify(sig.signature[8:], signed_message(body, timestamp))
            except InvalidSignature:
                raise ValidationError(
                    "cosignature_invalid", f"cosignature by {w.name!r} does not verify", "note"
                ) from None
            if w not in found or timestamp > found[w].timestamp:
                found[w] = Cosignature(w, timestamp, line + "\n")
    return list(found.values())
