"""Single inclusion proofs (``exchange-node audit prove``), and checking one offline.

The file is one JSON object (``docs/audit-format.md`` section 6)::

    {"format": "exchange-node-audit-proof/1", "origin": "exchange-node.example/JPN-ISA",
     "seq": 5, "tree_size": 12, "leaf": "<base64 leaf bytes>", "leaf_hash": "<base64>",
     "proof": ["<base64 hash>", ...], "checkpoint": "<signed note text>",
     "record": {...the leaf parsed, for reading...}, "verifier_key": "<C2SP vkey>"}

:func:`verify_proof_file` checks it against keys the verifier trusts, never against
the ``verifier_key`` in the file (a claim, like a bundle's ``public_key``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit import merkle
from exchange_node.audit.bundle import key_fingerprint, signer_of
from exchange_node.audit.checkpoint import verify_log_checkpoint
from exchange_node.audit.leaf import KINDS, LeafRecord, decode_leaf
from exchange_node.audit.strict_json import duplicate_key
from exchange_node.errors import ValidationError

PROOF_FILE_FORMAT = "exchange-node-audit-proof/1"
_KEYS = {"format", "origin", "seq", "tree_size", "leaf", "leaf_hash", "proof", "checkpoint",
         "record", "verifier_key"}  # fmt: skip
_REQUIRED = _KEYS - {"verifier_key"}


@dataclass(frozen=True)
class ProofFileReport:
    ok: bool
    origin: str = ""
    seq: int = -1
    tree_size: int = 0
    key_fingerprint: str = ""
    record: LeafRecord | None = None
    problems: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


def _fail(problem: str, **kw: object) -> ProofFileReport:
    return ProofFileReport(False, problems=(problem,), **kw)  # type: ignore[arg-type]


def _b64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{field} is not standard padded base64") from None


def verify_proof_file(data: bytes, trusted_keys: Sequence[Ed25519PublicKey]) -> ProofFileReport:
    """Check an ``audit prove`` file offline against ``trusted_keys`` (the node's key, or
    every key it has had: the checkpoint is signed by the one current when it was).

    Checks, in order: one value per key (``proof_duplicate_key``); exactly the keys of
    the format (``proof_malformed``); the checkpoint is signed by a trusted key
    (``proof_key_untrusted``) for ``origin`` and has ``tree_size`` entries
    (``proof_size_mismatch``); ``leaf_hash`` is the leaf's hash (``proof_leaf_hash_mismatch``);
    the inclusion proof leads to the signed root (``proof_not_in_tree``); the leaf is a
    canonical leaf (``proof_leaf_invalid``) recording ``seq`` (``proof_seq_mismatch``) and
    ``record`` is that leaf (``proof_record_mismatch``). Never raises for a bad file.
    """
    dup = duplicate_key(data)
    if dup is not None:
        return _fail(f"proof_duplicate_key: the key {dup!r} appears twice in one object")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return _fail(f"proof_malformed: not JSON: {exc}")
    if not isinstance(doc, dict):
        return _fail("proof_malformed: not a JSON object")
    if doc.get("format") != PROOF_FILE_FORMAT:
        return _fail(f"proof_format_unknown: {doc.get('format')!r}, expected {PROOF_FILE_FORMAT!r}")
    missing, unknown = _REQUIRED - doc.keys(), doc.keys() - _KEYS
    if missing or unknown:
        what = ", ".join([*(f"missing {k}" for k in sorted(missing)),
                          *(f"unknown {k}" for k in sorted(unknown))])  # fmt: skip
        return _fail(f"proof_malformed: {what}")
    origin, seq, size, note = doc["origin"], doc["seq"], doc["tree_size"], doc["checkpoint"]
    if not isinstance(origin, str) or not isinstance(note, str):
        return _fail("proof_malformed: origin and checkpoint are strings")
    if type(seq) is not int or type(size) is not int or seq < 0 or size < 0:
        return _fail("proof_malformed: seq and tree_size are non-negative integers")
    try:
        leaf = _b64(doc["leaf"], "leaf")
        leaf_hash = _b64(doc["leaf_hash"], "leaf_hash")
        if not isinstance(doc["proof"], list):
            raise ValueError("proof is not a list")
        path = [_b64(h, f"proof[{i}]") for i, h in enumerate(doc["proof"])]
    except ValueError as exc:
        return _fail(f"proof_malformed: {exc}")
    raw = [k.public_bytes(Encoding.Raw, PublicFormat.Raw) for k in trusted_keys]
    signer = signer_of(note, origin, raw)
    if signer is None:
        return _fail(
            f"proof_key_untrusted: the checkpoint is not a checkpoint of {origin!r} signed by"
            " the key(s) given; give every key the node has had (`keys show` lists them)",
            origin=origin,
            seq=seq,
        )
    cp = verify_log_checkpoint(note, origin, Ed25519PublicKey.from_public_bytes(signer))
    if cp.checkpoint.origin != origin:
        return _fail(
            f"proof_malformed: origin is {origin!r}, the checkpoint's {cp.checkpoint.origin!r}"
        )
    base = {"origin": origin, "seq": seq, "tree_size": cp.tree_size,
            "key_fingerprint": key_fingerprint(signer)}  # fmt: skip
    if cp.tree_size != size:
        return _fail(
            f"proof_size_mismatch: tree_size is {size}, the checkpoint's {cp.tree_size}", **base
        )
    if leaf_hash != merkle.leaf_hash(leaf):
        return _fail("proof_leaf_hash_mismatch: leaf_hash is not the hash of leaf", **base)
    try:
        merkle.verify_inclusion(seq, size, leaf_hash, path, cp.root_hash)
    except ValidationError as exc:
        return _fail(f"proof_not_in_tree: {exc}", **base)
    try:
        record = decode_leaf(leaf, known_kinds_only=False)
    except ValidationError as exc:
        return _fail(f"proof_leaf_invalid: proved but unreadable: {exc}", **base)
    if record.seq != seq:
        return _fail(f"proof_seq_mismatch: the leaf records seq {record.seq}", **base)
    if doc["record"] != json.loads(leaf):
        return _fail("proof_record_mismatch: record is not the proved leaf; read leaf", **base)
    notices = ()
    if record.kind not in KINDS:
        notices = (
            f"kind_unknown: {record.kind!r} is not a kind this verifier knows (a later"
            " version's); the entry is proved and accepted",
        )
    return ProofFileReport(True, record=record, notices=notices, **base)  # type: ignore[arg-type]
