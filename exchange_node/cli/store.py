"""``exchange-node store``: the node's database itself."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit.log import AuditLog
from exchange_node.cli.common import CliError, _audit_path, _cfg, _passphrase
from exchange_node.config import StoreSection, check_store
from exchange_node.identity import all_signing_public_keys


def cmd_store_migrate_to_postgresql(args) -> int:
    """Copy a stopped node's SQLite database into a new PostgreSQL database, check the
    copy (row counts, the audit tree verified with the node's keys, the same root),
    and print the [store] lines that switch the config over."""
    from exchange_node.config import Config
    from exchange_node.store.postgresql import connect, copy_from_sqlite, redact

    cfg = _cfg(args)
    if cfg.store.url:
        raise CliError(f"{cfg.path}: [store] url is set: this node is on PostgreSQL already")
    store = StoreSection(
        url=args.url, password_file=args.password_file or "", password_env=args.password_env or ""
    )
    check_store("--url", store)
    target = Config(node=cfg.node, store=store, path=cfg.path)
    password = target.store_password
    from exchange_node.node import lock_data_dir

    # The node must be stopped: a serve still running would acknowledge what the copy
    # no longer takes. Its lock refuses (data_dir_locked) while one runs.
    lock = lock_data_dir(cfg.data_path)
    try:
        path = _audit_path(cfg)  # migrated to this release's schema first
        copied = copy_from_sqlite(str(path), args.url, password)
    finally:
        lock.close()
    keys = [
        Ed25519PublicKey.from_public_bytes(k)
        for k in all_signing_public_keys(cfg.data_path, _passphrase(cfg))
    ]
    with AuditLog(path, node_id=cfg.node.id, create=False) as old:
        old_size, old_root = old.size, old.root()
    with AuditLog(
        redact(args.url), node_id=cfg.node.id, connection=connect(args.url, password)
    ) as new:
        report = new.verify(keys)
        if not report.ok or (new.size, new.root()) != (old_size, old_root):
            raise CliError(
                f"the audit log copied into {redact(args.url)} does not verify ({report}); "
                "keep running on SQLite and report this"
            )
    for table, n in sorted(copied.items()):
        print(f"{table:<24} {n} row(s)")
    print(f"audit log: {old_size} leaves, root {old_root.hex()}, verified on PostgreSQL")
    print(f"\nCopied into {redact(args.url)}. Add to {cfg.path} and start the node:\n")
    print("[store]")
    print(f'url = "{args.url}"')
    if args.password_file:
        print(f'password_file = "{args.password_file}"')
    if args.password_env:
        print(f'password_env = "{args.password_env}"')
    print(f"\nKeep {path} as the backup of the moment of the move.")
    return 0
