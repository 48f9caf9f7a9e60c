"""Data keys of records and the node's key-encryption keys: creation, rotation, destruction.

The cryptography and the key files are :mod:`exchange_node.record_keys`; which KEK
versions exist and which data key is wrapped under which is in the store (migration 7).
This service joins the two inside the store's transactions:

- :meth:`RecordProtection.new_key` gives a record a data key, wrapped under the current
  KEK, in the transaction that stores the record;
- :meth:`RecordProtection.rotate_kek` writes a new KEK version and re-wraps every data key
  under it in one transaction (the records' ciphertext is not touched); the versions
  before are retired;
- :meth:`RecordProtection.destroy_expired_keks` deletes the files of versions retired for
  longer than the backup horizon, so that a backup from before an erasure can no longer
  be decrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from exchange_node.audit import leaves
from exchange_node.errors import ConflictError
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.record_keys import DataKey, KekFiles
from exchange_node.store.records import KekVersionRow, RecordKeyRow

if TYPE_CHECKING:
    from exchange_node.services.context import ServiceContext
    from exchange_node.store.protection import ProtectionReads
    from exchange_node.store.sqlite import SqliteTransaction

__all__ = ["RecordProtection"]

log = structlog.get_logger("exchange_node.protection")


class RecordProtection:
    """The node's data keys and KEKs. Built by :class:`~exchange_node.services.Services`."""

    def __init__(self, node: ServiceContext) -> None:
        self._node = node
        self._store = node.store
        self.keks = KekFiles(node.config.data_path / "keys")

    # --- data keys -------------------------------------------------------------------------

    def new_key(self, tx: SqliteTransaction, record_id: str, now: int) -> DataKey:
        """A fresh data key for ``record_id``, stored wrapped in this transaction."""
        version = tx.current_kek()
        if version is None:
            raise ConflictError(
                "kek_missing",
                "this node has no key-encryption key yet; start it once (`serve`) to create one",
            )
        key = DataKey.generate(record_id)
        tx.insert_record_key(RecordKeyRow(record_id, version, self.keks.wrap(key, version), now))
        return key

    def key(self, reader: ProtectionReads, record_id: str) -> DataKey | None:
        """The record's data key unwrapped, or None if it has none (erased)."""
        row = reader.record_key(record_id)
        if row is None:
            return None
        return self.keks.unwrap(record_id, row.wrapped, row.kek_version)

    # --- key-encryption keys ---------------------------------------------------------------

    async def ensure_kek(self) -> int:
        """The current KEK version; the first one created (file and row) on a node that
        has none. A file left by a rotation that did not commit is destroyed, so a
        version number is never used for two keys, but only while no rotation is under
        way on this machine (its new file has no row until it commits)."""
        with self.keks.changing(wait=False) as idle:
            if idle:
                recorded = self._store.kek_versions()
                top = max((v.version for v in recorded), default=0)
                for version in self.keks.versions():
                    if version > top:
                        self.keks.destroy(version)
        current = self._store.current_kek()
        if current is not None:
            return current
        with self.keks.changing():
            current = self._store.current_kek()  # another process may have just made it
            if current is not None:
                return current
            top = max([v.version for v in self._store.kek_versions()] + [0])
            now = self._node.now_ms()
            self.keks.create(top + 1)

            def work(tx: SqliteTransaction) -> None:
                tx.add_kek_version(top + 1, now)
                tx.audit([leaves.kek_rotated(now, "operator", None, top + 1, 0)])

            await self._settle(top + 1, self._store.transaction(work, label="kek.create"))
        return top + 1

    async def rotate_kek(self, actor: str) -> tuple[int, int]:
        """A new KEK version; every data key re-wrapped under it, the versions before
        retired, in one transaction. Returns (new version, data keys re-wrapped)."""
        with self.keks.changing():
            old = self._store.current_kek()
            recorded = self._store.kek_versions()
            new = max([v.version for v in recorded] + self.keks.versions() + [0]) + 1
            now = self._node.now_ms()
            self.keks.create(new)

            def work(tx: SqliteTransaction) -> int:
                if tx.current_kek() != old:
                    raise ConflictError(
                        "kek_changed",
                        "the key-encryption key was rotated meanwhile by another process; "
                        "run the rotation again if a further one is wanted",
                    )
                tx.add_kek_version(new, now)
                for v in recorded:
                    tx.retire_kek(v.version, now)
                rows = tx.record_keys_not_under(new)
                for r in rows:
                    key = self.keks.unwrap(r.record_id, r.wrapped, r.kek_version)
                    tx.rewrap_record_key(r.record_id, new, self.keks.wrap(key, new))
                tx.audit([leaves.kek_rotated(now, actor, old, new, len(rows))])
                return len(rows)

            count = await self._settle(new, self._store.transaction(work, label="kek.rotate"))
        log.info("kek.rotated", old=old, new=new, rewrapped=count)
        return new, count

    async def _settle(self, version: int, commit):
        """Await the transaction that records KEK ``version``, whose file exists. It
        runs to its end even if the caller is cancelled (a write handed to the store may
        commit anyway); the file is destroyed only when the store shows no row for the
        version, never because the awaiting failed."""
        task = asyncio.ensure_future(commit)
        try:
            return await asyncio.shield(task)
        except BaseException:
            with contextlib.suppress(BaseException):
                await task
            if all(v.version != version for v in self._store.kek_versions()):
                self.keks.destroy(version)
            raise

    def kek_due(self) -> bool:
        """Whether the current KEK is older than ``[data_protection] kek_rotation_days``."""
        versions = [v for v in self._store.kek_versions() if v.retired_at is None]
        if not versions:
            return False
        age = self._node.now_ms() - versions[-1].created_at
        return age >= self._node.config.data_protection.kek_rotation_days * DAY_MS

    async def destroy_expired_keks(self, actor: str) -> list[int]:
        """Delete the files of KEK versions retired at least
        ``[data_protection] backup_horizon_days`` ago; each destruction audited. The file
        goes first, then the row says so: a crash between leaves a row that the next run
        completes, never a file the store believes gone."""
        horizon = self._node.config.data_protection.backup_horizon_days * DAY_MS
        now = self._node.now_ms()
        destroyed = []
        for v in self._store.kek_versions():
            if v.destroyed_at is not None and v.version in self.keks.versions():
                # Destroyed by another machine's process (PostgreSQL): this copy goes too.
                self.keks.destroy(v.version)
                log.info("kek.copy_destroyed", version=v.version)
                continue
            if v.retired_at is None or v.destroyed_at is not None or v.retired_at + horizon > now:
                continue
            if self._store.record_keys_under(v.version):
                log.error("kek.still_in_use", version=v.version)
                continue
            self.keks.destroy(v.version)
            await self._store.transaction(
                lambda tx, v=v: _mark_destroyed(tx, v, actor, now), label="kek.destroy"
            )
            destroyed.append(v.version)
        return destroyed


def _mark_destroyed(tx: SqliteTransaction, v: KekVersionRow, actor: str, now: int) -> None:
    tx.mark_kek_destroyed(v.version, now)
    tx.audit([leaves.kek_destroyed(now, actor, v.version, v.retired_at or 0)])
