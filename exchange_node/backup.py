"""Backing up and restoring a node's data directory, consistent while the node runs.

A backup is a new folder (0700) holding the config file and a copy of the data
directory: the database copied with SQLite's online backup API (one consistent
snapshot, while ``serve`` keeps writing), every other file (keys, card, the keys of data
at rest and of audit subject hashes) copied as it is, all 0600, and ``MANIFEST.json``
with each file's SHA-256 and original mode. Restoring checks every hash first, then
writes into an empty data directory holding its lock, so no ``serve`` starts half-way.

The key-encryption keys (``keys/kek-<n>.key``) are never in the backup folder: a
database backup together with the KEK that wraps its data keys would bring an erased
case back for as long as the backup is kept. They are copied, if asked, into a folder
of their own (``keks_out``) meant for another medium or a key escrow, whose copies the
operator destroys when the node destroys a version (docs/operations.md section 9).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from exchange_node.config import Config
from exchange_node.errors import ConflictError, ValidationError
from exchange_node.node import DATABASE, LOCK_FILE, lock_data_dir
from exchange_node.record_keys import KekFiles
from exchange_node.store.sqlite import SqliteStore

FORMAT = "exchange-node-backup/1"
MANIFEST = "MANIFEST.json"
CONFIG_COPY = "node.toml"

# Not copied: the lock of a running serve, and the database's own side files (the
# snapshot includes what they hold).
_SKIPPED = {LOCK_FILE, DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal"}
_KEK_NAME = re.compile(r"kek-[0-9]{1,9}\.key")


@dataclass(frozen=True)
class Manifest:
    node_id: str
    made_at: int
    files: dict[str, dict]  # "data/<relative path>" -> {"sha256", "mode"}


def _is_kek(rel: Path) -> bool:
    return rel.parent.as_posix() == "keys" and _KEK_NAME.fullmatch(rel.name) is not None


def make_backup(cfg: Config, out: Path, now: int, keks_out: Path | None = None) -> Manifest:
    """Write a backup of ``cfg``'s node into the new folder ``out``; the key-encryption
    key files into the new folder ``keks_out`` if given (never into ``out``)."""
    data = cfg.data_path
    out.mkdir(mode=0o700)
    files: dict[str, dict] = {}

    def record(name: str, target: Path, mode: int) -> None:
        target.chmod(0o600)
        files[name] = {"sha256": _sha256(target), "mode": f"{mode:o}"}

    (out / "data").mkdir(mode=0o700)
    SqliteStore.backup_file(data / DATABASE, out / "data" / DATABASE)
    record(f"data/{DATABASE}", out / "data" / DATABASE, 0o600)
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data)
        if path.is_dir() or rel.as_posix() in _SKIPPED or rel.as_posix() == DATABASE:
            continue
        if _is_kek(rel):
            if keks_out is not None:
                keks_out.mkdir(mode=0o700, parents=True, exist_ok=True)
                _copy_private(path, keks_out / rel.name)
            continue
        target = out / "data" / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _copy_private(path, target)
        record(f"data/{rel.as_posix()}", target, path.stat().st_mode & 0o777)
    if cfg.path:
        _copy_private(Path(cfg.path), out / CONFIG_COPY)
        record(CONFIG_COPY, out / CONFIG_COPY, 0o600)
    manifest = Manifest(cfg.node.id, now, files)
    document = {"format": FORMAT, "node_id": cfg.node.id, "made_at": now, "files": files}
    (out / MANIFEST).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (out / MANIFEST).chmod(0o600)
    _fsync_tree(out)
    return manifest


def read_backup(src: Path) -> Manifest:
    """The manifest of the backup in ``src``, every file checked against it. Raises
    ``ValidationError`` (``backup_invalid``, ``backup_damaged``) naming what is wrong."""
    try:
        document = json.loads((src / MANIFEST).read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {FORMAT}")
        manifest = Manifest(document["node_id"], int(document["made_at"]), document["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(
            "backup_invalid", f"{src} is not an exchange-node backup ({exc})", "backup"
        ) from None
    if f"data/{DATABASE}" not in manifest.files:
        raise ValidationError("backup_invalid", f"{src} holds no database", "backup")
    for name, entry in manifest.files.items():
        path = src / name
        if ".." in Path(name).parts or not path.is_file() or _sha256(path) != entry["sha256"]:
            raise ValidationError(
                "backup_damaged",
                f"{path} is missing or does not match {MANIFEST}; use another backup",
                "backup",
            )
    return manifest


def restore_backup(cfg: Config, src: Path, keks: Path | None = None) -> Manifest:
    """Restore the backup in ``src`` into ``cfg``'s data directory, which must be empty
    or absent (move the old one aside first), with the key-encryption key files found in
    ``keks`` (the folder ``backup --keks-out`` wrote, or the key escrow's copy). Returns
    the manifest restored."""
    manifest = read_backup(src)
    if manifest.node_id != cfg.node.id:
        raise ConflictError(
            "backup_other_node",
            f"{src} is a backup of {manifest.node_id}, not of {cfg.node.id}",
            "backup",
        )
    data = cfg.data_path
    if data.exists() and any(data.iterdir()):
        raise ConflictError(
            "data_dir_not_empty",
            f"{data} is not empty; move it aside first (mv {data} {data}.old)",
            "node.data_dir",
        )
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    data.chmod(0o700)
    lock = lock_data_dir(data)
    try:
        for name, entry in manifest.files.items():
            if not name.startswith("data/"):
                continue
            target = data / name.removeprefix("data/")
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _copy_private(src / name, target)
            target.chmod(int(entry["mode"], 8))
        if keks is not None:
            for path in sorted(keks.iterdir()):
                if _KEK_NAME.fullmatch(path.name):
                    (data / "keys").mkdir(exist_ok=True, mode=0o700)
                    _copy_private(path, data / "keys" / path.name)
        _fsync_tree(data)
    finally:
        lock.close()
    return manifest


def missing_keks(data: Path, needed: list[int]) -> list[int]:
    """The key-encryption key versions in ``needed`` (those the database wraps data keys
    under) whose file is not in ``data``'s keys folder."""
    present = set(KekFiles(data / "keys").versions())
    return [v for v in needed if v not in present]


def _copy_private(source: Path, target: Path) -> None:
    """Copy bytes into a new file created 0600 (never readable by others, not even for
    a moment)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as inp:
        shutil.copyfileobj(inp, out)
        out.flush()
        os.fsync(out.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Make the new folders' entries durable (files were fsynced as written)."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
