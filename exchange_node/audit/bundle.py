"""Audit bundles: chosen leaves with inclusion proofs, checkable offline by anyone.

A bundle is one JSON object (``docs/audit-format.md`` specifies it for auditors who
write their own verifier)::

    {"format": "exchange-node-audit-bundle/1",
     "origin": "exchange-node.example/JPN-ISA",
     "public_key": "<base64, 32-byte Ed25519 key>",
     "verifier_key": "<C2SP vkey of the same key>",
     "checkpoint": "<signed note text>",
     "leaves": [{"seq": 5, "data": "<base64 leaf bytes>", "proof": ["<base64 hash>", ...]}],
     "consistency": [{"old_size": 40, "proof": ["<base64 hash>", ...]}]}   (optional)

Every proof is against the one checkpoint in the bundle. The key in the bundle is what
the log *claims*; an auditor compares its fingerprint with one obtained out of band, or
passes the trusted key(s) to :func:`verify_bundle`. ``consistency`` proves that the
bundle's checkpoint extends earlier ones (of those sizes) an auditor already holds.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import (
    SignedCheckpoint,
    parse_checkpoint,
    same_log,
    verifier_key,
    verify_checkpoint,
    verify_log_checkpoint,
)
from exchange_node.audit.cosignature import VerifierKey, verify_cosignatures
from exchange_node.audit.leaf import KINDS, LeafKind, LeafRecord, decode_leaf
from exchange_node.audit.log import AuditLog, StoredLeaf
from exchange_node.audit.strict_json import duplicate_key
from exchange_node.errors import NotFoundError, ValidationError

BUNDLE_FORMAT = "exchange-node-audit-bundle/1"


class BundleLeaf(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    data: bytes
    proof: list[bytes]


class BundleConsistency(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    old_size: int
    proof: list[bytes]


class Bundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    format: str
    origin: str
    public_key: bytes
    verifier_key: str
    checkpoint: str
    leaves: list[BundleLeaf]
    consistency: list[BundleConsistency] = []


@dataclass(frozen=True)
class BundleReport:
    """What :func:`verify_bundle` found. ``ok`` only if every leaf verified, the
    checkpoint is signed by the bundle's key (which must be one of ``trusted_key`` if
    given) and every prior checkpoint is proved to be extended by it.

    ``key_fingerprint`` is SHA-256 of the raw public key, hex: compare it with the one
    the node's operator gave you out of band. ``notices`` are findings that do not make
    the bundle fail (entries of kinds this verifier does not know). ``purged`` describes
    each proved ``record.purged`` entry: content the node destroyed on purpose, which
    the entries about that record outlive (they hold no personal data).
    """

    ok: bool
    origin: str
    tree_size: int
    root_hash: bytes
    key_fingerprint: str
    key_trusted: bool
    leaves: tuple[LeafRecord, ...]
    problems: tuple[str, ...]
    notices: tuple[str, ...] = ()
    priors_checked: int = 0
    witnessed: int = 0
    witnessed_size: int | None = None
    purged: tuple[str, ...] = ()


def key_fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def signer_of(note: str, origin: str, public_keys: Iterable[bytes]) -> bytes | None:
    """Which of ``public_keys`` (raw) signed the checkpoint ``note`` of log ``origin``;
    None if none of them did. Across key rotations, a log's checkpoints are signed by
    the key current when each was signed; checkpoints signed before the log's origin
    changed carry its legacy origin (``verify_log_checkpoint``)."""
    for raw in public_keys:
        try:
            verify_log_checkpoint(note, origin, Ed25519PublicKey.from_public_bytes(raw))
        except (ValidationError, ValueError):
            continue
        return raw
    return None


def export_bundle(
    log: AuditLog,
    leaves: Iterable[StoredLeaf],
    public_key: bytes | Sequence[bytes],
    consistency_from: Iterable[int] = (),
) -> bytes:
    """A bundle of ``leaves`` proved against ``log``'s latest signed checkpoint.

    Leaves the checkpoint does not cover yet are left out (sign a checkpoint first to
    include them). ``public_key`` is the log's raw Ed25519 public key, or every key it
    has signed with (after rotations); the checkpoint must verify under one of them,
    and the bundle names that one. ``consistency_from`` adds a consistency proof from
    each of those earlier tree sizes to the checkpoint. Raises ``checkpoint_not_found``
    without a checkpoint, ``checkpoint_key_unknown`` if no key given signed it.
    """
    out = io.BytesIO()
    write_bundle(out, log, leaves, public_key, consistency_from)
    return out.getvalue()


def write_bundle(
    out: BinaryIO,
    log: AuditLog,
    leaves: Iterable[StoredLeaf],
    public_key: bytes | Sequence[bytes],
    consistency_from: Iterable[int] = (),
    progress: Callable[[int], None] | None = None,
) -> int:
    """:func:`export_bundle` written to ``out`` a leaf at a time, so a bundle of any
    number of entries takes the memory of one; returns how many leaves it holds.
    ``progress``, if given, is told how many have been written, every 1,000.

    The bytes are those of the whole bundle formatted at once: the checkpoint, key and
    consistency proofs around a placeholder leaf, which is cut out and replaced by the
    leaves, each formatted at its depth."""
    cp, signer, key = _signing(log, public_key)
    consistency = _consistency(log, cp.tree_size, consistency_from)
    origin = cp.checkpoint.origin  # the log's, or its legacy one for an old checkpoint
    covered = itertools.takewhile(lambda leaf: leaf.seq < cp.tree_size, iter(leaves))
    first = next(covered, None)
    skeleton = Bundle(
        format=BUNDLE_FORMAT,
        origin=origin,
        public_key=signer,
        verifier_key=verifier_key(origin, key),
        checkpoint=cp.note + "".join(log.cosignature_lines(cp.tree_size)),
        leaves=[] if first is None else [_PLACEHOLDER],
        consistency=consistency,
    )
    text = _formatted(skeleton) + b"\n"
    if first is None:
        out.write(text)
        return 0
    head, tail = text.split(_at_depth(_PLACEHOLDER), 1)
    out.write(head)
    written = 0
    for leaf in itertools.chain((first,), covered):
        if written:
            out.write(b",\n")
        proof = log.inclusion_proof(leaf.seq, cp.tree_size)
        out.write(_at_depth(BundleLeaf(leaf.seq, proof.leaf, list(proof.hashes))))
        written += 1
        if progress is not None and written % 1000 == 0:
            progress(written)
    out.write(tail)
    return written


_PLACEHOLDER = BundleLeaf(0, b"", [])


def _formatted(value: msgspec.Struct) -> bytes:
    return msgspec.json.format(msgspec.json.encode(value), indent=1)


def _at_depth(leaf: BundleLeaf) -> bytes:
    """A leaf formatted as it is inside a bundle: two levels deep."""
    return b"\n".join(b"  " + line for line in _formatted(leaf).split(b"\n"))


def _signing(
    log: AuditLog, public_key: bytes | Sequence[bytes]
) -> tuple[SignedCheckpoint, bytes, Ed25519PublicKey]:
    """The latest checkpoint and the one of ``public_key`` that signed it."""
    cp = log.latest_checkpoint()
    if cp is None:
        raise NotFoundError("checkpoint_not_found", "sign a checkpoint before exporting", "log")
    keys = [public_key] if isinstance(public_key, bytes) else list(public_key)
    signer = signer_of(cp.note, log.origin, keys)
    if signer is None:
        raise ValidationError(
            "checkpoint_key_unknown",
            f"the latest checkpoint (size {cp.tree_size}) is not signed by any of this"
            " node's signing keys; run `exchange-node audit verify`",
            "public_key",
        )
    return cp, signer, Ed25519PublicKey.from_public_bytes(signer)


def _consistency(
    log: AuditLog, tree_size: int, consistency_from: Iterable[int]
) -> list[BundleConsistency]:
    out = []
    for old_size in sorted(set(consistency_from)):
        if not 0 < old_size <= tree_size:
            raise ValidationError(
                "consistency_size_invalid",
                f"consistency proofs can start at sizes 1 to {tree_size} (the latest"
                f" checkpoint), not {old_size}",
                "consistency_from",
            )
        hashes = log.consistency_hashes(old_size, tree_size) if old_size < tree_size else []
        out.append(BundleConsistency(old_size, list(hashes)))
    return out


def verify_bundle(
    data: bytes,
    trusted_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
    priors: Sequence[str] = (),
    *,
    witnesses: Sequence[VerifierKey] = (),
    witness_threshold: int | None = None,
    witnessed_checkpoint: str | None = None,
) -> BundleReport:
    """Check a bundle offline: checkpoint signature, each leaf's inclusion proof, and
    that the checkpoint extends each of ``priors`` (earlier checkpoint notes the caller
    holds) by a consistency proof the bundle carries.

    ``trusted_key``: the node's key, or every key it has signed with across rotations;
    the bundle's key must be one of them, and each prior must be signed by one.
    Without it, priors must be signed by the bundle's own key.

    ``witnesses`` (cosignature/v1 keys) and ``witness_threshold`` (default: all of
    them) are a witness policy: at least that many of those witnesses must have
    cosigned the bundle's checkpoint, or ``witnessed_checkpoint`` (a cosigned
    checkpoint note of the same log, which the bundle must then prove it extends, like
    a prior). Raises ``ValidationError(witness_policy_invalid)`` for a threshold
    outside 1..n.

    Never raises for a bad bundle: every problem is in the report. Leaves whose proof
    fails are listed as problems and left out of ``leaves``. The rules (one value per
    JSON key, leaves in strictly ascending ``seq``, unknown kinds accepted and reported)
    are those of docs/audit-format.md section 5.
    """
    dup = duplicate_key(data)
    if dup is not None:
        return _failed(
            f"bundle_duplicate_key: the key {dup!r} appears twice in one object; a bundle"
            " that two readers could read differently is refused"
        )
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
    if isinstance(trusted_key, Ed25519PublicKey):
        trusted_keys: list[bytes] | None = [_raw(trusted_key)]
    elif trusted_key is not None:
        trusted_keys = [_raw(k) for k in trusted_key]
    else:
        trusted_keys = None
    problems: list[str] = []
    trusted = False
    if trusted_keys is not None:
        trusted = bundle.public_key in trusted_keys
        if not trusted:
            problems.append("bundle_key_untrusted: the bundle's key is not the trusted key")
    if bundle.verifier_key != verifier_key(bundle.origin, key):
        problems.append("bundle_key_mismatch: verifier_key and public_key differ")
    try:
        cp = verify_checkpoint(bundle.checkpoint, bundle.origin, key, origin=bundle.origin)
    except ValidationError as exc:
        return _failed(f"checkpoint: {exc}", origin=bundle.origin, fingerprint=fingerprint)
    records = []
    notices = []
    last_seq = -1
    for i, leaf in enumerate(bundle.leaves):
        where = f"leaves[{i}] (seq {leaf.seq})"
        if leaf.seq == last_seq:
            problems.append(f"{where}: leaf_duplicate: the entry is listed twice")
            continue
        if leaf.seq < last_seq:
            problems.append(f"{where}: leaf_out_of_order: entries must be listed in ascending seq")
            continue
        last_seq = leaf.seq
        try:
            merkle.verify_inclusion(
                leaf.seq, cp.tree_size, merkle.leaf_hash(leaf.data), leaf.proof, cp.root_hash
            )
        except ValidationError as exc:
            problems.append(f"{where}: not in the signed tree: {exc}")
            continue
        try:
            record = decode_leaf(leaf.data, known_kinds_only=False)
        except ValidationError as exc:
            problems.append(f"{where}: proved but unreadable: {exc}")
            continue
        if record.seq != leaf.seq:
            problems.append(f"{where}: leaf records seq {record.seq}")
            continue
        if record.kind not in KINDS:
            notices.append(
                f"{where}: kind_unknown: {record.kind!r} is not a kind this verifier knows"
                " (a later version's); the entry is proved and accepted"
            )
        records.append(record)
    keys = trusted_keys or [bundle.public_key]
    all_priors = [*priors, *([witnessed_checkpoint] if witnessed_checkpoint is not None else [])]
    problems += _check_priors(bundle, cp, keys, all_priors)
    witnessed, witnessed_size = 0, None
    if witnesses:
        note = bundle.checkpoint if witnessed_checkpoint is None else witnessed_checkpoint
        witnessed, witnessed_size, found = _check_witnesses(note, witnesses, witness_threshold)
        problems += found
        if witnessed_size is not None:
            notices += [
                f"seq {r.seq}: not covered by the witnessed checkpoint of size {witnessed_size}"
                for r in records
                if r.seq >= witnessed_size
            ]
    return BundleReport(
        ok=not problems,
        origin=cp.checkpoint.origin,
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        key_fingerprint=fingerprint,
        key_trusted=trusted,
        leaves=tuple(records),
        problems=tuple(problems),
        notices=tuple(notices),
        priors_checked=len(priors),
        witnessed=witnessed,
        witnessed_size=witnessed_size,
        purged=tuple(purge_summary(r) for r in records if r.kind == LeafKind.RECORD_PURGED),
    )


def purge_summary(record: LeafRecord) -> str:
    """One line for a proved ``record.purged`` entry."""
    a = record.attrs
    return (
        f"seq {record.seq}: {a.get('record_type', 'record')}"
        f" {a.get('record') or record.subject_hash or '?'}: personal"
        f" content purged ({a.get('reason', '?')}, approved by {record.actor}) at"
        f" {record.time} ms"
    )


def _check_witnesses(
    note: str, witnesses: Sequence[VerifierKey], threshold: int | None
) -> tuple[int, int | None, list[str]]:
    """(valid cosignatures by distinct given witnesses, the size they cover, problems)."""
    unique = list(dict.fromkeys(witnesses))
    k = len(unique) if threshold is None else threshold
    if not 1 <= k <= len(unique):
        raise ValidationError(
            "witness_policy_invalid",
            f"the threshold must be 1 to {len(unique)} (the witnesses given), not {k}",
            "witness_threshold",
        )
    try:
        size = parse_checkpoint(note)[0].tree_size
        cosigned = verify_cosignatures(note, unique)
    except ValidationError as exc:
        return 0, None, [f"witness: {exc.code}: {exc.message}"]
    problems = []
    if len(cosigned) < k:
        problems.append(
            f"witness_policy_unmet: {len(cosigned)} of the {len(unique)} witnesses given"
            f" cosigned the checkpoint of size {size}; the policy needs {k}"
        )
    return len(cosigned), size, problems


def _check_priors(
    bundle: Bundle, cp: SignedCheckpoint, keys: list[bytes], priors: Sequence[str]
) -> list[str]:
    problems = []
    proofs: dict[int, list[bytes]] = {}
    for c in bundle.consistency:
        where = f"consistency (old size {c.old_size})"
        if not 0 < c.old_size <= cp.tree_size:
            problems.append(
                f"{where}: consistency_size_invalid: sizes run from 1 to the checkpoint's"
                f" {cp.tree_size}"
            )
        elif c.old_size in proofs:
            problems.append(f"{where}: consistency_duplicate: listed twice")
        proofs[c.old_size] = c.proof
    for i, note in enumerate(priors):
        where = f"prior[{i}]"
        try:
            claimed = parse_checkpoint(note)[0]
        except ValidationError as exc:
            problems.append(f"{where}: prior_malformed: not a checkpoint note: {exc}")
            continue
        if not same_log(claimed.origin, bundle.origin):
            problems.append(
                f"{where}: prior_origin_mismatch: a checkpoint of {claimed.origin!r}, not of"
                f" {bundle.origin!r}"
            )
            continue
        signer = signer_of(note, bundle.origin, keys)
        if signer is None:
            problems.append(
                f"{where}: prior_signature_unknown: not signed by the trusted key(s); give"
                " the key that signed it with --key"
            )
            continue
        prior = verify_log_checkpoint(
            note, bundle.origin, Ed25519PublicKey.from_public_bytes(signer)
        )
        m, n = prior.tree_size, cp.tree_size
        where = f"{where} (size {m})"
        if m > n:
            problems.append(
                f"{where}: prior_newer: the bundle's checkpoint (size {n}) is older than this"
                " one; ask for a bundle exported now"
            )
            continue
        if m == 0:
            continue
        if m == n:
            if prior.root_hash != cp.root_hash:
                problems.append(
                    f"{where}: prior_inconsistent: same size, different root: the log was rewritten"
                )
            continue
        if m not in proofs:
            problems.append(
                f"{where}: prior_unproved: the bundle carries no consistency proof from size"
                f" {m}; ask for one exported with --consistency-from {m}"
            )
            continue
        try:
            merkle.verify_consistency(m, n, prior.root_hash, cp.root_hash, proofs[m])
        except ValidationError as exc:
            problems.append(
                f"{where}: prior_inconsistent: the log no longer extends this checkpoint"
                f" (truncated or rewritten): {exc}"
            )
    return problems


def _failed(problem: str, origin: str = "", fingerprint: str = "") -> BundleReport:
    return BundleReport(False, origin, 0, b"", fingerprint, False, (), (problem,))
