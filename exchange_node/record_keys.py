"""Per-record data keys under versioned key-encryption keys: erasure by destroying a key.

Each record holding personal data (a repatriation case: its personal data and notes) is
encrypted under a data key of its own (AES-256-GCM). The data key is stored *wrapped*
(encrypted) under the node's key-encryption key (KEK) in ``record_keys``; the KEK lives
only in a file, ``keys/kek-<version>.key`` (0600), never in the database.

- Erasing a record deletes its wrapped data key and its ciphertext in one transaction:
  with the data key gone nothing can decrypt what a copy of the database still held.
- Rotating the KEK writes a new version and re-wraps every data key under it; the
  records' ciphertext is not touched. The old version is *retired*, kept for the backup
  horizon (a database backup made before the rotation still needs it to be restored),
  then *destroyed*: its file is deleted. A backup older than that horizon then holds
  only data keys wrapped under destroyed KEKs, so it cannot bring an erased record
  back (``docs/operations.md``, "Erasure and backups").

This module does the cryptography and the files; which versions exist, which is current
and which data key is wrapped under which lives in the store (``kek_versions``,
``record_keys``), written in the transactions that change them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange_node.protocol.keys import write_secret_file

__all__ = ["DataKey", "KekFiles", "KekMissing", "case_record_id"]

_NONCE = 12
_KEY_BYTES = 32
_KEK_FILE = re.compile(r"kek-([0-9]{1,9})\.key")


def case_record_id(case_ref: str) -> str:
    """The record id of a case: what its data key, purge and hold rows are keyed by."""
    return f"case:{case_ref}"


class KekMissing(Exception):
    """The KEK version a data key is wrapped under has no file (destroyed, or the key
    directory is not the node's)."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """One record's data key, in clear: only in memory, only while it is used."""

    record_id: str
    secret: bytes

    @classmethod
    def generate(cls, record_id: str) -> DataKey:
        return cls(record_id, AESGCM.generate_key(bit_length=256))

    def encrypt(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.secret).encrypt(nonce, data, self._aad(context))

    def decrypt(self, blob: bytes, context: bytes) -> bytes:
        return AESGCM(self.secret).decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(context))

    def _aad(self, context: bytes) -> bytes:
        # Bound to the record: a blob moved to another record does not decrypt.
        return self.record_id.encode() + b"\x00" + context


class KekFiles:
    """The KEK files of one node, ``<keys dir>/kek-<version>.key``, 32 random bytes, 0600.

    A version's file never changes once written, so loaded keys are cached by version;
    a destroyed version's file is gone and is never written again.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)
        self._cache: dict[int, AESGCM] = {}

    def path(self, version: int) -> Path:
        return self._dir / f"kek-{version}.key"

    @contextlib.contextmanager
    def changing(self, wait: bool = True) -> Iterator[bool]:
        """Hold the exclusive lock of KEK changes in this keys folder (``kek.lock``): a
        rotation holds it from writing its new file until its transaction is settled,
        so no other process on this machine takes that file for a leftover. Yields
        whether the lock is held (``wait`` False: it is not taken if busy)."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._dir / "kek.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def versions(self) -> list[int]:
        """The versions whose file exists, ascending."""
        if not self._dir.is_dir():
            return []
        found = (_KEK_FILE.fullmatch(p.name) for p in self._dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def create(self, version: int) -> None:
        """Write a new KEK file (refused if it exists: a version is written once)."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_file(self.path(version), AESGCM.generate_key(bit_length=256))

    def destroy(self, version: int) -> None:
        """Overwrite and delete a KEK file; nothing if it is already gone."""
        self._cache.pop(version, None)
        path = self.path(version)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            os.write(fd, b"\x00" * _KEY_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        dfd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def wrap(self, key: DataKey, version: int) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._kek(version).encrypt(
            nonce, key.secret, _wrap_aad(key.record_id, version)
        )

    def unwrap(self, record_id: str, wrapped: bytes, version: int) -> DataKey:
        """Raises ``KekMissing`` if the version's file is gone, ``InvalidTag`` if the
        wrapped key is not this record's under this version."""
        secret = self._kek(version).decrypt(
            wrapped[:_NONCE], wrapped[_NONCE:], _wrap_aad(record_id, version)
        )
        return DataKey(record_id, secret)

    def _kek(self, version: int) -> AESGCM:
        kek = self._cache.get(version)
        if kek is None:
            path = self.path(version)
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                raise KekMissing(f"{path}: key-encryption key version {version} is gone") from None
            if mode & 0o077:
                raise ValueError(f"{path}: key-encryption key has mode {mode:o}; it must be 0600")
            data = path.read_bytes()
            if len(data) != _KEY_BYTES:
                raise ValueError(
                    f"{path}: a key-encryption key is {_KEY_BYTES} bytes, got {len(data)}"
                )
            kek = self._cache[version] = AESGCM(data)
        return kek


def _wrap_aad(record_id: str, version: int) -> bytes:
    return b"record-key\x00" + record_id.encode() + b"\x00" + str(version).encode()
