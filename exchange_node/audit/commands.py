"""What ``exchange-node audit ...`` does: plain functions over an audit log file.

The CLI parses arguments and prints; these functions open the file, do the work and
return text. They raise :class:`~exchange_node.errors.ExchangeError` for things a person
must fix (missing file, unknown seq, no checkpoint yet). None of them writes to the log.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit import bundle as bundle_mod
from exchange_node.audit import merkle
from exchange_node.audit.checkpoint import verifier_key
from exchange_node.audit.cosignature import VerifierKey
from exchange_node.audit.leaf import LeafRecord
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.audit.proof_file import PROOF_FILE_FORMAT, verify_proof_file
from exchange_node.errors import ExchangeError, NotFoundError, ValidationError

__all__ = ["LeafFilter", "export", "prove", "show", "verify", "verify_bundle", "verify_proof"]


def _key(public_key: bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ValidationError(
            "public_key_invalid", "the public key must be 32 raw Ed25519 bytes", "public_key"
        ) from None


def _opened(db: str | Path | AuditLog) -> contextlib.AbstractContextManager[AuditLog]:
    """The log at a database file (closed afterwards), or one already open (a node's
    log on a PostgreSQL server, which the caller closes)."""
    if isinstance(db, AuditLog):
        return contextlib.nullcontext(db)
    return AuditLog.open(db)


def verify(
    db_path: str | Path,
    public_key: bytes | Ed25519PublicKey | Sequence[bytes | Ed25519PublicKey],
) -> tuple[bool, str]:
    """Verify the whole log at ``db_path`` against the node's trusted public key (or
    all its signing keys, current and earlier, when it has rotated).

    Returns ``(ok, report)``; the report names the first bad entry when not ok.
    """
    keys = [public_key] if isinstance(public_key, bytes | Ed25519PublicKey) else list(public_key)
    with _opened(db_path) as log:
        report = log.verify([_key(k) for k in keys])
    lines = [
        f"audit log {db_path}: {'OK' if report.ok else 'FAILED'}",
        f"leaves: {report.leaves_checked}, Merkle nodes: {report.nodes_checked},"
        f" signed checkpoints: {report.checkpoints_checked}",
    ]
    if not report.ok:
        first = report.first_bad_seq
        lines.append(f"first bad entry: seq {first}" if first is not None else "first bad entry: -")
        lines += [f"  {p}" for p in report.problems]
    return report.ok, "\n".join(lines)


def _iso(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_COLUMNS = ("seq", "time", "kind", "actor", "peer", "message_id", "reason", "attrs")


def _row(r: LeafRecord) -> tuple[str, ...]:
    attrs = " ".join(f"{k}={v}" for k, v in sorted(r.attrs.items()))
    return (str(r.seq), _iso(r.time), r.kind, r.actor, r.peer, r.message_id[:16], r.reason, attrs)


def show(db_path: str | Path, filters: LeafFilter, as_json: bool = False) -> Iterator[str]:
    """Matching entries, one line each.

    ``as_json``: each line is the leaf's exact stored bytes (canonical JSON, see
    docs/audit-format.md), for tools. Otherwise a table for people: a header, then
    rows with UTC times. ``filters.limit`` caps the number of entries (None: all).
    """
    with _opened(db_path) as log:
        leaves = log.iter_query(filters)
        if as_json:
            for leaf in leaves:
                yield leaf.data.decode()
            return
        widths = (8, 24, 18, 16, 10, 16, 20, 0)
        yield "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()
        for leaf in leaves:
            cells = _row(leaf.record)
            yield "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def prove(
    db_path: str | Path,
    seq: int,
    tree_size: int | None = None,
    public_keys: Sequence[bytes] = (),
) -> str:
    """An inclusion proof for entry ``seq`` with its signed checkpoint, as JSON text.

    Against the latest signed checkpoint unless ``tree_size`` names an earlier one.
    The JSON holds everything a court's expert needs with the node's public key:
    ``leaf`` (base64 bytes), ``leaf_hash``, ``proof`` (base64 hashes, leaf end first),
    ``tree_size``, ``checkpoint`` (signed note text), and ``verifier_key``: the key that
    signed that checkpoint, found among ``public_keys`` (every key the node has had)
    and the key recorded in the file. Raises ``checkpoint_key_unknown`` if none of
    them signed it. See docs/audit-format.md section 6.
    """
    with _opened(db_path) as log:
        p = log.inclusion_proof(seq, tree_size)
        stored = log.stored_public_key()
        origin = p.checkpoint.checkpoint.origin  # a checkpoint signed before the origin
        # changed names the log's legacy origin (docs/audit-format.md section 4b)
    keys = [*public_keys, *([stored] if stored is not None else [])]
    doc = {
        "format": PROOF_FILE_FORMAT,
        "origin": origin,
        "seq": p.seq,
        "tree_size": p.tree_size,
        "leaf": base64.b64encode(p.leaf).decode(),
        "leaf_hash": base64.b64encode(merkle.leaf_hash(p.leaf)).decode(),
        "proof": [base64.b64encode(h).decode() for h in p.hashes],
        "checkpoint": p.checkpoint.note,
        "record": json.loads(p.leaf),
    }
    if keys:
        signer = bundle_mod.signer_of(p.checkpoint.note, origin, keys)
        if signer is None:
            raise ValidationError(
                "checkpoint_key_unknown",
                f"the checkpoint of size {p.tree_size} is not signed by any of this node's"
                " signing keys; run `exchange-node audit verify`",
                "public_key",
            )
        doc["verifier_key"] = verifier_key(origin, Ed25519PublicKey.from_public_bytes(signer))
    return json.dumps(doc, indent=1, ensure_ascii=False)


def verify_proof(
    path: str | Path, trusted_key: bytes | Ed25519PublicKey | Sequence[bytes | Ed25519PublicKey]
) -> tuple[bool, str]:
    """Verify an ``audit prove`` file offline against the node's key(s); ``(ok, report)``."""
    data = _read(path, "proof_unreadable")
    keys = _keys(trusted_key)
    if not keys:
        raise ValidationError(
            "audit_key_required", "give the node's public key: nothing to verify against", "key"
        )
    r = verify_proof_file(data, keys)
    lines = [f"audit proof {path}: {'OK' if r.ok else 'FAILED'}"]
    if r.key_fingerprint:
        lines.append(f"log: {r.origin}, checkpoint size {r.tree_size}")
        lines.append(f"signed by the trusted key with fingerprint (SHA-256) {r.key_fingerprint}")
    if r.record is not None:
        lines.append(f"entry proved: {'  '.join(_row(r.record)).rstrip()}")
    lines += [f"  {p}" for p in r.problems]
    lines += [f"  note: {n}" for n in r.notices]
    return r.ok, "\n".join(lines)


def export(
    db_path: str | Path,
    out_path: str | Path,
    filters: LeafFilter,
    public_keys: Sequence[bytes] = (),
    consistency_from: Sequence[int] = (),
) -> str:
    """Write a bundle of the matching entries to ``out_path``; return a one-line summary.

    Proofs are against the latest signed checkpoint; entries after it are left out.
    ``public_keys``: every key the node has signed with (the bundle names the one that
    signed the checkpoint); the key recorded in the file is tried too.
    ``consistency_from``: earlier tree sizes to prove the checkpoint extends.
    """
    with _opened(db_path) as log:
        stored = log.stored_public_key()
        keys = [*public_keys, *([stored] if stored is not None else [])]
        if not keys:
            raise NotFoundError(
                "audit_key_unknown", "this log has never been signed; nothing to prove against",
                "db_path",
            )  # fmt: skip
        data = bundle_mod.export_bundle(log, log.iter_query(filters), keys, consistency_from)
    Path(out_path).write_bytes(data)
    report = bundle_mod.verify_bundle(data)
    return (
        f"wrote {out_path}: {len(report.leaves)} entries proved against the checkpoint"
        f" of {report.tree_size} entries; key fingerprint {report.key_fingerprint}"
    )


def _read(path: str | Path, code: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ExchangeError(code, f"cannot read {path}: {exc.strerror}", "path") from None


def _keys(
    trusted_key: bytes | Ed25519PublicKey | Sequence[bytes | Ed25519PublicKey] | None,
) -> list[Ed25519PublicKey] | None:
    if trusted_key is None:
        return None
    if isinstance(trusted_key, bytes | Ed25519PublicKey):
        return [_key(trusted_key)]
    return [_key(k) for k in trusted_key] or None


def verify_bundle(
    path: str | Path,
    trusted_key: bytes | Ed25519PublicKey | Sequence[bytes | Ed25519PublicKey] | None = None,
    priors: Sequence[str | Path] = (),
    *,
    witnesses: Sequence[VerifierKey] = (),
    witness_threshold: int | None = None,
    witnessed: str | Path | None = None,
) -> tuple[bool, str]:
    """Verify a bundle file offline; returns ``(ok, report)``. ``witnesses``,
    ``witness_threshold``, ``witnessed``: a witness policy (``bundle.verify_bundle``).

    ``trusted_key``: the node's key or keys (every key it signed with, across
    rotations). Without it the report asks the reader to compare the key fingerprint
    with one obtained from the node's operator out of band. ``priors``: files holding
    earlier checkpoints of the same log; the bundle must prove it extends each.
    """
    data = _read(path, "bundle_unreadable")
    notes = [_read(p, "checkpoint_unreadable").decode(errors="replace") for p in priors]
    named = (
        None
        if witnessed is None
        else _read(witnessed, "checkpoint_unreadable").decode(errors="replace")
    )
    r = bundle_mod.verify_bundle(
        data,
        _keys(trusted_key),
        notes,
        witnesses=witnesses,
        witness_threshold=witness_threshold,
        witnessed_checkpoint=named,
    )
    lines = [f"bundle {path}: {'OK' if r.ok else 'FAILED'}"]
    if r.origin:
        lines.append(f"log: {r.origin}, checkpoint size {r.tree_size}")
    if r.key_fingerprint:
        trust = "matches the trusted key" if r.key_trusted else "compare it out of band"
        lines.append(f"signing key fingerprint (SHA-256): {r.key_fingerprint} ({trust})")
    lines.append(f"entries proved: {len(r.leaves)}")
    if priors:
        lines.append(f"earlier checkpoints given: {len(priors)}")
    if witnesses:
        lines.append(
            f"witnesses: {r.witnessed} of {len(set(witnesses))} cosigned the checkpoint of"
            f" size {r.witnessed_size}"
        )
    lines += [f"  {p}" for p in r.problems]
    lines += [f"  note: {n}" for n in r.notices]
    lines += [f"  purged: {p}" for p in r.purged]
    return r.ok, "\n".join(lines)
