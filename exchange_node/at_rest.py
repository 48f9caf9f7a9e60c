"""Encryption at rest with a node-local key (AES-256-GCM).

Used for what the node must keep but should not keep in clear: outbox payloads awaiting
delivery (re-sealed if a peer rotates its key) and case personal data. The key file is
created 0600 next to the node's other keys; losing it loses only those fields.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange_node.protocol.keys import write_secret_file

_NONCE = 12


class AtRest:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path) -> AtRest:
        path = Path(path)
        if not path.exists():
            write_secret_file(path, AESGCM.generate_key(bit_length=256))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{path}: storage key has mode {mode:o}; it must be 0600")
        return cls(path.read_bytes())

    def encrypt(self, data: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, context)

    def decrypt(self, blob: bytes, context: bytes = b"") -> bytes:
        return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], context)
