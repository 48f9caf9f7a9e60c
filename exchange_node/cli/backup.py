"""``backup`` and ``restore`` of the data directory (``exchange_node/backup.py``)."""

from __future__ import annotations

from pathlib import Path

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.backup import make_backup, restore_backup
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
    now = now_ms()
    store = await _store(cfg)
    try:
        # In the log the backup holds: a restored node's log says when it was taken.
        await store.append_audit([leaves.backup(now, LeafKind.BACKUP_MADE, operator_actor(), now)])
    finally:
        await store.close()
    manifest = make_backup(cfg, out, now)
    print(f"backed up {cfg.node.id} into {out} ({len(manifest.files)} files, all 0600)")
    print("it holds the node's private keys: keep it as safe as the node itself")
    return 0


async def cmd_restore(args) -> int:
    cfg = _cfg(args)
    manifest = restore_backup(cfg, Path(args.backup))
    store = await _store(cfg)
    try:
        await store.append_audit(
            [leaves.backup(now_ms(), LeafKind.BACKUP_RESTORED, operator_actor(), manifest.made_at)]
        )
    finally:
        await store.close()
    print(f"restored {manifest.node_id} into {cfg.data_path} from {args.backup}")
    print("next: `exchange-node audit verify`, then start the node")
    return 0
