"""Data protection at the command line: ``case erase`` (through the running node's local
API) and ``data kek ...`` (key-encryption keys, on the node's files directly)."""

from __future__ import annotations

from urllib.parse import quote

from exchange_node.cli.api_client import _api_call
from exchange_node.cli.common import _cfg, _iso, _node


def cmd_case_erase(args) -> int:
    """Destroy a case's personal content; the token's name is recorded as the approver."""
    purge = _api_call(
        args,
        "POST",
        f"/api/v1/cases/{quote(args.case_ref, safe='')}/erasure",
        {"reason": args.reason},
    )
    print(
        f"case {args.case_ref}: personal data and notes destroyed ({purge['reason']}, "
        f"approved by {purge['approver']}, {_iso(purge['purged_at_ms'])})"
    )
    peers = [c["recipient"] for c in purge["confirmations"]]
    if peers:
        print(f"purge notice sent to {', '.join(peers)}; `case show` tells who confirmed")
    return 0


async def cmd_kek_rotate(args) -> int:
    """A new key-encryption key; every data key re-wrapped under it."""
    async with _node(_cfg(args)) as node:
        version, count = await node.services.protection.rotate_kek("operator")
    print(f"key-encryption key version {version} in use; {count} data keys re-wrapped")
    return 0


async def cmd_kek_list(args) -> int:
    cfg = _cfg(args)
    async with _node(cfg) as node:
        versions = node.store.kek_versions()
        counts = {v.version: node.store.record_keys_under(v.version) for v in versions}
    horizon = cfg.data_protection.backup_horizon_days
    for v in versions:
        if v.destroyed_at is not None:
            state = f"destroyed {_iso(v.destroyed_at)}"
        elif v.retired_at is not None:
            state = f"retired {_iso(v.retired_at)}, destroyed {horizon} days later"
        else:
            state = "current"
        print(f"version {v.version}: created {_iso(v.created_at)}, {state}; "
              f"{counts[v.version]} data keys")  # fmt: skip
    return 0


async def cmd_kek_destroy_expired(args) -> int:
    """Destroy the KEK versions retired longer ago than the backup horizon."""
    async with _node(_cfg(args)) as node:
        gone = await node.services.protection.destroy_expired_keks("operator")
    print("destroyed: " + (", ".join(f"version {v}" for v in gone) or "none due"))
    return 0


def _target(args) -> tuple[str | None, tuple[str, str] | None]:
    from exchange_node.domain.documents import DocumentKey

    if args.document:
        key = DocumentKey(args.document[0], "", args.document[1])
        return None, (key.issuing_state, key.number)
    return args.case, None


async def cmd_hold_place(args) -> int:
    case_ref, document = _target(args)
    async with _node(_cfg(args)) as node:
        hold = await node.services.retention.place_hold(
            case_ref, document, args.reason, actor="operator"
        )
    print(f"legal hold placed on {hold.record}: nothing of it is purged until it is released")
    return 0


async def cmd_hold_release(args) -> int:
    case_ref, document = _target(args)
    async with _node(_cfg(args)) as node:
        hold = await node.services.retention.release_hold(case_ref, document, actor="operator")
    print(
        f"legal hold on {hold.record} released (placed {_iso(hold.placed_at)} by {hold.placed_by})"
    )
    return 0


async def cmd_hold_list(args) -> int:
    async with _node(_cfg(args)) as node:
        holds = node.store.holds()
    for h in holds:
        print(f"{h.record}  placed {_iso(h.placed_at)} by {h.placed_by}: {h.reason}")
    if not holds:
        print("no legal holds")
    return 0


async def cmd_retention_run(args) -> int:
    """One run of the retention schedule now (a serving node runs it by itself)."""
    async with _node(_cfg(args)) as node:
        r = await node.services.retention.run()
    print(f"purged: {len(r.cases)} cases, {len(r.notices)} document notices; "
          f"kept under a legal hold: {len(r.held)}")  # fmt: skip
    if r.kek_rotated:
        print(f"key-encryption key rotated to version {r.kek_rotated}")
    for v in r.keks_destroyed:
        print(f"key-encryption key version {v} destroyed (past the backup horizon)")
    return 0


async def cmd_review_list(args) -> int:
    """Records due for their periodic review."""
    async with _node(_cfg(args)) as node:
        due = node.services.retention.reviews_due()
        total = node.services.retention.reviews_due_total()
    for r in due:
        what = f" ({r.document[0]} {r.document[1]})" if r.document else ""
        print(f"{r.record_id}{what}: due since {_iso(r.due_at)} (held since {_iso(r.since)})")
    shown = f" (the oldest {len(due)} listed)" if len(due) < total else ""
    print(f"{total} records due for review{shown}; keep each with `data review keep RECORD "
          "--reason ...` or purge it (`case erase`, or withdraw the notice)")  # fmt: skip
    return 0


async def cmd_review_keep(args) -> int:
    async with _node(_cfg(args)) as node:
        await node.services.retention.keep(args.record, args.reason, actor="operator")
    print(f"{args.record} kept; its next review is due a review period from now")
    return 0


async def cmd_report(args) -> int:
    """A signed subject access report (or a recorded refusal) written to --out.

    The files hold the subject's personal data: they are created 0600, never over an
    existing file, and before the report is issued, so the ``subject.report`` entry is
    never written for a report that could not be handed out."""
    import os
    from pathlib import Path

    from exchange_node.cli.common import CliError

    case_ref, document = _target(args)
    refusal = tuple(args.refuse) if args.refuse else None
    outs = [Path(args.out), *([Path(args.text)] if args.text else [])]
    for path in outs:
        if path.exists():
            raise CliError(f"{path}: already exists; name a new file", code="out_exists")
        if not path.parent.is_dir():
            raise CliError(
                f"{path}: folder {path.parent} does not exist; create it first",
                code="out_folder_missing",
            )
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) for p in outs]
    try:
        async with _node(_cfg(args)) as node:
            data, text = await node.services.reports.issue(
                case_ref=case_ref, document=document, purpose=args.purpose, actor="operator",
                refusal=refusal,
            )  # fmt: skip
    except BaseException:
        for fd, path in zip(fds, outs, strict=True):
            os.close(fd)
            path.unlink()
        raise
    for fd, content in zip(fds, [data, text.encode()], strict=False):
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    print(f"wrote {args.out}" + (f" and {args.text}" if args.text else "")
          + (" (a refusal)" if refusal else "") + "; check it with `data verify-report`")  # fmt: skip
    return 0


def cmd_verify_report(args) -> int:
    """Exit 0 if the report verifies (against --key when given), 1 otherwise."""
    from pathlib import Path

    from exchange_node.cli.common import CliError
    from exchange_node.subject_report import verify_report

    try:
        data = Path(args.file).read_bytes()
        text = Path(args.text).read_bytes() if args.text else None
        keys = [bytes.fromhex(k) for k in args.key] if args.key else None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the report or key: {exc}") from None
    r = verify_report(data, keys, text)
    print(f"subject report {args.file}: {'OK' if r.ok else 'FAILED'}")
    print(f"  signed by key {r.signing_key}"
          + {None: " (not checked: no --key given)", True: " (matches --key)",
             False: " (does NOT match --key)"}[r.key_trusted])  # fmt: skip
    for p in r.problems:
        print(f"  problem: {p}")
    return 0 if r.ok else 1
