"""The audit log and proofs of delivery: ``audit ...``, ``proof export/verify``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from exchange_node.audit import commands as audit_commands
from exchange_node.audit.cosignature import COSIGNATURE_V1_ALG, parse_vkey
from exchange_node.audit.log import LeafFilter
from exchange_node.cli.common import (
    CliError,
    _audit,
    _audit_source,
    _cfg,
    _iso,
    _passphrase,
    _store,
    now_ms,
    output_path,
    write_output,
)
from exchange_node.errors import ValidationError
from exchange_node.identity import (
    all_signing_public_keys,
)


def _parse_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"time {text!r}: expected ISO 8601, e.g. 2026-11-01 or 2026-11-01T12:00Z",
            code="time_invalid",
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _filters(args) -> LeafFilter:
    return LeafFilter(
        since=_parse_time(args.since),
        until=_parse_time(args.until),
        peer=args.peer,
        kind=args.kind,
        message_id=args.message_id,
        actor=args.actor,
        limit=args.limit,
    )


def cmd_audit_verify(args) -> int:
    cfg = _cfg(args)
    ok, report = audit_commands.verify(
        _audit_source(cfg), all_signing_public_keys(cfg.data_path, _passphrase(cfg))
    )
    print(report)
    return 0 if ok else 1


def cmd_audit_show(args) -> int:
    cfg = _cfg(args)
    for line in audit_commands.show(_audit_source(cfg), _filters(args), as_json=args.json):
        print(line)
    return 0


def _with_signing_keys(cfg, run):
    """``run(keys)`` first with no keys but the one the log records (no passphrase is
    needed); if the checkpoint at hand was signed by another of the node's keys (before
    a rotation), again with every signing key the node has had."""
    try:
        return run([])
    except ValidationError as exc:
        if exc.code != "checkpoint_key_unknown":
            raise
    return run(all_signing_public_keys(cfg.data_path, _passphrase(cfg)))


def cmd_audit_prove(args) -> int:
    cfg = _cfg(args)
    path = _audit_source(cfg)
    print(
        _with_signing_keys(
            cfg, lambda keys: audit_commands.prove(path, args.seq, args.tree_size, keys)
        )
    )
    return 0


def cmd_audit_verify_proof(args) -> int:
    keys = _hex_keys(args.key, "--key")
    ok, report = audit_commands.verify_proof(args.file, keys or [])
    print(report)
    return 0 if ok else 1


def cmd_audit_export(args) -> int:
    output_path(args.out)
    cfg = _cfg(args)
    path, filters, sizes = _audit_source(cfg), _filters(args), args.consistency_from or ()
    print(
        _with_signing_keys(
            cfg, lambda keys: audit_commands.export(path, args.out, filters, keys, sizes)
        )
    )
    return 0


def _hex_keys(values: list[str] | None, option: str) -> list[bytes] | None:
    if not values:
        return None
    try:
        keys = [bytes.fromhex(v) for v in values]
    except ValueError:
        keys = []
    if not keys or any(len(k) != 32 for k in keys):
        raise CliError(
            f"{option}: expected an Ed25519 public key, 64 hex digits"
            " (`exchange-node keys show` prints it)",
            code="public_key_invalid",
        )
    return keys


def cmd_audit_verify_bundle(args) -> int:
    key = _hex_keys(args.key, "--key")
    if (args.witness_threshold is not None or args.witnessed) and not args.witness:
        raise CliError("--witness-threshold and --witnessed need --witness VKEY")
    try:
        witnesses = [parse_vkey(v, alg=COSIGNATURE_V1_ALG) for v in args.witness or ()]
    except ValidationError as exc:
        raise CliError(f"--witness: {exc.message}") from None
    ok, report = audit_commands.verify_bundle(
        args.file,
        key,
        args.prior or (),
        witnesses=witnesses,
        witness_threshold=args.witness_threshold,
        witnessed=args.witnessed,
    )
    print(report)
    return 0 if ok else 1


def cmd_audit_checkpoint(args) -> int:
    cfg = _cfg(args)
    log = _audit(cfg)
    try:
        cp = log.sign_checkpoint(now_ms())
    finally:
        log.close()
    print(cp.note, end="")
    return 0


# --- proof of delivery -------------------------------------------------------------------------


def _receipt_batch_id(signed: bytes) -> str:
    from exchange_node.pb.exchange.v1 import envelope_pb2

    return envelope_pb2.BatchReceipt.FromString(
        envelope_pb2.SignedReceipt.FromString(signed).receipt
    ).batch_id.hex()


async def cmd_proof_export(args) -> int:
    """Everything a court's expert needs to check one delivery offline."""
    from exchange_node.audit.bundle import export_bundle
    from exchange_node.evidence import build_proof, verify_proof

    out = output_path(args.out)
    cfg = _cfg(args)
    try:
        mid = bytes.fromhex(args.message_id)
    except ValueError:
        raise CliError(f"message id {args.message_id!r}: expected 32 hex digits") from None
    store = await _store(cfg)
    try:
        if not store.message_status(mid):
            raise CliError(
                f"message {args.message_id}: this node sent no such message (`status` and"
                " `audit show --kind envelope.sent` list the ones it sent)",
                code="message_unknown",
            )
        rows = [r for r in store.message_status(mid) if args.peer in (None, r.peer_id)]
        if len(rows) != 1:
            peers = ", ".join(r.peer_id for r in store.message_status(mid)) or "none"
            raise CliError(
                f"message {args.message_id}: name one recipient with --peer (recipients: {peers})"
            )
        row = rows[0]
        if row.receipt_id is None:
            raise CliError(
                f"message {args.message_id} to {row.peer_id}: no receipt yet (state {row.state.value})"
            )
        envelope = store.get_outbox(row.outbox_id).envelope  # type: ignore[union-attr]
        receipt = store.get_receipt(row.receipt_id).receipt  # type: ignore[union-attr]
        batch_id = _receipt_batch_id(receipt)
        peer = store.get_peer(row.peer_id)
        if peer is None:
            raise CliError(f"{row.peer_id} is no longer pinned: its card is not available")
        case_ref = store.case_of_message(mid)
        case_hash = None
        if case_ref is not None:
            from exchange_node.audit.leaf import keyed_hash
            from exchange_node.services import LOOKUP_KEY_FILE, load_subject_key

            key = load_subject_key(cfg.data_path / "keys" / LOOKUP_KEY_FILE)
            case_hash = keyed_hash(key, f"case:{case_ref}")
    finally:
        await store.close()
    log = _audit(cfg)
    try:
        log.sign_checkpoint(now_ms())  # so the proof covers the latest entries
        entries = [
            *log.iter_query(LeafFilter(message_id=mid.hex(), peer=row.peer_id)),
            *(
                leaf
                for leaf in log.iter_query(LeafFilter(kind="receipt.received", peer=row.peer_id))
                if leaf.record.attrs.get("batch_id") == batch_id and not leaf.record.reason
            ),
            # A case the message carried and that was erased since: the proof says so.
            *(
                leaf
                for leaf in log.iter_query(LeafFilter(kind="record.purged"))
                if case_hash is not None and leaf.record.subject_hash == case_hash
            ),
        ]
        # proof export opens the log with the current key (the passphrase is needed
        # anyway): the checkpoint it signs names that key, or an earlier one if nothing
        # was appended since the rotation.
        keys = all_signing_public_keys(cfg.data_path, _passphrase(cfg))
        bundle = export_bundle(log, sorted(entries, key=lambda leaf: leaf.seq), keys)
    finally:
        log.close()
    data = build_proof(
        sender=cfg.node.id,
        recipient=row.peer_id,
        message_id=mid,
        envelope=envelope,
        receipt=receipt,
        recipient_card=peer.card,
        audit_bundle=bundle,
    )
    write_output(out, data)
    report = verify_proof(data)
    print(
        f"wrote {args.out}: {row.peer_id} {report.outcome} message {mid.hex()} ({'verifies' if report.ok else 'DOES NOT VERIFY'})"
    )
    print(f"  recipient card fingerprint: {report.recipient_fingerprint}")
    print(f"  audit key fingerprint:      {report.audit_key_fingerprint}")
    return 0 if report.ok else 1


def cmd_proof_verify(args) -> int:
    """Exit 0: the delivery is established (every check passed against the recipient's
    fingerprint given with --fingerprint); 1: a check failed; 3: the file is consistent
    but, without --fingerprint, nothing ties it to the recipient (NOT ESTABLISHED)."""
    from exchange_node.evidence import verify_proof

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror}") from None
    key = None
    if args.audit_key:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = [Ed25519PublicKey.from_public_bytes(bytes.fromhex(k)) for k in args.audit_key]
        except ValueError:
            raise CliError(
                "--audit-key: expected the sender's Ed25519 public key, 64 hex digits"
                " (the sender's `exchange-node keys show` prints it)"
            ) from None
    r = verify_proof(data, recipient_fingerprint=args.fingerprint, audit_key=key)
    verdict = "OK" if r.established else "FAILED" if not r.ok else "NOT ESTABLISHED"
    print(f"delivery proof {args.file}: {verdict}")
    print(
        f"  {r.sender} -> {r.recipient}, message {r.message_id}: {r.outcome or '-'} at {_iso(r.received_at_ms)}"
    )
    if r.fingerprint_matches is None:
        print(
            f"  recipient card (serial {r.recipient_card_serial}) fingerprint in the file:"
            f" {r.recipient_fingerprint}"
            " (not checked: no --fingerprint given)"
        )
    elif r.fingerprint_matches:
        print(
            f"  recipient card (serial {r.recipient_card_serial}) fingerprint"
            f" {r.recipient_fingerprint} (matches --fingerprint)"
        )
    else:
        print(
            f"  recipient card (serial {r.recipient_card_serial}) fingerprint in the file:"
            f" {r.recipient_fingerprint}"
            f" (does NOT match --fingerprint {args.fingerprint})"
        )
    if r.audit_key_matches is None:
        print(
            f"  sender audit key fingerprint in the file: {r.audit_key_fingerprint}"
            " (not checked: no --audit-key given)"
        )
    elif r.audit_key_matches:
        print(f"  sender audit key fingerprint {r.audit_key_fingerprint} (matches --audit-key)")
    else:
        print(
            f"  sender audit key fingerprint in the file: {r.audit_key_fingerprint}"
            " (does NOT match --audit-key)"
        )
    for problem in r.problems:
        print(f"  problem: {problem}")
    for purge in r.purged:
        print(f"  content purged by the sender: {purge}")
    if r.ok and not r.established:
        print(
            "  NOT ESTABLISHED: the file is consistent, but nothing ties it to the recipient;"
            " obtain the recipient's card fingerprint from its operator and pass --fingerprint"
        )
        return 3
    return 0 if r.ok else 1
