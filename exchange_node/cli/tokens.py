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
    operator_actor,
    print_json,
)
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.store.records import TOKEN_NAME_RE, TOKEN_ROLES


async def cmd_token_create(args) -> int:
    cfg = _cfg(args)
    if not TOKEN_NAME_RE.fullmatch(args.name):
        raise CliError(
            f"--name: use 1-64 of A-Z a-z 0-9 . _ : @ / + = - (e.g. narita-border-system), got {args.name!r}"
        )
    if args.role not in TOKEN_ROLES:
        raise CliError(
            f"--role: expected one of {', '.join(sorted(TOKEN_ROLES))}, got {args.role!r}"
        )
    lifetime_ms = parse_duration(args.expires, "--expires") if args.expires is not None else None
    secret = "xn_" + secrets.token_urlsafe(32)
    store = await _store(cfg)
    try:
        now = now_ms()
        if args.expires is None:
            expires_at = cfg.local_api.token_expiry(now)
        else:
            expires_at = now + lifetime_ms if lifetime_ms else None
        record = await store.create_token(
            args.name,
            args.role,
            secret,
            now,
            expires_at=expires_at,
            audit=[leaves.token_created(now, args.name, args.role, expires_at, operator_actor())],
        )
    finally:
        await store.close()
    print(secret)
    until = f"expires {_iso(record.expires_at)}" if record.expires_at else "never expires"
    print(
        f"token {record.name} ({record.role}) created, {until}; it is shown only this once",
        file=sys.stderr,
    )
    return 0


_DURATION = re.compile(r"([1-9][0-9]{0,5})([dhm])")
_UNIT_MS = {"d": DAY_MS, "h": 3_600_000, "m": 60_000}


def parse_duration(text: str, option: str) -> int | None:
    """``90d``, ``12h``, ``30m`` as milliseconds; ``never`` as None (no expiry)."""
    if text == "never":
        return None
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise CliError(
            f"{option}: expected a duration such as 90d, 12h or 30m (or never), got {text!r}",
            code="duration_invalid",
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


async def cmd_token_list(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        tokens = store.list_tokens(include_revoked=args.all)
    finally:
        await store.close()
    now = now_ms()
    if args.json:
        print_json({"tokens": [_token_json(t, now) for t in tokens]})
        return 0
    print(f"{'NAME':<24} {'ROLE':<18} {'CREATED':<24} {'EXPIRES':<32} REVOKED")
    for t in tokens:
        expires = _iso(t.expires_at) if t.expires_at else "never"
        if t.expired(now):
            expires += " (expired)"
        print(
            f"{t.name:<24} {t.role:<18} {_iso(t.created_at):<24} {expires:<32} "
            f"{_iso(t.revoked_at) if t.revoked_at else ''}"
        )
    return 0


def _token_json(t, now: int) -> dict:
    """One token in ``token list --json`` (stable keys; never the secret or its hash)."""
    return {
        "name": t.name,
        "role": t.role,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "expired": t.expired(now),
        "revoked_at": t.revoked_at,
    }


async def cmd_token_revoke(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        now = now_ms()
        record = await store.revoke_token(
            args.name,
            now,
            audit=lambda revoked: [leaves.token_revoked(now, revoked.name, operator_actor())],
        )
    finally:
        await store.close()
    print(f"revoked token {record.name}")
    return 0
