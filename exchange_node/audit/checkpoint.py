"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes.

A checkpoint commits to a log's size and root. Its text (the *note*) is::

    <origin>\\n
    <tree size in decimal>\\n
    <base64 root hash>\\n
    \\n
    — <key name> <base64(key hash || Ed25519 signature)>\\n

The signature covers the body: the three lines, each with its newline. The key hash is
the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key),
which lets a verifier skip signatures from keys it does not hold. Extension lines
after the root are accepted when parsing and kept, never produced. Verification checks
the signature first and then the body; every failure raises
:class:`~exchange_node.errors.ValidationError` with one of the codes below.

Codes: ``note_malformed`` (not a signed note), ``note_signature_missing`` (no signature
by the expected key), ``note_signature_invalid`` (a signature by that key that does not
verify), ``checkpoint_malformed`` (a note whose body is not a checkpoint),
``checkpoint_origin_mismatch`` (a checkpoint of another log).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit.merkle import HASH_SIZE
from exchange_node.errors import ValidationError

SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
ED25519_ALG = b"\x01"
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 64 * 1024
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


ORIGIN_HOST = "exchange-node.example"
"""The first part of every log's origin. A schema-less URL under a name reserved by
RFC 2606 (``.example`` is never delegated): no log of another ecosystem can hold it, and
no operator has to own a domain for their log to be named."""

_LEGACY = re.compile(r"exchange-node/([A-Z0-9][A-Z0-9-]{1,31})/audit")
_CURRENT = re.compile(re.escape(ORIGIN_HOST) + r"/([A-Z0-9][A-Z0-9-]{1,31})")


def origin_for(node_id: str) -> str:
    """The origin line (and key name) of a node's audit log,
    ``exchange-node.example/<node id>`` (tlog-checkpoint: a schema-less URL)."""
    return f"{ORIGIN_HOST}/{node_id}"


def legacy_origin_for(node_id: str) -> str:
    """The origin the log had before ``exchange-node.example/<node id>``: checkpoints
    signed under it stay valid (``docs/audit-format.md`` section 4b)."""
    return f"exchange-node/{node_id}/audit"


def node_of_origin(origin: str) -> str | None:
    """The node id whose log ``origin`` names (either form), or None."""
    match = _CURRENT.fullmatch(origin) or _LEGACY.fullmatch(origin)
    return match.group(1) if match else None


def log_origins(origin: str) -> tuple[str, ...]:
    """Every origin under which checkpoints of the log ``origin`` may be signed: the
    node's current origin first, then its legacy one. An origin of no node: itself."""
    node = node_of_origin(origin)
    return (origin,) if node is None else (origin_for(node), legacy_origin_for(node))


def same_log(a: str, b: str) -> bool:
    """Whether two origins name the same log (equal, or one node's two origins)."""
    return b in log_origins(a)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint commits to: ``tree_size`` leaves with ``root_hash``."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        """The signed note body: origin, size, base64 root and extensions, one per line."""
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode()]
        return ("\n".join([*lines, *self.extensions]) + "\n").encode()


@dataclass(frozen=True)
class NoteSignature:
    key_name: str
    key_hash: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the exact note text that carries its signatures."""

    checkpoint: Checkpoint
    note: str

    @property
    def tree_size(self) -> int:
        return self.checkpoint.tree_size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def _public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_key_name(key_name: str) -> None:
    if not key_name or any(c.isspace() or c == "+" for c in key_name):
        raise ValidationError(
            "note_key_name_invalid", "key names are non-empty, without spaces or '+'", "key_name"
        )


def key_hash(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte C2SP signed-note key hash of an Ed25519 key under ``key_name``."""
    _check_key_name(key_name)
    material = key_name.encode() + b"\n" + ED25519_ALG + _public_bytes(public_key)
    return hashlib.sha256(material).digest()[:4]


def verifier_key(key_name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP vkey string ``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
    encoded = base64.b64encode(ED25519_ALG + _public_bytes(public_key)).decode()
    return f"{key_name}+{key_hash(key_name, public_key).hex()}+{encoded}"


def sign_checkpoint(
    checkpoint: Checkpoint, private_key: Ed25519PrivateKey, key_name: str
) -> SignedCheckpoint:
    """Sign ``checkpoint`` as ``key_name``; returns it with its note text."""
    if len(checkpoint.root_hash) != HASH_SIZE:
        raise ValidationError("checkpoint_malformed", "root hash must be 32 bytes", "root_hash")
    _check_origin(checkpoint.origin)
    body = checkpoint.body()
    signature = private_key.sign(body)
    kh = key_hash(key_name, private_key.public_key())
    line = f"{SIGNATURE_PREFIX}{key_name} {base64.b64encode(kh + signature).decode()}\n"
    return SignedCheckpoint(checkpoint, body.decode() + "\n" + line)


def _malformed(message: str, field: str = "note") -> ValidationError:
    return ValidationError("note_malformed", message, field)


def _b64decode(text: str, field: str, code: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4:
        raise ValidationError(code, f"{field} is not standard padded base64", field)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValidationError(code, f"{field} is not standard padded base64", field) from None


def split_note(note: str | bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its body bytes and its signatures; signatures unchecked.

    Raises ``note_malformed`` unless the text is UTF-8 without control characters other
    than newline, ends with a newline, has a body, a blank line and 1-100 well-formed
    signature lines.
    """
    if isinstance(note, str):
        try:
            raw = note.encode()
        except UnicodeEncodeError:
            raise _malformed("note is not valid UTF-8") from None
    else:
        raw = note
    if len(raw) > MAX_NOTE_BYTES:
        raise _malformed(f"note is longer than {MAX_NOTE_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise _malformed("note is not valid UTF-8") from None
    if any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in text):
        raise _malformed("note contains control characters")
    if not text.endswith("\n"):
        raise _malformed("note does not end with a newline")
    sep = text.rfind("\n\n")
    if sep < 0:
        raise _malformed("note has no blank line before its signatures")
    body = text[: sep + 1]
    if not body.strip("\n") or body.startswith("\n"):
        raise _malformed("note body is empty")
    sig_lines = text[sep + 2 : -1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise _malformed(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in sig_lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise _malformed("signature line does not start with an em dash and a space")
        parts = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(parts) != 2 or not parts[0] or "+" in parts[0]:
            raise _malformed("signature line is not '— <key name> <base64>'")
        blob = _b64decode(parts[1], "signature", "note_malformed")
        if len(blob) < 5:
            raise _malformed("signature is shorter than a key hash and one byte")
        signatures.append(NoteSignature(parts[0], blob[:4], blob[4:]))
    return body.encode(), signatures


def _check_origin(origin: str) -> None:
    if not origin or origin != origin.strip() or "\n" in origin:
        raise ValidationError("checkpoint_malformed", "origin must be a non-empty line", "origin")


def parse_checkpoint_body(body: bytes) -> Checkpoint:
    """Parse a tlog-checkpoint body. Raises ``checkpoint_malformed``."""
    lines = body.decode().split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise ValidationError(
            "checkpoint_malformed", "body needs origin, size and root lines", "checkpoint"
        )
    origin, size_text, root_text, *extensions = lines[:-1]
    _check_origin(origin)
    if not _SIZE.fullmatch(size_text) or int(size_text) >= 2**63:
        raise ValidationError(
            "checkpoint_malformed",
            "tree size must be a decimal number without leading zeros",
            "tree_size",
        )
    root_hash = _b64decode(root_text, "root_hash", "checkpoint_malformed")
    if len(root_hash) != HASH_SIZE:
        raise ValidationError("checkpoint_malformed", "root hash must be 32 bytes", "root_hash")
    if any(not line for line in extensions):
        raise ValidationError(
            "checkpoint_malformed", "extension lines must not be empty", "checkpoint"
        )
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))


def parse_checkpoint(note: str | bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint WITHOUT verifying it: for display and diagnostics only."""
    body, signatures = split_note(note)
    return parse_checkpoint_body(body), signatures


def verify_checkpoint(
    note: str | bytes,
    key_name: str,
    public_key: Ed25519PublicKey,
    *,
    origin: str | None = None,
) -> SignedCheckpoint:
    """Verify a signed checkpoint by ``key_name``/``public_key`` and return it.

    The signature is checked before the body is parsed. If ``origin`` is given the
    checkpoint must be for that log. Raises ``ValidationError`` (codes above).
    """
    body, signatures = split_note(note)
    kh = key_hash(key_name, public_key)
    candidates = [s for s in signatures if s.key_name == key_name and s.key_hash == kh]
    if not candidates:
        raise ValidationError(
            "note_signature_missing", f"note carries no signature by key {key_name!r}", "note"
        )
    # As in the reference implementation: one bad signature by a trusted key rejects the
    # whole note, even if another by that key verifies.
    for sig in candidates:
        try:
            public_key.verify(sig.signature, body)
        except InvalidSignature:
            raise ValidationError(
                "note_signature_invalid", f"signature by key {key_name!r} does not verify", "note"
            ) from None
    checkpoint = parse_checkpoint_body(body)
    if origin is not None and checkpoint.origin != origin:
        raise ValidationError(
            "checkpoint_origin_mismatch",
            f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}",
            "origin",
        )
    text = note if isinstance(note, str) else note.decode()
    return SignedCheckpoint(checkpoint, text)


def verify_log_checkpoint(
    note: str | bytes, origin: str, public_key: Ed25519PublicKey
) -> SignedCheckpoint:
    """Verify a checkpoint of the log ``origin`` signed by ``public_key`` under the log's
    current origin or, for checkpoints signed before the origin changed, its legacy one
    (``log_origins``). The checkpoint's origin line is its key name. Raises like
    :func:`verify_checkpoint`; ``note_signature_missing`` when neither name carries a
    signature by the key."""
    error: ValidationError | None = None
    for name in log_origins(origin):
        try:
            return verify_checkpoint(note, name, public_key, origin=name)
        except ValidationError as exc:
            if exc.code != "note_signature_missing":
                raise
            error = error or exc
    assert error is not None
    raise error
