"""What every command shares: config, store and node opened through the composition
root, the error every command turns into one ``error:`` line, time formatting."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path

from exchange_node.audit.log import AuditLog
from exchange_node.config import Config, load_config
from exchange_node.identity import (
    load_identity,
)
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
    from exchange_node.node import open_audit_log, open_store

    store = await open_store(cfg)
    # append_on uses only the writer's connection it is handed; the log object is
    # needed here once, to make sure the log's own records exist.
    try:
        log = open_audit_log(cfg, store)
    except BaseException:
        await store.close()
        raise
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
    from exchange_node.node import open_audit_log

    keys = load_identity(cfg.data_path, _passphrase(cfg)) if write else None
    return open_audit_log(cfg, None, keys.local.signing_key.private if keys else None)


def _audit_source(cfg: Config) -> Path | AuditLog:
    """What the audit commands read: the node's database file, or (PostgreSQL) its
    audit log opened on the server, read-only."""
    if cfg.store.url:
        return _audit(cfg, write=False)
    return _audit_path(cfg)


def _audit_path(cfg: Config) -> Path:
    """The node's database, where its audit log lives (created and migrated if need be)."""
    from exchange_node.node import prepare_database

    return prepare_database(cfg.data_path)
