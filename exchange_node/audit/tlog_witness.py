"""The C2SP tlog-witness ``add-checkpoint`` call, both ends, without I/O.

Request body: ``old <size>\\n``, zero to 63 lines of one base64 hash each (the RFC 6962
consistency proof from ``old`` to the checkpoint's size), an empty line, the signed
checkpoint. The witness answers 200 with its cosignature line(s), or refuses:

- 400 malformed request, or ``old`` larger than the checkpoint's size;
- 404 a log (origin) this witness does not witness;
- 403 no signature by a key trusted for that origin, or one that does not verify;
- 409 ``old`` is not the size it last cosigned for that origin (body: that size and a
  newline, ``Content-Type: text/x.tlog.size``); the client retries with it;
- 422 a size-0 checkpoint without the empty root, a proof given with ``old 0``, the
  same size with another root, or a consistency proof that does not verify.

Checking ``old`` against the stored size and storing the new one must be one atomic
step (else a late request could roll the witness back): :func:`add_checkpoint` is a pure
decision the caller runs inside the transaction that stores its outcome.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import (
    Checkpoint,
    parse_checkpoint,
    verify_checkpoint,
)
from exchange_node.errors import ValidationError

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 * 1024 + 64 * 50
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class WitnessRefusal(Exception):
    """A refused ``add-checkpoint``: HTTP ``status``, a stable ``code``, a message a
    person can act on; ``latest_size`` for 409. ``origin`` is set once known, and
    ``authentic`` once the checkpoint's signature verified (such refusals may be
    evidence of a misbehaving log)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        origin: str = "",
        authentic: bool = False,
        latest_size: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.origin, self.authentic, self.latest_size = origin, authentic, latest_size


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


@dataclass(frozen=True)
class LogState:
    """What a witness keeps per log: the latest checkpoint it cosigned."""

    tree_size: int
    root: bytes


@dataclass(frozen=True)
class Cosigned:
    """An accepted checkpoint: store ``checkpoint`` as the log's state, answer
    ``cosignature``."""

    checkpoint: Checkpoint
    note: str
    old_size: int
    cosignature: str


def _parse_size(text: str) -> int:
    if not _SIZE.fullmatch(text) or int(text) >= 2**63:
        raise ValueError("a size is decimal digits without leading zeros")
    return int(text)


def encode_request(old_size: int, proof: Sequence[bytes], note: str | bytes) -> bytes:
    """The request body a log sends."""
    if len(proof) > MAX_PROOF_LINES:
        raise ValidationError("proof_too_long", "at most 63 proof hashes", "proof")
    head = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return head.encode() + b"\n" + (note.encode() if isinstance(note, str) else note)


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse a request body; ``WitnessRefusal(400)`` if it is not one."""

    def bad(message: str) -> WitnessRefusal:
        return WitnessRefusal(400, "request_malformed", message)

    sep = body.find(b"\n\n")
    if sep < 0:
        raise bad("the body needs an 'old <size>' line, proof lines, an empty line, a checkpoint")
    try:
        lines = body[: sep + 1].decode("ascii").split("\n")[:-1]
    except UnicodeDecodeError:
        raise bad("the lines before the checkpoint must be ASCII") from None
    if not lines[0].startswith("old "):
        raise bad("the first line must be 'old <size>'")
    try:
        old_size = _parse_size(lines[0][4:])
    except ValueError as exc:
        raise bad(f"old size: {exc}") from None
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise bad(f"at most {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for i, line in enumerate(lines[1:]):
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            h = b""
        if len(h) != merkle.HASH_SIZE or base64.b64encode(h).decode() != line:
            raise bad(f"proof line {i + 1} is not one base64 SHA-256 hash")
        proof.append(h)
    return AddCheckpoint(old_size, tuple(proof), body[sep + 2 :])


def add_checkpoint(
    request: AddCheckpoint,
    log_keys: Callable[[str], Sequence[Ed25519PublicKey] | None],
    state: Callable[[str], LogState | None],
    sign: Callable[[bytes], str],
) -> Cosigned:
    """Decide a request, in the order of the specification. ``log_keys(origin)``: the
    keys trusted for a log, None for a log not witnessed; ``state(origin)``: what was
    last cosigned for it (None: nothing yet), read in the caller's transaction; ``sign(body)``: the witness's cosignature line(s).

    Raises :class:`WitnessRefusal`; never changes anything itself.
    """
    try:
        claimed = parse_checkpoint(request.note)[0]  # unverified: only picks the keys
    except ValidationError as exc:
        raise WitnessRefusal(400, "checkpoint_malformed", f"not a checkpoint: {exc}") from None
    origin = claimed.origin
    keys = log_keys(origin)
    if keys is None:
        raise WitnessRefusal(404, "log_unknown", f"this witness does not witness {origin!r}")
    checkpoint = _verified(request.note, origin, keys)
    size, root = checkpoint.tree_size, checkpoint.root_hash

    def refuse(status: int, code: str, message: str, latest: int | None = None) -> WitnessRefusal:
        return WitnessRefusal(
            status, code, message, origin=origin, authentic=True, latest_size=latest
        )

    if request.old_size > size:
        raise refuse(400, "old_size_too_large", f"old size {request.old_size} > size {size}")
    held = state(origin)
    latest = held.tree_size if held is not None else 0
    if request.old_size != latest:
        raise refuse(
            409, "old_size_mismatch", f"the latest size cosigned is {latest}", latest=latest
        )
    if size == 0 and root != merkle.EMPTY_ROOT:
        raise refuse(422, "empty_root_invalid", "a tree of size 0 has the empty root")
    if request.old_size == 0:
        if request.proof:
            raise refuse(422, "proof_unexpected", "no consistency proof from size 0")
    elif request.old_size == size:
        assert held is not None
        if root != held.root:
            raise refuse(422, "root_mismatch", f"another root at size {size}: a fork")
    else:
        assert held is not None
        try:
            merkle.verify_consistency(request.old_size, size, held.root, root, request.proof)
        except ValidationError as exc:
            raise refuse(422, "consistency_proof_invalid", f"{exc.message}") from None
    body = checkpoint.body()
    return Cosigned(checkpoint, request.note.decode(), request.old_size, sign(body))


def _verified(note: bytes, origin: str, keys: Sequence[Ed25519PublicKey]) -> Checkpoint:
    for key in keys:
        try:
            return verify_checkpoint(note, origin, key, origin=origin).checkpoint
        except ValidationError as exc:
            if exc.code != "note_signature_missing":
                raise WitnessRefusal(
                    403, "signature_invalid", f"checkpoint: {exc.message}", origin=origin
                ) from None
    raise WitnessRefusal(
        403, "signature_missing", f"no signature by a key trusted for {origin!r}", origin=origin
    )


def parse_cosignatures(body: bytes) -> list[str]:
    """The signature lines of a 200 answer (each with its newline); ValueError if the
    body is not one or more ``— `` lines."""
    text = body.decode()
    if not text.endswith("\n"):
        raise ValueError("the answer does not end with a newline")
    lines = text[:-1].split("\n")
    if not lines or any(not line.startswith("\u2014 ") for line in lines):
        raise ValueError("the answer is not signature lines")
    return [line + "\n" for line in lines]


def parse_size_body(body: bytes) -> int:
    """The body of a 409 answer; ValueError if it is not a size and a newline."""
    text = body.decode("ascii")
    if not text.endswith("\n"):
        raise ValueError("the size does not end with a newline")
    return _parse_size(text[:-1])
