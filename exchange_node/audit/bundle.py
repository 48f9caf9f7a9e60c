"""Audit bundles: chosen leaves with inclusion proofs, checkable offline by anyone.

A bundle is one JSON object (``docs/audit-format.md`` specifies it for auditors who
write their own verifier)::

    {"format": "exchange-node-audit-bundle/1",
     "origin": "exchange-node/JPN-ISA/audit",
     "public_key": "<base64, 32-byte Ed25519 key>",
     "verifier_key": "<C2SP vkey of the same key>",
     "checkpoint": "<signed note text>",
     "leaves": [{"seq": 5, "data": "<base64 leaf bytes>", "proof": ["<base64 hash>", ...]}]}

Every proof is against the one checkpoint in the bundle. The key in the bundle is what
the log *claims*; an auditor compares its fingerprint with one obtained out of band, or
passes the trusted key to :func:`verify_bundle`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import verifier_key, verify_checkpoint
from exchange_node.audit.leaf import LeafRecord, decode_leaf
from exchange_node.audit.log import AuditLog, StoredLeaf
from exchange_node.errors import NotFoundError, ValidationError

BUNDLE_FORMAT = "exchange-node-audit-bundle/1"


class BundleLeaf(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    data: bytes
    proof: list[bytes]


class Bundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    origin: str
    public_key: bytes
    verifier_key: str
    checkpoint: str
    leaves: list[BundleLeaf]


@dataclass(frozen=True)
class BundleReport:
    """What :func:`verify_bundle` found. ``ok`` only if every leaf verified and the
    checkpoint is signed by the bundle's key (and by ``trusted_key`` if one was given).

    ``key_fingerprint`` is SHA-256 of the raw public key, hex: compare it with the one
    the node's operator gave you out of band.
    """

    ok: bool
    origin: str
    tree_size: int
    root_hash: bytes
    key_fingerprint: str
    key_trusted: bool
    leaves: tuple[LeafRecord, ...]
    problems: tuple[str, ...]


def key_fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def export_bundle(log: AuditLog, leaves: Iterable[StoredLeaf], public_key: bytes) -> bytes:
    """A bundle of ``leaves`` proved against ``log``'s latest signed checkpoint.

    Leaves the checkpoint does not cover yet are left out (sign a checkpoint first to
    include them). ``public_key`` is the log's raw Ed25519 public key; the checkpoint
    must verify under it. Raises ``checkpoint_not_found`` without a checkpoint.
    """
    cp = log.latest_checkpoint()
    if cp is None:
        raise NotFoundError("checkpoint_not_found", "sign a checkpoint before exporting", "log")
    key = Ed25519PublicKey.from_public_bytes(public_key)
    verify_checkpoint(cp.note, log.origin, key, origin=log.origin)
    out = []
    for leaf in leaves:
        if leaf.seq >= cp.tree_size:
            break
        proof = log.inclusion_proof(leaf.seq, cp.tree_size)
        out.append(BundleLeaf(leaf.seq, proof.leaf, list(proof.hashes)))
    bundle = Bundle(
        format=BUNDLE_FORMAT,
        origin=log.origin,
        public_key=public_key,
        verifier_key=verifier_key(log.origin, key),
        checkpoint=cp.note,
        leaves=out,
    )
    return msgspec.json.format(msgspec.json.encode(bundle), indent=1) + b"\n"


def verify_bundle(data: bytes, trusted_key: Ed25519PublicKey | None = None) -> BundleReport:
    """Check a bundle offline: checkpoint signature, then each leaf's inclusion proof.

    Never raises for a bad bundle: every problem is in the report. Leaves whose proof
    fails are listed as problems and left out of ``leaves``.
    """
    try:
        bundle = msgspec.json.decode(data, type=Bundle)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _failed(f"bundle_malformed: {exc}")
    if bundle.format != BUNDLE_FORMAT:
        return _failed(f"bundle_format_unknown: {bundle.format!r}, expected {BUNDLE_FORMAT!r}")
    fingerprint = key_fingerprint(bundle.public_key)
    try:
        key = Ed25519PublicKey.from_public_bytes(bundle.public_key)
    except ValueError:
        return _failed("bundle_key_invalid: public_key is not a 32-byte Ed25519 key")
    problems: list[str] = []
    trusted = False
    if trusted_key is not None:
        raw = trusted_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        trusted = raw == bundle.public_key
        if not trusted:
            problems.append("bundle_key_untrusted: the bundle's key is not the trusted key")
    if bundle.verifier_key != verifier_key(bundle.origin, key):
        problems.append("bundle_key_mismatch: verifier_key and public_key differ")
    try:
        cp = verify_checkpoint(bundle.checkpoint, bundle.origin, key, origin=bundle.origin)
    except ValidationError as exc:
        return _failed(f"checkpoint: {exc}", origin=bundle.origin, fingerprint=fingerprint)
    records = []
    seen = set()
    for i, leaf in enumerate(bundle.leaves):
        where = f"leaves[{i}] (seq {leaf.seq})"
        if leaf.seq in seen:
            problems.append(f"{where}: leaf_duplicate")
            continue
        seen.add(leaf.seq)
        try:
            merkle.verify_inclusion(
                leaf.seq, cp.tree_size, merkle.leaf_hash(leaf.data), leaf.proof, cp.root_hash
            )
        except ValidationError as exc:
            problems.append(f"{where}: not in the signed tree: {exc}")
            continue
        try:
            record = decode_leaf(leaf.data)
        except ValidationError as exc:
            problems.append(f"{where}: proved but unreadable: {exc}")
            continue
        if record.seq != leaf.seq:
            problems.append(f"{where}: leaf records seq {record.seq}")
            continue
        records.append(record)
    return BundleReport(
        ok=not problems,
        origin=cp.checkpoint.origin,
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        key_fingerprint=fingerprint,
        key_trusted=trusted,
        leaves=tuple(records),
        problems=tuple(problems),
    )


def _failed(problem: str, origin: str = "", fingerprint: str = "") -> BundleReport:
    return BundleReport(False, origin, 0, b"", fingerprint, False, (), (problem,))
