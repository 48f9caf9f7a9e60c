"""Setting a node up: ``init`` and its card (``card show``, ``card export``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from exchange_node.audit.log import LeafFilter
from exchange_node.cli.common import (
    CliError,
    _audit,
    _cfg,
    _iso,
    _passphrase,
    _store,
    now_ms,
    output_path,
    print_json,
    write_output,
)
from exchange_node.config import ConfigError, load_config, render_config
from exchange_node.identity import (
    create_identity,
    load_identity,
)
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keys import Suite


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
        suite=args.suite,
        key_passphrase_env=args.key_passphrase_env,
    )
    tmp = config_path.with_name(config_path.name + ".new")
    tmp.write_text(text)
    try:
        cfg = load_config(tmp)
        passphrase = _passphrase(cfg)
    except ConfigError as exc:
        tmp.unlink()
        raise CliError(
            str(exc)
            .replace(str(tmp.resolve()), "init arguments")
            .replace(str(tmp), "init arguments")
        ) from None
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
        passphrase=passphrase,
    )
    tmp.rename(config_path)
    print(f"created node {keys.local.node_id} ({cfg.node.country})")
    print(f"  config:      {config_path}")
    print(f"  data:        {data}")
    print(f"  card:        {data / 'card.pb'}")
    print(f"  fingerprint: {keys.fingerprint}")
    print("Send card.pb to your peers and read them the fingerprint by phone.")
    return 0


def _validity(k, revoked: dict[bytes, int]) -> str:
    text = f"valid {_iso(k.not_before_ms)} .. {_iso(k.not_after_ms) if k.not_after_ms else 'open'}"
    if k.key_id in revoked:
        text += f"  REVOKED {_iso(revoked[k.key_id])}"
    return text


def _describe_card(card, revoked: dict[bytes, int] | None = None) -> list[str]:
    revoked = revoked or {}
    lines = [
        f"node:        {card.node_id} ({card.country}) {card.display_name}",
        f"endpoint:    {card.endpoint}",
        f"serial:      {card.serial}, issued {_iso(card.issued_at_ms)}",
        f"fingerprint: {card.fingerprint}",
        f"tls sha256:  {card.tls_cert_sha256.hex()}",
    ]
    for k in card.signing_keys:
        lines.append(f"signing key:    {k.key_id.hex()} {_validity(k, revoked)}")
    for k in card.encryption_keys:
        suite = Suite.for_algorithm(k.algorithm).name.lower().replace("_", "-")
        lines.append(f"encryption key: {k.key_id.hex()} {suite} {_validity(k, revoked)}")
    return lines


def _card_json(card, revoked: dict[bytes, int]) -> dict:
    """A card in ``card show --json`` (stable keys; times in Unix ms, 0 = open)."""

    def key(k, suite: str | None) -> dict:
        entry = {
            "key_id": k.key_id.hex(),
            "not_before": k.not_before_ms,
            "not_after": k.not_after_ms,
            "revoked_at": revoked.get(k.key_id),
        }
        return entry | ({"suite": suite} if suite else {})

    return {
        "node_id": card.node_id,
        "country": card.country,
        "display_name": card.display_name,
        "endpoint": card.endpoint,
        "serial": card.serial,
        "issued_at": card.issued_at_ms,
        "fingerprint": card.fingerprint,
        "tls_cert_sha256": card.tls_cert_sha256.hex(),
        "signing_keys": [key(k, None) for k in card.signing_keys],
        "encryption_keys": [
            key(k, Suite.for_algorithm(k.algorithm).name.lower().replace("_", "-"))
            for k in card.encryption_keys
        ],
    }


async def _revoked_keys(cfg) -> dict[bytes, int]:
    """Key ids this node knows to be revoked, with when: peers' revocations it adopted
    and its own (``keys revoke``), as its store and audit log record them."""
    from exchange_node.delivery.outbox import REVOCATIONS_META

    store = await _store(cfg)
    try:
        stored = json.loads((store.get_meta(REVOCATIONS_META) or b"{}").decode())
    finally:
        await store.close()
    revoked = {bytes.fromhex(k): int(v) for k, v in stored.items()}
    log = _audit(cfg, write=False)
    try:
        for leaf in log.iter_query(LeafFilter(kind="key.revoked")):
            attrs = leaf.record.attrs
            at = int(attrs.get("revoked_at") or leaf.record.time)
            revoked.setdefault(bytes.fromhex(attrs["key_id"]), at)
    finally:
        log.close()
    return revoked


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


async def cmd_card_show(args) -> int:
    """A card (a file, or this node's) with the keys this node knows to be revoked
    marked; a file shown without a config of this node is shown as it is."""
    config_exists = Path(args.config).exists()
    cfg = _cfg(args) if config_exists or not args.file else None
    card = _read_card(args.file or str(cfg.data_path / "card.pb"))
    revoked = await _revoked_keys(cfg) if cfg is not None else {}
    if args.json:
        print_json(_card_json(card, revoked))
    else:
        print("\n".join(_describe_card(card, revoked)))
    return 0


def cmd_card_export(args) -> int:
    out = None if args.out == "-" else output_path(args.out)
    if out is None and sys.stdout.isatty():
        raise CliError(
            "the card is binary: give --out FILE (e.g. --out card.pb) or redirect standard"
            " output to a file",
            code="binary_to_terminal",
        )
    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    if out is None:
        sys.stdout.buffer.write(keys.card_bytes)
    else:
        write_output(out, keys.card_bytes)
        print(f"wrote {args.out} ({len(keys.card_bytes)} bytes); fingerprint {keys.fingerprint}")
    return 0
