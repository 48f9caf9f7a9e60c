"""Key material: generation, key ids, HPKE suites, and private keys on disk.

Private keys are written as PKCS#8 PEM (encrypted with the passphrase when one is
given) to files created with mode 0600; they are never logged or printed. A hybrid
MLKEM768-X25519 private key is stored as two PEM blocks, ML-KEM-768 first, X25519
second. Public keys travel raw; their layout is given per algorithm in
docs/protocol.md.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from exchange_node.pb.exchange.v1 import types_pb2

from .framing import LABEL_KEY_ID, frame

KEY_ID_LEN = 16
MLKEM768_PUBLIC_LEN = 1184
X25519_LEN = 32
HYBRID_PUBLIC_LEN = MLKEM768_PUBLIC_LEN + X25519_LEN


class Suite(enum.Enum):
    """The HPKE suites of protocol v1. Value: the ``exchange.v1.Suite`` number."""

    MLKEM768_X25519 = types_pb2.SUITE_MLKEM768_X25519_SHA256_AES256GCM
    X25519 = types_pb2.SUITE_X25519_SHA256_AES256GCM

    @property
    def key_algorithm(self) -> int:
        return _SUITE_ALGORITHM[self]

    @property
    def hpke(self) -> hpke.Suite:
        return _HPKE_SUITES[self]

    @classmethod
    def for_algorithm(cls, algorithm: int) -> Suite:
        for suite, alg in _SUITE_ALGORITHM.items():
            if alg == algorithm:
                return suite
        raise ValueError(f"no suite for key algorithm {algorithm}")

    @classmethod
    def parse(cls, name: str) -> Suite:
        """Parse a config spelling: ``mlkem768-x25519`` or ``x25519``."""
        try:
            return cls[name.strip().upper().replace("-", "_")]
        except KeyError:
            raise ValueError(
                f"unknown suite {name!r}: expected 'mlkem768-x25519' or 'x25519'"
            ) from None


_SUITE_ALGORITHM = {
    Suite.MLKEM768_X25519: types_pb2.KEY_ALGORITHM_MLKEM768_X25519,
    Suite.X25519: types_pb2.KEY_ALGORITHM_X25519,
}
_HPKE_SUITES = {
    Suite.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
    Suite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}


def key_id(algorithm: int, public_key: bytes) -> bytes:
    """16-byte key id: SHA-256 of the framed algorithm number and raw public key."""
    digest = hashlib.sha256(frame(LABEL_KEY_ID, struct.pack(">H", algorithm), public_key))
    return digest.digest()[:KEY_ID_LEN]


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 signing key pair."""

    private: ed25519.Ed25519PrivateKey
    public: bytes = field(init=False)
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        pub = self.private.public_key().public_bytes_raw()
        object.__setattr__(self, "public", pub)
        object.__setattr__(self, "key_id", key_id(types_pb2.KEY_ALGORITHM_ED25519, pub))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from a 32-byte seed (test vectors only)."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id.hex()})"


HpkePrivate = hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey


@dataclass(frozen=True, repr=False)
class EncryptionKey:
    """An HPKE key pair for one suite. ``parts`` are the component private keys."""

    suite: Suite
    parts: tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey] | tuple[x25519.X25519PrivateKey]
    public: bytes = field(init=False)
    key_id: bytes = field(init=False)
    private: HpkePrivate = field(init=False)

    def __post_init__(self) -> None:
        if self.suite is Suite.MLKEM768_X25519:
            m, x = self.parts  # type: ignore[misc]
            pub = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
            private: HpkePrivate = hpke.MLKEM768X25519PrivateKey(m, x)
        else:
            (x,) = self.parts  # type: ignore[misc]
            pub = x.public_key().public_bytes_raw()
            private = x
        object.__setattr__(self, "public", pub)
        object.__setattr__(self, "private", private)
        object.__setattr__(self, "key_id", key_id(self.suite.key_algorithm, pub))

    @classmethod
    def generate(cls, suite: Suite = Suite.MLKEM768_X25519) -> EncryptionKey:
        if suite is Suite.MLKEM768_X25519:
            return cls(
                suite, (mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())
            )
        return cls(suite, (x25519.X25519PrivateKey.generate(),))

    @classmethod
    def from_seed(cls, suite: Suite, seed: bytes) -> EncryptionKey:
        """Deterministic key (test vectors only): ML-KEM from ``seed[:64]``, X25519 from
        the last 32 bytes (``seed`` is 96 bytes for the hybrid suite, 32 for X25519)."""
        x = x25519.X25519PrivateKey.from_private_bytes(seed[-32:])
        if suite is Suite.MLKEM768_X25519:
            return cls(suite, (mlkem.MLKEM768PrivateKey.from_seed_bytes(seed[:64]), x))
        return cls(suite, (x,))

    def decrypt(self, sealed: bytes, info: bytes) -> bytes:
        return self.suite.hpke.decrypt(sealed, self.private, info=info)

    def __repr__(self) -> str:
        return f"EncryptionKey(suite={self.suite.name}, key_id={self.key_id.hex()})"


@functools.lru_cache(maxsize=4096)
def hpke_public_key(algorithm: int, public: bytes):
    """Load a raw HPKE public key of ``algorithm``; ValueError if the bytes are wrong.

    Cached: loading an ML-KEM-768 key costs about a seventh of a hybrid seal, and a
    node seals to the same few peer keys all day. Key objects are immutable.
    """
    if algorithm == types_pb2.KEY_ALGORITHM_MLKEM768_X25519:
        if len(public) != HYBRID_PUBLIC_LEN:
            raise ValueError(f"MLKEM768-X25519 public key must be {HYBRID_PUBLIC_LEN} bytes")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:MLKEM768_PUBLIC_LEN]),
            x25519.X25519PublicKey.from_public_bytes(public[MLKEM768_PUBLIC_LEN:]),
        )
    if algorithm == types_pb2.KEY_ALGORITHM_X25519:
        if len(public) != X25519_LEN:
            raise ValueError("X25519 public key must be 32 bytes")
        return x25519.X25519PublicKey.from_public_bytes(public)
    raise ValueError(f"key algorithm {algorithm} is not an HPKE algorithm")


@functools.lru_cache(maxsize=4096)
def ed25519_public_key(public: bytes) -> ed25519.Ed25519PublicKey:
    if len(public) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    return ed25519.Ed25519PublicKey.from_public_bytes(public)


# --- private keys on disk -------------------------------------------------------------


def _pem(key, passphrase: bytes | None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; refuse to overwrite.

    The file is fsynced before returning, so a key the node reports as created exists.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the new directory entry survives a power cut too
    finally:
        os.close(dfd)


def save_private_key(
    path: Path, key: SigningKey | EncryptionKey, passphrase: bytes | None = None
) -> None:
    """Write a private key as PEM to a new 0600 file (FileExistsError if it exists).

    ``passphrase`` None writes the key unencrypted; an empty passphrase is refused
    (ValueError) rather than silently taken to mean "no passphrase".
    """
    if passphrase is not None and not passphrase:
        raise ValueError("empty passphrase: give a non-empty passphrase or none at all")
    parts = (key.private,) if isinstance(key, SigningKey) else key.parts
    write_secret_file(Path(path), b"".join(_pem(p, passphrase) for p in parts))


def load_private_key(path: Path, passphrase: bytes | None = None) -> SigningKey | EncryptionKey:
    """Read a key written by :func:`save_private_key`.

    Raises ValueError with a clear message for a wrong passphrase, unreadable contents or
    a file other users can read (mode wider than 0600).
    """
    path = Path(path)
    # Check the permissions of the file actually read (one open, no symlink), not of
    # whatever the name pointed to a moment earlier.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{path}: private key file has mode {mode:o}; it must be 0600")
        data = f.read()
    blocks = [b"-----BEGIN" + b for b in data.split(b"-----BEGIN")[1:]]
    try:
        keys = [serialization.load_pem_private_key(b, passphrase) for b in blocks]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot load private key (wrong passphrase?): {exc}") from None
    if len(keys) == 1 and isinstance(keys[0], ed25519.Ed25519PrivateKey):
        return SigningKey(keys[0])
    if len(keys) == 1 and isinstance(keys[0], x25519.X25519PrivateKey):
        return EncryptionKey(Suite.X25519, (keys[0],))
    if (
        len(keys) == 2
        and isinstance(keys[0], mlkem.MLKEM768PrivateKey)
        and isinstance(keys[1], x25519.X25519PrivateKey)
    ):
        return EncryptionKey(Suite.MLKEM768_X25519, (keys[0], keys[1]))
    raise ValueError(f"{path}: not an exchange-node private key")
