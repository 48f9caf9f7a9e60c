"""``backup`` and ``restore`` of the data directory (``exchange_node/backup.py``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.backup import make_backup, missing_keks, restore_backup
from exchange_node.cli.common import CliError, _cfg, _store, now_ms, operator_actor


async def cmd_backup(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise CliError(f"--out {out}: already exists; name a new folder", code="out_exists")
    if not out.parent.is_dir():
        raise CliError(
            f"--out {out}: folder {out.parent} does not exist; create it first",
            code="out_folder_missing",
        )
    cfg = _cfg(args)
    if cfg.store.url:
        raise CliError(
            "this node's store is PostgreSQL: back it up with pg_dump or pg_basebackup"
            " (docs/operations.md section 15); `backup` copies a SQLite node",
            code="backup_postgresql",
        )
    keks_out = Path(args.keks_out) if args.keks_out else None
    if keks_out is not None and keks_out.exists():
        raise CliError(
            f"--keks-out {keks_out}: already exists; name a new folder", code="out_exists"
        )
    now = now_ms()
    store = await _store(cfg)
    try:
        # In the log the backup holds: a restored node's log says when it was taken.
        await store.append_audit([leaves.backup(now, LeafKind.BACKUP_MADE, operator_actor(), now)])
    finally:
        await store.close()
    try:
        manifest = make_backup(cfg, out, now, keks_out)
    except BaseException:
        # No half backup of private keys left behind (the leaf says one was begun).
        for folder in (out, keks_out):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    print(f"backed up {cfg.node.id} into {out} ({len(manifest.files)} files, all 0600)")
    print("it holds the node's private keys: keep it as safe as the node itself")
    if keks_out is not None:
        print(
            f"key-encryption keys written to {keks_out}: keep them on another medium than the"
            " backup, and destroy a version's copy when `data kek list` shows it destroyed"
        )
    else:
        print(
            "key-encryption keys (keys/kek-*.key) are not in it: keep them apart"
            " (`backup --keks-out DIR`, docs/operations.md section 9)"
        )
    return 0


async def cmd_restore(args) -> int:
    cfg = _cfg(args)
    if args.keks and not Path(args.keks).is_dir():
        raise CliError(
            f"--keks {args.keks}: not a folder; name where `backup --keks-out` put the"
            " key-encryption keys",
            code="keks_folder_missing",
        )
    if cfg.store.url:
        raise CliError(
            "this node's store is PostgreSQL: restore it with pg_restore"
            " (docs/operations.md section 15); `restore` writes a SQLite node",
            code="backup_postgresql",
        )
    manifest = restore_backup(cfg, Path(args.backup), Path(args.keks) if args.keks else None)
    store = await _store(cfg)
    try:
        await store.append_audit(
            [leaves.backup(now_ms(), LeafKind.BACKUP_RESTORED, operator_actor(), manifest.made_at)]
        )
        needed = [
            k.version
            for k in store.kek_versions()
            if k.destroyed_at is None and store.record_keys_under(k.version)
        ]
    finally:
        await store.close()
    print(f"restored {manifest.node_id} into {cfg.data_path} from {args.backup}")
    for version in missing_keks(cfg.data_path, needed):
        print(
            f"warning: keys/kek-{version}.key is missing: cases wrapped under it stay"
            f" unreadable until it is copied into {cfg.data_path / 'keys'} (0600) from where"
            " `backup --keks-out` put it",
            file=sys.stderr,
        )
    print("next: `exchange-node audit verify`, then start the node")
    return 0
