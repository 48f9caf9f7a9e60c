"""``exchange-node``: the operator's command line.

Every command prints a short human-readable result, or one ``error: ...`` line and a
non-zero exit status; never a stack trace for something the operator can fix.
Commands that change state while ``serve`` runs (peer add/pause/resume/remove, keys
rotate, send) write to the node's store; the running node picks the change up within
a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from exchange_node.audit import commands as audit_commands
from exchange_node.audit import leaves
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog, LeafFilter
from exchange_node.build_info import version_line
from exchange_node.config import NOTICE_KINDS, Config, ConfigError, load_config, render_config
from exchange_node.delivery.outbox import RecipientNotAllowed, UnknownRecipient
from exchange_node.errors import ExchangeError
from exchange_node.identity import (
    IdentityError,
    all_signing_public_keys,
    create_identity,
    finish_rotation,
    load_identity,
    prepare_rotation,
    revoke_key,
)
from exchange_node.logs import configure as configure_logs
from exchange_node.pb.exchange.v1 import card_pb2, notice_pb2
from exchange_node.protocol.cards import normalise_fingerprint, verify_card
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keys import Suite
from exchange_node.services.documents import DOCUMENT_KINDS
from exchange_node.store.records import TOKEN_ROLES
from exchange_node.store.sqlite import SqliteStore

DEFAULT_CONFIG = "config/node.toml"


class CliError(Exception):
    """A problem to report in one line."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(ms: int | None, now: int) -> str:
    if not ms:
        return "-"
    s = max(0, (now - ms) // 1000)
    return (
        f"{s // 86400}d{s % 86400 // 3600}h"
        if s >= 86400
        else f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"
    )


def _passphrase(cfg: Config) -> bytes | None:
    from exchange_node.node import key_passphrase

    return key_passphrase(cfg)


def _cfg(args) -> Config:
    return load_config(args.config)


async def _store(cfg: Config) -> SqliteStore:
    """The node's store, with its audit log attached: a write given ``audit=`` leaves
    commits them with its change, in one transaction."""
    path = _audit_path(cfg)
    store = await SqliteStore.open(path)
    # append_on uses only the writer's connection it is handed; the log object is
    # needed here once, to make sure the log's own records exist.
    log = AuditLog(path, node_id=cfg.node.id)
    log.close()
    store.attach_audit(log.append_on)
    return store


@contextlib.asynccontextmanager
async def _node(cfg: Config):
    """The node, opened through the composition root but not started: the command line
    submits through the same path as the local API (the running node delivers)."""
    from exchange_node.node import Node

    node = await Node.open(cfg)
    try:
        yield node
    finally:
        await node.stop()


def _audit(cfg: Config, write: bool = True) -> AuditLog:
    keys = load_identity(cfg.data_path, _passphrase(cfg)) if write else None
    return AuditLog(
        _audit_path(cfg),
        node_id=cfg.node.id,
        signing_key=keys.local.signing_key.private if keys else None,
    )


# --- init / card ---------------------------------------------------------------------------


def cmd_init(args) -> int:
    config_path = Path(args.config)
    if config_path.exists():
        raise CliError(f"{config_path} already exists; refusing to overwrite it")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    text = render_config(
        node_id=args.node_id,
        country=args.country,
        display_name=args.display_name or args.node_id,
        public_endpoint=args.endpoint,
        peer_listen=args.peer_listen,
        local_listen=args.local_listen,
        allow_plain_http=args.plain_http,
        data_dir=args.data_dir,
    )
    tmp = config_path.with_name(config_path.name + ".new")
    tmp.write_text(text)
    try:
        cfg = load_config(tmp)
    except ConfigError as exc:
        tmp.unlink()
        raise CliError(str(exc).replace(str(tmp), "init arguments")) from None
    data = (config_path.parent / args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = create_identity(
        data,
        node_id=cfg.node.id,
        country=cfg.node.country,
        display_name=cfg.node.display_name,
        endpoint=cfg.peer_api.public_endpoint,
        suite=Suite.parse(cfg.node.suite),
        now_ms=now_ms(),
        passphrase=_passphrase(cfg),
    )
    tmp.rename(config_path)
    print(f"created node {keys.local.node_id} ({cfg.node.country})")
    print(f"  config:      {config_path}")
    print(f"  data:        {data}")
    print(f"  card:        {data / 'card.pb'}")
    print(f"  fingerprint: {keys.fingerprint}")
    print("Send card.pb to your peers and read them the fingerprint by phone.")
    return 0


def _describe_card(card) -> list[str]:
    lines = [
        f"node:        {card.node_id} ({card.country}) {card.display_name}",
        f"endpoint:    {card.endpoint}",
        f"serial:      {card.serial}, issued {_iso(card.issued_at_ms)}",
        f"fingerprint: {card.fingerprint}",
        f"tls sha256:  {card.tls_cert_sha256.hex()}",
    ]
    for k in card.signing_keys:
        lines.append(
            f"signing key:    {k.key_id.hex()} valid {_iso(k.not_before_ms)} .. {_iso(k.not_after_ms) if k.not_after_ms else 'open'}"
        )
    for k in card.encryption_keys:
        suite = Suite.for_algorithm(k.algorithm).name.lower().replace("_", "-")
        lines.append(
            f"encryption key: {k.key_id.hex()} {suite} valid {_iso(k.not_before_ms)} .. {_iso(k.not_after_ms) if k.not_after_ms else 'open'}"
        )
    return lines


def _read_card(path: str):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read card: {exc.strerror}") from None
    try:
        return verify_card(data)
    except OpenError as exc:
        raise CliError(
            f"{path}: not a valid node card ({exc.reason.value}: {exc.detail})"
        ) from None


def cmd_card_show(args) -> int:
    if args.file:
        card = _read_card(args.file)
    else:
        cfg = _cfg(args)
        card = load_identity(cfg.data_path, _passphrase(cfg)).card
    print("\n".join(_describe_card(card)))
    return 0


def cmd_card_export(args) -> int:
    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    if args.out == "-":
        sys.stdout.buffer.write(keys.card_bytes)
    else:
        Path(args.out).write_bytes(keys.card_bytes)
        print(f"wrote {args.out} ({len(keys.card_bytes)} bytes); fingerprint {keys.fingerprint}")
    return 0


# --- peers -----------------------------------------------------------------------------------


async def cmd_peer_add(args) -> int:
    cfg = _cfg(args)
    card = _read_card(args.card)
    expected = normalise_fingerprint(args.fingerprint)
    if card.fingerprint != expected:
        raise CliError(
            f"fingerprint mismatch: the card's is {card.fingerprint}, you were given {expected}; "
            "nothing was pinned. Ask the peer's operator to read it again."
        )
    if card.node_id == cfg.node.id:
        raise CliError("that is this node's own card")
    allow = args.allow.split(",") if args.allow else None
    for kind in allow or []:
        if kind not in NOTICE_KINDS:
            raise CliError(
                f"--allow: unknown notice kind {kind!r}; expected some of {', '.join(NOTICE_KINDS)}"
            )
    store = await _store(cfg)
    try:
        existing = store.get_peer(card.node_id)
        if existing is not None and verify_card(existing.card).serial > card.serial:
            raise CliError(
                f"{card.node_id} is already pinned with a newer card (serial {verify_card(existing.card).serial})"
            )
        now = now_ms()
        leaf = leaves.peer_changed(now, LeafKind.PEER_ADDED, card.node_id, serial=str(card.serial))
        await store.upsert_peer(
            card.node_id, card.signed, card.fingerprint, now, allow, audit=[leaf]
        )
    finally:
        await store.close()
    print(
        f"pinned {card.node_id} ({card.country}) at {card.endpoint}; fingerprint {card.fingerprint}"
    )
    if allow is not None:
        print(f"  allowed notice kinds: {', '.join(allow)}")
    return 0


async def cmd_peer_list(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        peers = store.list_peers()
        stats = {q.peer_id: q for q in store.queue_stats()}
    finally:
        await store.close()
    if not peers:
        print("no peers pinned")
        return 0
    now = now_ms()
    print(
        f"{'PEER':<14} {'COUNTRY':<7} {'STATE':<7} {'QUEUED':>6} {'DEAD':>5} {'LAST CONTACT':<14} ENDPOINT"
    )
    for p in peers:
        card = verify_card(p.card)
        q = stats.get(p.node_id)
        print(
            f"{p.node_id:<14} {card.country:<7} {'paused' if p.paused else 'active':<7} "
            f"{q.depth if q else 0:>6} {q.dead if q else 0:>5} {_age(q.last_contact_at if q else None, now):<14} {card.endpoint}"
        )
        if p.policy:
            print(f"{'':<14} allows: {', '.join(p.policy)}")
    return 0


async def _peer_simple(args, action: Callable, kind: str, done: str) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        if store.get_peer(args.peer) is None:
            raise CliError(f"{args.peer} is not a pinned peer (see `exchange-node peer list`)")
        now = now_ms()
        result = await action(store, now, [leaves.peer_changed(now, kind, args.peer)])
    finally:
        await store.close()
    print(done.format(peer=args.peer, result=result))
    return 0


async def cmd_peer_remove(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.remove_peer(args.peer, force=args.force, audit=audit),
        LeafKind.PEER_REMOVED,
        "removed {peer}; {result} queued message(s) became dead letters",
    )


async def cmd_peer_pause(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.set_paused(args.peer, True, now, audit=audit),
        LeafKind.PEER_PAUSED,
        "paused delivery to {peer}",
    )


async def cmd_peer_resume(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.set_paused(args.peer, False, now, audit=audit),
        LeafKind.PEER_RESUMED,
        "resumed delivery to {peer}",
    )


async def cmd_peer_ping(args) -> int:
    """Fetch the peer's card over mutual TLS and compare it with the pinned one."""
    import aiohttp

    from exchange_node.tls import client_context

    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    store = await _store(cfg)
    try:
        record = store.get_peer(args.peer)
    finally:
        await store.close()
    if record is None:
        raise CliError(f"{args.peer} is not a pinned peer")
    card = verify_card(record.card)
    ssl = None
    if card.endpoint.startswith("https://"):
        ssl = client_context(
            keys.tls_cert_der, keys.tls_key_path, card.tls_certificate, _passphrase(cfg)
        )
    elif not cfg.peer_api.allow_plain_http:
        raise CliError(f"{args.peer}'s endpoint is plain http and allow_plain_http is false")
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(card.endpoint.rstrip("/") + "/exchange/v1/card", ssl=ssl) as resp,
        ):
            data = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CliError(
            f"{args.peer} unreachable at {card.endpoint}: {type(exc).__name__}: {exc}"
        ) from None
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise CliError(f"{args.peer} answered HTTP {status}")
    live = verify_card(data)
    same = live.card_bytes == card.card_bytes
    print(f"{args.peer} reachable over {'mutual TLS' if ssl else 'PLAIN HTTP'} in {elapsed:.1f} ms")
    print(
        f"  its card: serial {live.serial}, fingerprint {live.fingerprint} ({'matches the pinned card' if same else 'DIFFERS from the pinned card'})"
    )
    return 0 if same or live.serial > card.serial else 1


# --- keys --------------------------------------------------------------------------------------


async def cmd_keys_rotate(args) -> int:
    """New keys; the new card is announced to every peer, signed by the old key."""
    cfg = _cfg(args)
    passphrase = _passphrase(cfg)
    successor = prepare_rotation(cfg.data_path, now_ms=now_ms(), passphrase=passphrase)
    body = notice_pb2.Body(
        card_announcement=notice_pb2.CardAnnouncement(
            signed_card=card_pb2.SignedCard.FromString(successor)
        )
    )
    # The announcement is queued before the new card becomes current: a running node
    # takes up the new keys only then, so whatever it signs with them is queued behind
    # the announcement and every peer knows the keys by the time it arrives.
    new_card = verify_card(successor)
    rotated = leaves.key_rotated(
        now_ms(), "operator", "", new_card.serial, new_card.current_signing_key.key_id
    )
    queued = await _announce(cfg, body, rotated)
    after = finish_rotation(cfg.data_path, passphrase)
    print(f"rotated keys: card serial {after.card.serial}, fingerprint {after.fingerprint}")
    print(f"  announced to {queued} peer(s); previous keys stay valid for 7 days")
    return 0


async def cmd_keys_revoke(args) -> int:
    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    kid = bytes.fromhex(args.key_id)
    if kid not in {k.key_id for k in keys.card.signing_keys + keys.card.encryption_keys}:
        raise CliError(
            f"{args.key_id} is not a key on this node's card (see `exchange-node card show`)"
        )
    if kid == keys.local.signing_key.key_id:
        raise CliError(
            "that is the current signing key: run `exchange-node keys rotate` first, then revoke it"
        )
    signed = revoke_key(keys, kid, now_ms=now_ms(), reason=args.reason)
    body = notice_pb2.Body(
        revocation_announcement=notice_pb2.RevocationAnnouncement(
            signed_revocation=card_pb2.SignedRevocation.FromString(signed)
        )
    )
    queued = await _announce(cfg, body, leaves.key_revoked(now_ms(), "operator", "", kid))
    print(f"revoked {kid.hex()}; announced to {queued} peer(s)")
    return 0


async def _announce(cfg: Config, body: notice_pb2.Body, leaf: AuditEvent) -> int:
    """Queue a card or revocation announcement to every peer with the leaf recording the
    change, in one transaction, through the node's own submit path (sealed with the
    keys current now; peers' revoked keys are applied). Returns how many were queued."""

    def record(tx, _items) -> None:
        tx.audit([leaf])

    async with _node(cfg) as node:
        submitted = await node.submit(body, None, actor="operator", also=record, label="keys")
    kind = body.WhichOneof("content")
    for sub in submitted:
        print(f"  queued {kind} for {sub.peer_id}: message {sub.message_id.hex()}")
    return len(submitted)


def load_notice(path: str) -> notice_pb2.Body:
    """A Body from a JSON file in the protobuf JSON mapping; ids are filled in."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: cannot read JSON: {exc}") from None
    try:
        body = json_format.ParseDict(raw, notice_pb2.Body())
    except json_format.ParseError as exc:
        raise CliError(f"{path}: not a notice: {exc}") from None
    kind = body.WhichOneof("content")
    if kind is None:
        raise CliError(f"{path}: give one of statusNotice, fraudNotice, correction, caseEvent")
    inner = getattr(body, kind)
    for field in ("notice_id", "event_id"):
        if field in inner.DESCRIPTOR.fields_by_name and not getattr(inner, field):
            setattr(inner, field, secrets.token_bytes(16))
    return body


async def cmd_send(args) -> int:
    cfg = _cfg(args)
    body = load_notice(args.file)
    recipients = None if args.all else args.to
    if not recipients and not args.all:
        raise CliError("say where to send: --to PEER (repeatable) or --all")
    kind = body.WhichOneof("content")
    if kind not in DOCUMENT_KINDS:
        raise CliError(
            f"{args.file}: send takes travel document notices; use `exchange-node case` for {kind}"
        )
    # The local API's path: the same domain rules (issuing state, MRZ, supersession),
    # indexed and queued with its leaves in one transaction.
    async with _node(cfg) as node:
        try:
            _, submitted = await node.services.notices.submit_body(
                body, recipients, actor="operator"
            )
        except (UnknownRecipient, RecipientNotAllowed) as exc:
            raise CliError(str(exc)) from None
    if not submitted:
        print("  indexed; no pinned peer's policy allows this kind yet, so nothing was queued")
    for sub in submitted:
        print(f"  queued {kind} for {sub.peer_id}: message {sub.message_id.hex()}")
    return 0


# --- status / serve ----------------------------------------------------------------------------


async def cmd_status(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        stats = store.queue_stats()
        dead = store.dead_letters(limit=20)
    finally:
        await store.close()
    now = now_ms()
    print(f"node {cfg.node.id}")
    print(
        f"{'PEER':<14} {'STATE':<7} {'QUEUED':>6} {'OLDEST':>9} {'DELIVERED':>9} {'DEAD':>5} {'LAST CONTACT':<12} LAST ERROR"
    )
    for q in stats:
        print(
            f"{q.peer_id:<14} {'paused' if q.paused else 'active':<7} {q.depth:>6} {_age(q.oldest_queued_at, now):>9} "
            f"{q.delivered:>9} {q.dead:>5} {_age(q.last_contact_at, now):<12} {q.last_error or ''}"
        )
    if dead:
        print("dead letters:")
        for d in dead:
            print(
                f"  {d.peer_id} message {d.message_id.hex()} reason {d.reason} queued {_iso(d.created_at)}"
            )
    return 0


async def cmd_serve(args) -> int:
    from exchange_node.node import Node

    cfg = _cfg(args)
    node = await Node.open(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.ready_file:
        Path(args.ready_file).write_text(
            json.dumps({"peer_port": node.peer_port, "local_port": node.local_port})
        )
    await stop.wait()
    await node.stop()
    return 0


# --- tokens ------------------------------------------------------------------------------------


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


# --- audit ----------------------------------------------------------------------------------------


def _audit_path(cfg: Config) -> Path:
    """The node's database, where its audit log lives (created and migrated if need be)."""
    from exchange_node.node import prepare_database

    return prepare_database(cfg.data_path)


def _parse_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"time {text!r}: expected ISO 8601, e.g. 2026-11-01 or 2026-11-01T12:00Z"
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
        _audit_path(cfg), all_signing_public_keys(cfg.data_path, _passphrase(cfg))
    )
    print(report)
    return 0 if ok else 1


def cmd_audit_show(args) -> int:
    cfg = _cfg(args)
    for line in audit_commands.show(_audit_path(cfg), _filters(args), as_json=args.json):
        print(line)
    return 0


def cmd_audit_prove(args) -> int:
    cfg = _cfg(args)
    print(audit_commands.prove(_audit_path(cfg), args.seq))
    return 0


def cmd_audit_export(args) -> int:
    cfg = _cfg(args)
    print(audit_commands.export(_audit_path(cfg), args.out, _filters(args)))
    return 0


def cmd_audit_verify_bundle(args) -> int:
    key = bytes.fromhex(args.key) if args.key else None
    ok, report = audit_commands.verify_bundle(args.file, key)
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


async def cmd_proof_export(args) -> int:
    """Everything a court's expert needs to check one delivery offline."""
    from exchange_node.audit.bundle import export_bundle
    from exchange_node.evidence import build_proof, verify_proof

    cfg = _cfg(args)
    try:
        mid = bytes.fromhex(args.message_id)
    except ValueError:
        raise CliError(f"message id {args.message_id!r}: expected 32 hex digits") from None
    store = await _store(cfg)
    try:
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
        peer = store.get_peer(row.peer_id)
        if peer is None:
            raise CliError(f"{row.peer_id} is no longer pinned: its card is not available")
    finally:
        await store.close()
    log = _audit(cfg)
    try:
        log.sign_checkpoint(now_ms())  # so the proof covers the latest entries
        public_key = log.stored_public_key()
        bundle = export_bundle(log, log.iter_query(LeafFilter(message_id=mid.hex())), public_key)
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
    Path(args.out).write_bytes(data)
    report = verify_proof(data)
    print(
        f"wrote {args.out}: {row.peer_id} {report.outcome} message {mid.hex()} ({'verifies' if report.ok else 'DOES NOT VERIFY'})"
    )
    print(f"  recipient card fingerprint: {report.recipient_fingerprint}")
    print(f"  audit key fingerprint:      {report.audit_key_fingerprint}")
    return 0 if report.ok else 1


def cmd_proof_verify(args) -> int:
    from exchange_node.evidence import verify_proof

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror}") from None
    key = None
    if args.audit_key:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.audit_key))
        except ValueError:
            raise CliError(
                "--audit-key: expected the sender's Ed25519 public key, 64 hex digits"
            ) from None
    r = verify_proof(data, recipient_fingerprint=args.fingerprint, audit_key=key)
    print(f"delivery proof {args.file}: {'OK' if r.ok else 'FAILED'}")
    print(
        f"  {r.sender} -> {r.recipient}, message {r.message_id}: {r.outcome or '-'} at {_iso(r.received_at_ms)}"
    )
    trust = "as given" if args.fingerprint else "compare it with the recipient's operator"
    print(f"  recipient card fingerprint {r.recipient_fingerprint} ({trust})")
    print(f"  sender audit key fingerprint {r.audit_key_fingerprint}")
    for problem in r.problems:
        print(f"  problem: {problem}")
    return 0 if r.ok else 1


# --- demo -------------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from exchange_node.demo import run_demo

    return run_demo(keep=args.keep, workdir=args.workdir)


# --- local API client: lookup, case ----------------------------------------------------------

DEFAULT_TOKEN_ENV = "EXCHANGE_NODE_TOKEN"
API_TIMEOUT_SECONDS = 30
BATCH_CHUNK = 1000  # the API's limit per lookup request


def _api_base(cfg: Config) -> str:
    """The running node's local API, from ``[local_api] listen`` (a wildcard address is
    reached on loopback)."""
    from exchange_node.config import parse_listen

    host, port = parse_listen(cfg.local_api.listen)
    if port == 0:
        raise CliError(
            f"{cfg.path}: [local_api] listen: port 0 is chosen at start-up and cannot be "
            "reached from here; set a fixed port"
        )
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _api_token(args) -> str:
    if args.token:
        return args.token
    value = os.environ.get(args.token_env, "").strip()
    if not value:
        raise CliError(
            f"no local API token: set {args.token_env} (or pass --token); an operator creates "
            "one with `exchange-node token create`"
        )
    return value


class ApiProblem(CliError):
    """A problem-details answer from the local API: ``code: detail (field F)``."""

    def __init__(self, code: str, detail: str, field: str | None) -> None:
        super().__init__(f"{code}: {detail}" + (f" (field {field})" if field else ""))
        self.code = code
        self.detail = detail
        self.field = field


def _api_call(args, method: str, path: str, body: object | None = None) -> dict:
    """One request to the running node's local API; a problem answer raises
    :class:`ApiProblem`, anything else that goes wrong a :class:`CliError`."""
    import urllib.error
    import urllib.request

    cfg = _cfg(args)
    base = _api_base(cfg)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {_api_token(args)}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_SECONDS) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            code, detail = problem["code"], problem["detail"]
            field = problem.get("field")
        except (ValueError, KeyError, TypeError):
            raise CliError(f"the node answered HTTP {exc.code} {exc.reason}") from None
        raise ApiProblem(code, detail, field) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the node's local API at {base} ({reason}); is `exchange-node serve` "
            "running with this config?"
        ) from None


def _doc_label(answer: dict) -> str:
    doc_type = answer.get("document_type") or ""
    return f"{answer['issuing_state']} {answer['document_number']}" + (
        f" (type {doc_type})" if doc_type else ""
    )


def _record_summary(record: dict) -> str:
    parts = [record["status"] or "no status in effect"]
    if record["fraud"]:
        parts.append("fraud: " + ", ".join(record["fraud"]))
    parts.append("sources: " + ", ".join(record["sources"]))
    return "; ".join(parts)


def _print_answer(answer: dict) -> None:
    if not answer["known"]:
        print(f"{_doc_label(answer)}: not known to this node")
        return
    for record in answer["records"]:
        doc = record["document"]
        label = (
            f"{doc['issuing_state']} {doc['document_number']} (type {doc['document_type'] or '-'})"
        )
        print(f"{label}: {_record_summary(record)}")
        for h in record["history"]:
            n = h["notice"]
            state = (
                "withdrawn"
                if h["withdrawn"]
                else f"superseded by {h['superseded_by'][:12]}"
                if h["superseded_by"]
                else "in effect"
                if h["in_effect"]
                else "not in effect"
            )
            place = f" at {n['detection']['place']}" if n.get("detection") else ""
            print(
                f"  {_iso(n['issued_at_ms'])}  {n['kind']:<22} from {n['sender_node']}{place}"
                f"  notice {n['notice_id'][:12]}  {state}"
            )


def _batch_queries(path: str) -> list[tuple[int, dict]]:
    """``(line number, query)`` for each ``STATE NUMBER [TYPE]`` line; blank lines and
    ``#`` comments are skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--batch: cannot read {path}: {exc}") from None
    queries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise CliError(f"{path}:{lineno}: expected STATE NUMBER [TYPE], got {line.strip()!r}")
        query = {"issuing_state": words[0], "document_number": words[1]}
        if len(words) == 3:
            query["document_type"] = words[2]
        queries.append((lineno, query))
    if not queries:
        raise CliError(f"{path}: no documents to look up (one STATE NUMBER [TYPE] per line)")
    return queries


def cmd_lookup(args) -> int:
    from urllib.parse import quote

    if args.batch:
        if args.state or args.number or args.type:
            raise CliError("--batch: give either a file or STATE NUMBER [--type T], not both")
        queries = _batch_queries(args.batch)
        known = 0
        for start in range(0, len(queries), BATCH_CHUNK):
            chunk = queries[start : start + BATCH_CHUNK]
            documents = [query for _, query in chunk]
            try:
                page = _api_call(args, "POST", "/api/v1/documents/lookup", {"documents": documents})
            except ApiProblem as exc:
                # The API names the item by its index in the request; name the file's line.
                m = re.fullmatch(r"documents\[(\d+)\]\.?(.*)", exc.field or "")
                if m is None or int(m.group(1)) >= len(chunk):
                    raise
                where = f"{args.batch}:{chunk[int(m.group(1))][0]}"
                field = f", field {m.group(2)}" if m.group(2) else ""
                raise CliError(f"{exc.code}: {exc.detail} ({where}{field})") from None
            for answer in page["results"]:
                if answer["known"]:
                    known += 1
                    for record in answer["records"]:
                        doc = record["document"]
                        print(
                            f"{doc['issuing_state']} {doc['document_number']} "
                            f"{doc['document_type'] or '-'}: {_record_summary(record)}"
                        )
                else:
                    print(f"{_doc_label(answer)}: not known")
        print(f"{len(queries)} looked up, {known} known", file=sys.stderr)
        return 0
    if not (args.state and args.number):
        raise CliError("give STATE NUMBER (e.g. PHL P1234567A) or --batch FILE")
    path = f"/api/v1/documents/{quote(args.state, safe='')}/{quote(args.number, safe='')}"
    if args.type:
        path += f"?type={quote(args.type, safe='')}"
    _print_answer(_api_call(args, "GET", path))
    return 0


def _sent_to(messages: list[dict]) -> str:
    if not messages:
        return "nothing to send"
    return "sent to " + ", ".join(f"{m['recipient']} (message {m['message_id']})" for m in messages)


def cmd_case_open(args) -> int:
    participants = []
    for item in args.participant:
        node_id, sep, role = item.partition(":")
        if not sep or not node_id or not role:
            raise CliError(
                f"--participant: expected NODE_ID:ROLE (e.g. PHL-DFA:ORIGIN_STATE), got {item!r}"
            )
        participants.append({"node_id": node_id, "role": role.upper()})
    body: dict = {"participants": participants, "note": args.note}
    if args.personal_data:
        # From a file (or stdin), never from the command line: arguments end up in shell
        # history and in every user's process list.
        try:
            raw = (
                sys.stdin.read()
                if args.personal_data == "-"
                else Path(args.personal_data).read_text(encoding="utf-8")
            )
            body["personal_data"] = json.loads(raw)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(
                f"--personal-data: cannot read a JSON object from {args.personal_data}: {exc}"
            ) from None
    answer = _api_call(args, "POST", "/api/v1/cases", body)
    print(f"opened case {answer['case_ref']} ({answer['status']}); {_sent_to(answer['messages'])}")
    return 0


def cmd_case_event(args) -> int:
    from urllib.parse import quote

    answer = _api_call(
        args,
        "POST",
        f"/api/v1/cases/{quote(args.case_ref, safe='')}/events",
        {"type": args.type, "note": args.note},
    )
    print(
        f"case {answer['case_ref']} step {answer['sequence']}: now {answer['status']}; "
        f"{_sent_to(answer['messages'])}"
    )
    return 0


def cmd_case_show(args) -> int:
    from urllib.parse import quote

    case = _api_call(args, "GET", f"/api/v1/cases/{quote(args.case_ref, safe='')}")
    print(
        f"case {case['case_ref']}: {case['status']}, consent "
        f"{'recorded' if case['consent'] else 'not recorded'}; this node is {case['my_role']}"
    )
    print(f"opened by {case['opened_by']} at {_iso(case['opened_at_ms'])}")
    print(
        "participants: " + ", ".join(f"{p['node_id']} ({p['role']})" for p in case["participants"])
    )
    personal = case.get("personal_data")
    if personal:
        print("personal data: " + ", ".join(f"{k}={v}" for k, v in personal.items() if v))
    print("next steps allowed: " + (", ".join(case["allowed_events"]) or "none"))
    print("timeline:")
    for e in case["timeline"]:
        who = e["actor"] + (f" ({e['performed_by']})" if e["performed_by"] else "")
        print(
            f"  {e['sequence']:>3}  {_iso(e['at_ms'])}  {e['type']:<28} by {who}"
            f"  {e['from_status']} -> {e['to_status']}"
        )
        if e["note"]:
            print(f"       note: {e['note']}")
        for d in e["deliveries"]:
            print(f"       {d['recipient']}: {d['state']}")
    return 0


# --- parser ------------------------------------------------------------------------------------------


class _PrintVersion(argparse.Action):
    """``--version``: one unwrapped line (argparse's own action re-wraps it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exchange-node", description="Signed, encrypted notice exchange between authorities."
    )
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action=_PrintVersion, nargs=0, help="print what runs and exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create this node's identity and config")
    s.add_argument("--node-id", required=True, help="e.g. JPN-ISA")
    s.add_argument("--country", required=True, help="ICAO Doc 9303 code, e.g. JPN")
    s.add_argument("--display-name", default="")
    s.add_argument(
        "--endpoint", required=True, help="URL peers use, e.g. https://jpn-isa.example:8443"
    )
    s.add_argument("--peer-listen", default="127.0.0.1:8443")
    s.add_argument("--local-listen", default="127.0.0.1:8080")
    s.add_argument("--data-dir", default="data")
    s.add_argument(
        "--plain-http", action="store_true", help="demo/testing only: no TLS between nodes"
    )
    s.set_defaults(func=cmd_init)

    card = sub.add_parser("card", help="this node's card").add_subparsers(
        dest="card_cmd", required=True
    )
    s = card.add_parser("show", help="print a card and its fingerprint")
    s.add_argument("file", nargs="?", help="a card file (default: this node's)")
    s.set_defaults(func=cmd_card_show)
    s = card.add_parser("export", help="write this node's card for peers")
    s.add_argument("--out", default="-")
    s.set_defaults(func=cmd_card_export)

    peer = sub.add_parser("peer", help="pinned peers").add_subparsers(
        dest="peer_cmd", required=True
    )
    s = peer.add_parser("add", help="pin a peer's card after comparing its fingerprint")
    s.add_argument("card")
    s.add_argument("--fingerprint", required=True)
    s.add_argument(
        "--allow", help=f"comma-separated notice kinds ({','.join(NOTICE_KINDS)}); default all"
    )
    s.set_defaults(func=cmd_peer_add)
    peer.add_parser("list").set_defaults(func=cmd_peer_list)
    for name, func, helptext in (
        ("remove", cmd_peer_remove, "unpin a peer"),
        ("pause", cmd_peer_pause, "stop delivering to a peer"),
        ("resume", cmd_peer_resume, "deliver to a paused peer again"),
        ("ping", cmd_peer_ping, "check a peer is reachable and its card matches"),
    ):
        s = peer.add_parser(name, help=helptext)
        s.add_argument("peer")
        if name == "remove":
            s.add_argument(
                "--force",
                action="store_true",
                help="even with queued messages (they become dead letters)",
            )
        s.set_defaults(func=func)

    keys = sub.add_parser("keys", help="key rotation and revocation").add_subparsers(
        dest="keys_cmd", required=True
    )
    keys.add_parser("rotate", help="new keys; announce the new card to all peers").set_defaults(
        func=cmd_keys_rotate
    )
    s = keys.add_parser("revoke", help="revoke one of this node's earlier keys")
    s.add_argument("key_id")
    s.add_argument("--reason", default="key compromised")
    s.set_defaults(func=cmd_keys_revoke)

    s = sub.add_parser("serve", help="run the node")
    s.add_argument("--ready-file", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("send", help="queue a notice from a JSON file")
    s.add_argument("file")
    s.add_argument("--to", action="append", help="recipient node id (repeatable)")
    s.add_argument("--all", action="store_true", help="every peer whose policy allows the notice")
    s.set_defaults(func=cmd_send)

    sub.add_parser("status", help="queues, dead letters, last contact per peer").set_defaults(
        func=cmd_status
    )

    tok = sub.add_parser("token", help="local API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    s = tok.add_parser("create")
    s.add_argument("--role", required=True, choices=sorted(TOKEN_ROLES))
    s.add_argument("--name", required=True)
    s.set_defaults(func=cmd_token_create)
    s = tok.add_parser("list")
    s.add_argument("--all", action="store_true", help="include revoked tokens")
    s.set_defaults(func=cmd_token_list)
    s = tok.add_parser("revoke")
    s.add_argument("name")
    s.set_defaults(func=cmd_token_revoke)

    aud = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="audit_cmd", required=True
    )
    aud.add_parser("verify", help="recompute the tree and check every checkpoint").set_defaults(
        func=cmd_audit_verify
    )
    for name, func in (("show", cmd_audit_show), ("export", cmd_audit_export)):
        s = aud.add_parser(name)
        s.add_argument("--since")
        s.add_argument("--until")
        s.add_argument("--peer")
        s.add_argument("--kind")
        s.add_argument("--message-id")
        s.add_argument("--actor")
        s.add_argument("--limit", type=int)
        if name == "show":
            s.add_argument("--json", action="store_true", help="JSON lines for tools")
        else:
            s.add_argument("--out", required=True)
        s.set_defaults(func=func)
    s = aud.add_parser("prove", help="inclusion proof of one entry with its checkpoint")
    s.add_argument("seq", type=int)
    s.set_defaults(func=cmd_audit_prove)
    s = aud.add_parser("verify-bundle", help="check an exported bundle offline")
    s.add_argument("file")
    s.add_argument("--key", help="the node's Ed25519 public key (hex), if known")
    s.set_defaults(func=cmd_audit_verify_bundle)
    aud.add_parser("checkpoint", help="sign a checkpoint now").set_defaults(
        func=cmd_audit_checkpoint
    )

    def api_client_options(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--token", help="local API token (prefer --token-env: arguments show in `ps`)"
        )
        s.add_argument(
            "--token-env",
            default=DEFAULT_TOKEN_ENV,
            help=f"environment variable holding the token (default {DEFAULT_TOKEN_ENV})",
        )

    s = sub.add_parser("lookup", help="look up travel documents on the running node (audited)")
    s.add_argument("state", nargs="?", help="ICAO issuing state code, e.g. PHL")
    s.add_argument("number", nargs="?", help="document number")
    s.add_argument("--type", help="document type code, e.g. P")
    s.add_argument("--batch", metavar="FILE", help="one STATE NUMBER [TYPE] per line ('-': stdin)")
    api_client_options(s)
    s.set_defaults(func=cmd_lookup)

    case = sub.add_parser("case", help="repatriation cases on the running node").add_subparsers(
        dest="case_cmd", required=True
    )
    s = case.add_parser("open", help="open a case as the identifying state")
    s.add_argument(
        "--participant",
        action="append",
        required=True,
        metavar="NODE_ID:ROLE",
        help="e.g. PHL-DFA:ORIGIN_STATE or IOM-MNL:IOM (repeatable)",
    )
    s.add_argument("--note", default="")
    s.add_argument(
        "--personal-data", metavar="FILE", help="JSON object of personal fields ('-': stdin)"
    )
    api_client_options(s)
    s.set_defaults(func=cmd_case_open)
    s = case.add_parser("event", help="record one step of a case")
    s.add_argument("case_ref")
    s.add_argument("type", help="e.g. record_consent, accept_return, plan_travel")
    s.add_argument("--note", default="")
    api_client_options(s)
    s.set_defaults(func=cmd_case_event)
    s = case.add_parser("show", help="a case's state and timeline (audited)")
    s.add_argument("case_ref")
    api_client_options(s)
    s.set_defaults(func=cmd_case_show)

    proof = sub.add_parser("proof", help="proof of delivery for a court or auditor").add_subparsers(
        dest="proof_cmd", required=True
    )
    s = proof.add_parser(
        "export", help="signed receipt, recipient card and audit proof in one file"
    )
    s.add_argument("message_id")
    s.add_argument("--peer", help="the recipient, when the message went to several")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_proof_export)
    s = proof.add_parser("verify", help="check a delivery proof offline")
    s.add_argument("file")
    s.add_argument("--fingerprint", help="the recipient's card fingerprint, obtained out of band")
    s.add_argument("--audit-key", help="the sender's audit (signing) public key, hex")
    s.set_defaults(func=cmd_proof_verify)

    s = sub.add_parser("demo", help="three nodes on loopback play a scenario")
    s.add_argument("--keep", action="store_true", help="keep the working directory")
    s.add_argument("--workdir", help="where to put the nodes (default: a temporary directory)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if crash_at := os.environ.get("EXCHANGE_NODE_CRASH_AT"):
        # Crash tests only (store/faults.py): kill this process at a named commit point.
        from exchange_node.store import faults

        faults.arm_from(crash_at)
    configure_logs(args.log_level)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (CliError, ConfigError, IdentityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExchangeError as exc:
        print(
            f"error: {exc.code}: {exc.message}" + (f" (field {exc.field})" if exc.field else ""),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
