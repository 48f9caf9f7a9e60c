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
