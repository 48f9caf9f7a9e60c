"""Local API tokens: ``token create/list/revoke``."""

from __future__ import annotations

import re
import secrets
import sys

from exchange_node.audit import leaves
from exchange_node.cli.common import (
    CliError,
    _cfg,
    _iso,
    _store,
    now_ms,
)
from exchange_node.store.records import TOKEN_ROLES


async def cmd_token_create(args) -> int:
    cfg = _cfg(args)
    if not re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,64}", args.name):
        raise CliError(
            f"--name: use 1-64 of A-Z a-z 0-9 . _ : @ / + = - (e.g. narita-border-system), got {args.name!r}"
        )
    if args.role not in TOKEN_ROLES:
        raise CliError(
            f"--role: expected one of {', '.join(sorted(TOKEN_ROLES))}, got {args.role!r}"
        )
    secret = "xn_" + secrets.token_urlsafe(32)
    store = await _store(cfg)
    try:
        now = now_ms()
        record = await store.create_token(
            args.name,
            args.role,
            secret,
            now,
            audit=[leaves.token_created(now, args.name, args.role)],
        )
    finally:
        await store.close()
    print(secret)
    print(
        f"token {record.name} ({record.role}) created; it is shown only this once", file=sys.stderr
    )
    return 0


async def cmd_token_list(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        tokens = store.list_tokens(include_revoked=args.all)
    finally:
        await store.close()
    print(f"{'NAME':<24} {'ROLE':<18} {'CREATED':<24} REVOKED")
    for t in tokens:
        print(
            f"{t.name:<24} {t.role:<18} {_iso(t.created_at):<24} {_iso(t.revoked_at) if t.revoked_at else ''}"
        )
    return 0


async def cmd_token_revoke(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        now = now_ms()
        record = await store.revoke_token(
            args.name, now, audit=lambda revoked: [leaves.token_revoked(now, revoked.name)]
        )
    finally:
        await store.close()
    print(f"revoked token {record.name}")
    return 0
