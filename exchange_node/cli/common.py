"""What every command shares: config, store and node opened through the composition
root, the error every command turns into one ``error:`` line, time formatting."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import re
import time
from pathlib import Path

from exchange_node.audit.log import AuditLog
from exchange_node.config import Config, load_config
from exchange_node.identity import (
    load_identity,
)
from exchange_node.store.sqlite import SqliteStore

DEFAULT_CONFIG = "config/node.toml"
CONFIG_ENV = "EXCHANGE_NODE_CONFIG"
"""Environment variable naming the config file when ``--config`` is not given."""


class CliError(Exception):
    """A problem to report in one line: ``error: [CODE: ]MESSAGE``. ``code``, when given,
    is stable (lower_snake_case, never reworded) for scripts that check it."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def print_json(document: object) -> None:
    """``--json`` output: one JSON document, keys sorted, for tools (the schema of each
    command is in docs/operations.md and only grows)."""
    print(json.dumps(document, sort_keys=True, ensure_ascii=False))


def output_path(value: str, option: str = "--out") -> Path:
    """Where a command writes its file, checked before any work is done: a missing or
    wrong folder is one line naming it, not a traceback after the work."""
    path = Path(value)
    folder = path.parent
    if not folder.is_dir():
        raise CliError(
            f"{option} {value}: folder {folder} does not exist; create it first"
            f" (mkdir -p {folder})",
            code="out_folder_missing",
        )
    if path.is_dir():
        raise CliError(f"{option} {value}: is a folder; name a file", code="out_is_folder")
    return path


def write_output(path: Path, data: bytes, option: str = "--out") -> None:
    """Write a command's file; an OS refusal (permissions, full disk) is one line."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(
            f"{option} {path}: cannot write: {exc.strerror}", code="out_unwritable"
        ) from None


_ACTOR_USER = re.compile(r"[A-Za-z0-9._@+\-]{1,100}")


def operator_actor() -> str:
    """The audit actor of an operator's command: ``operator:<OS user>``, so the log says
    who at the node's console did it. The user is the account the process runs as (its
    real uid), not ``$USER``, which anyone can set; ``operator`` alone when the account
    has no name, or one the log's alphabet cannot hold."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return "operator"
    return f"operator:{user}" if _ACTOR_USER.fullmatch(user) else "operator"


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

    path = prepare_database(cfg.data_path)
    # The log's own records (its origin) exist from the first command on, so that the
    # read-only audit commands find a log, empty, on a node that has done nothing yet.
    AuditLog(path, node_id=cfg.node.id).close()
    return path
