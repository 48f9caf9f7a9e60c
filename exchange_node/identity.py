"""This node's identity on disk: private keys, TLS certificate and current card.

Layout under the data directory (created 0700; key files 0600)::

    keys/signing-<key id>.pem      Ed25519 signing keys (current and earlier)
    keys/encryption-<key id>.pem   HPKE keys (current and earlier, for decryption)
    keys/tls-key.pem, tls-cert.der the TLS key and self-signed certificate
    card.pb                        the current SignedCard, as published to peers
    card-next.pb                   during a rotation: the successor card, not yet current

The card is the one record of which keys are current and their validity windows:
nothing else repeats it. Key files are written first (new names, fsynced), the card
last (temporary name, fsynced, renamed), so a crash leaves either the old identity or
the new one, never a mix.

A rotation is two steps, so that peers can be told before the new keys are used: the
successor card is written as ``card-next.pb`` (:func:`prepare_rotation`), and only
once its announcement is queued does it become ``card.pb`` (:func:`finish_rotation`),
which a running node takes up. A rotation interrupted between the two is finished by
the next one, under the same serial and keys, never redone with others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from exchange_node.audit.checkpoint import origin_for
from exchange_node.protocol.cards import CardKey, PeerCard, issue_card, sign_revocation, verify_card
from exchange_node.protocol.envelope import DEFAULT_MAX_AGE_MS
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keyring import LocalIdentity
from exchange_node.protocol.keys import (
    EncryptionKey,
    SigningKey,
    Suite,
    load_private_key,
    save_private_key,
    write_secret_file,
)

ROTATION_OVERLAP_MS = DEFAULT_MAX_AGE_MS
"""How long keys replaced by a rotation stay valid, so envelopes in flight still open:
at least the maximum age (docs/protocol.md 10.5). ``keys rotate`` uses the node's
configured ``retention_days`` when that is longer."""

NEXT_CARD = "card-next.pb"


class IdentityError(Exception):
    """The identity on disk is missing, incomplete or unreadable; ``str`` says what to do."""


@dataclass(frozen=True)
class NodeKeys:
    local: LocalIdentity
    card: PeerCard
    tls_cert_der: bytes
    tls_key_path: Path
    tls_cert_path: Path
    # Every signing key listed on the card (current first), for re-issuing it.
    signing_keys: tuple[SigningKey, ...]

    @property
    def card_bytes(self) -> bytes:
        return self.card.signed

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def make_tls_certificate(node_id: str, now_ms: int) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A self-signed ECDSA P-256 certificate for ``node_id`` (10 years). Peers trust it
    only because its hash is on our signed card, never through a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    start = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC) - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(node_id.lower()),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        # Self-signed and used as its own trust anchor by peers.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.DER)


def create_identity(
    data_dir: Path,
    *,
    node_id: str,
    country: str,
    display_name: str,
    endpoint: str,
    suite: Suite,
    now_ms: int,
    passphrase: bytes | None = None,
) -> NodeKeys:
    """Create keys, TLS certificate and the first card. Refuses to overwrite."""
    keys_dir = Path(data_dir) / "keys"
    if (Path(data_dir) / "card.pb").exists():
        raise IdentityError(f"{data_dir} already holds an identity; refusing to overwrite it")
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(Path(data_dir), 0o700)
    os.chmod(keys_dir, 0o700)
    sk = SigningKey.generate()
    ek = EncryptionKey.generate(suite)
    save_private_key(keys_dir / f"signing-{sk.key_id.hex()}.pem", sk, passphrase)
    save_private_key(keys_dir / f"encryption-{ek.key_id.hex()}.pem", ek, passphrase)
    tls_key, tls_der = make_tls_certificate(node_id, now_ms)
    enc = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    write_secret_file(
        keys_dir / "tls-key.pem",
        tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc),
    )
    _atomic_write(keys_dir / "tls-cert.der", tls_der, 0o644)
    card = issue_card(
        node_id=node_id,
        country=country,
        endpoint=endpoint,
        display_name=display_name,
        signing_keys=[CardKey(sk, now_ms)],
        encryption_keys=[CardKey(ek, now_ms)],
        tls_certificate=tls_der,
        serial=1,
        issued_at_ms=now_ms,
    )
    _atomic_write(Path(data_dir) / "card.pb", card, 0o644)
    return load_identity(data_dir, passphrase)


def load_identity(
    data_dir: Path, passphrase: bytes | None = None, *, card_file: str = "card.pb"
) -> NodeKeys:
    """Load the identity written by :func:`create_identity` / :func:`rotate_keys`
    (``card_file``: the card naming the keys, by default the current one)."""
    data_dir = Path(data_dir)
    keys_dir = data_dir / "keys"
    try:
        card = verify_card((data_dir / card_file).read_bytes())
        tls_der = (keys_dir / "tls-cert.der").read_bytes()
    except FileNotFoundError as exc:
        raise IdentityError(f"{exc.filename}: missing; run `exchange-node init` first") from None
    except OpenError as exc:
        raise IdentityError(f"{data_dir / card_file}: not a valid card ({exc.detail})") from None
    try:
        signing = [_load(keys_dir, "signing", k.key_id, passphrase) for k in card.signing_keys]
        encryption = [
            _load(keys_dir, "encryption", k.key_id, passphrase) for k in card.encryption_keys
        ]
    except (ValueError, FileNotFoundError) as exc:
        raise IdentityError(str(exc)) from None
    if hashlib.sha256(tls_der).digest() != card.tls_cert_sha256:
        raise IdentityError(f"{keys_dir}/tls-cert.der does not match the card's TLS fingerprint")
    return NodeKeys(
        local=LocalIdentity(card.node_id, signing[0], tuple(encryption)),  # type: ignore[arg-type]
        card=card,
        tls_cert_der=tls_der,
        tls_key_path=keys_dir / "tls-key.pem",
        tls_cert_path=keys_dir / "tls-cert.der",
        signing_keys=tuple(signing),  # type: ignore[arg-type]
    )


def _load(keys_dir: Path, kind: str, key_id: bytes, passphrase: bytes | None):
    key = load_private_key(keys_dir / f"{kind}-{key_id.hex()}.pem", passphrase)
    expected = SigningKey if kind == "signing" else EncryptionKey
    if not isinstance(key, expected) or key.key_id != key_id:
        raise ValueError(
            f"{keys_dir}/{kind}-{key_id.hex()}.pem does not hold the key the card lists"
        )
    return key


def rotate_keys(
    data_dir: Path,
    *,
    now_ms: int,
    passphrase: bytes | None = None,
    suite: Suite | None = None,
    overlap_ms: int = ROTATION_OVERLAP_MS,
) -> NodeKeys:
    """New keys and a new card, current at once (:func:`prepare_rotation` then
    :func:`finish_rotation`); for a node that is not running or tells its peers itself."""
    prepare_rotation(
        data_dir, now_ms=now_ms, passphrase=passphrase, suite=suite, overlap_ms=overlap_ms
    )
    return finish_rotation(data_dir, passphrase)


def prepare_rotation(
    data_dir: Path,
    *,
    now_ms: int,
    passphrase: bytes | None = None,
    suite: Suite | None = None,
    overlap_ms: int = ROTATION_OVERLAP_MS,
) -> bytes:
    """New signing and encryption keys and the successor card, signed by old and new
    keys, written as ``card-next.pb``; the current card is untouched. Returns the
    successor. If an earlier rotation prepared a successor and was not finished, that
    one is returned instead (its announcement may already have gone out).

    Earlier keys stay on the card until ``now + overlap_ms`` so envelopes sealed or
    signed before peers saw the new card still verify; keys whose window has closed are
    dropped from the card (their files stay, for reading old evidence).
    """
    current = load_identity(data_dir, passphrase)
    pending = _next_card(Path(data_dir), current, passphrase)
    if pending is not None:
        return pending
    keys_dir = Path(data_dir) / "keys"
    sk = SigningKey.generate()
    ek = EncryptionKey.generate(suite or current.local.encryption_keys[0].suite)
    save_private_key(keys_dir / f"signing-{sk.key_id.hex()}.pem", sk, passphrase)
    save_private_key(keys_dir / f"encryption-{ek.key_id.hex()}.pem", ek, passphrase)
    end = now_ms + overlap_ms

    def retire(entries, keys) -> list[CardKey]:
        by_id = {k.key_id: k for k in keys}
        return [
            CardKey(by_id[e.key_id], e.not_before_ms, min(e.not_after_ms or end, end))
            for e in entries
            if (e.not_after_ms or end) > now_ms
        ]

    card = current.card
    signed = issue_card(
        node_id=card.node_id,
        country=card.country,
        endpoint=card.endpoint,
        display_name=card.display_name,
        signing_keys=[
            CardKey(sk, now_ms),
            *retire(card.signing_keys, current.signing_keys),
        ],
        encryption_keys=[
            CardKey(ek, now_ms),
            *retire(card.encryption_keys, current.local.encryption_keys),
        ],
        tls_certificate=current.tls_cert_der,
        serial=card.serial + 1,
        issued_at_ms=now_ms,
        previous_signing_key=current.local.signing_key,
    )
    _atomic_write(Path(data_dir) / NEXT_CARD, signed, 0o644)
    return signed


def finish_rotation(data_dir: Path, passphrase: bytes | None = None) -> NodeKeys:
    """Make the card :func:`prepare_rotation` wrote the current one."""
    data_dir = Path(data_dir)
    os.replace(data_dir / NEXT_CARD, data_dir / "card.pb")
    _fsync_dir(data_dir)
    return load_identity(data_dir, passphrase)


def _next_card(data_dir: Path, current: NodeKeys, passphrase: bytes | None) -> bytes | None:
    """The prepared successor of ``current``, if one is waiting, complete and still fits."""
    if not (data_dir / NEXT_CARD).exists():
        return None
    try:
        card = load_identity(data_dir, passphrase, card_file=NEXT_CARD).card
    except IdentityError:
        return None
    if card.node_id != current.card.node_id or card.serial != current.card.serial + 1:
        return None
    return card.signed


def all_signing_public_keys(data_dir: Path, passphrase: bytes | None = None) -> list[bytes]:
    """Raw public keys of every signing key this node has had (current first): what an
    auditor needs to check checkpoints signed before key rotations."""
    current = load_identity(data_dir, passphrase).local.signing_key
    keys = [current.public]
    for path in sorted((Path(data_dir) / "keys").glob("signing-*.pem")):
        k = load_private_key(path, passphrase)
        if isinstance(k, SigningKey) and k.public not in keys:
            keys.append(k.public)
    return keys


def revoke_key(keys: NodeKeys, key_id: bytes, *, now_ms: int, reason: str) -> bytes:
    """A signed revocation of one of this node's keys, signed by the current signing key
    (or by the key itself when it is the current one)."""
    return sign_revocation(
        node_id=keys.local.node_id,
        revoked_key_id=key_id,
        revoked_at_ms=now_ms,
        reason=reason,
        signer=keys.local.signing_key,
    )


_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def private_key_files(data_dir: Path) -> list[Path]:
    """Every PEM private key of the node: signing and encryption keys (current and
    earlier) and the TLS key."""
    keys_dir = Path(data_dir) / "keys"
    return sorted(
        p for p in keys_dir.glob("*.pem") if p.name.startswith(("signing-", "encryption-"))
    ) + [p for p in (keys_dir / "tls-key.pem",) if p.exists()]


def unencrypted_key_files(data_dir: Path) -> list[Path]:
    """The private key files written without a passphrase."""
    return [p for p in private_key_files(data_dir) if _ENCRYPTED_PEM not in p.read_bytes()]


def encrypt_key_files(data_dir: Path, passphrase: bytes) -> list[Path]:
    """Rewrite every unencrypted private key file encrypted under ``passphrase``
    (PKCS#8, the best encryption ``cryptography`` offers). Each file is replaced whole
    (written beside it, fsynced, renamed), so an interruption leaves every file either
    as it was or encrypted; run again, it finishes the rest. Returns the files changed."""
    if not passphrase:
        raise ValueError("empty passphrase: give a non-empty passphrase")
    changed = []
    for path in unencrypted_key_files(data_dir):
        blocks = [b"-----BEGIN" + b for b in path.read_bytes().split(b"-----BEGIN")[1:]]
        keys = [serialization.load_pem_private_key(b, None) for b in blocks]
        data = b"".join(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase),
            )
            for k in keys
        )
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        write_secret_file(tmp, data)
        tmp.rename(path)
        changed.append(path)
    if changed:
        _fsync_dir(Path(data_dir) / "keys")
    return changed


class Identity:
    """This node's keys as they are now, shared by the parts that sign, seal and
    authenticate: the composition root replaces :attr:`keys` when the card rotates, so
    every part sees the new keys at once."""

    def __init__(self, keys: NodeKeys, passphrase: bytes | None) -> None:
        self.keys = keys
        self.passphrase = passphrase

    @property
    def node_id(self) -> str:
        return self.keys.local.node_id


WITNESS_KEY_FILE = "witness.key"


def witness_name(node_id: str) -> str:
    """The key name this node cosigns under as a C2SP witness."""
    return f"{origin_for(node_id)}/witness"


def load_or_create_witness_key(data_dir: Path, passphrase: bytes | None = None):
    """This node's witness key (Ed25519, ``keys/witness.key``, PKCS#8 PEM, 0600,
    encrypted like the other keys when a passphrase is set), created on first use.

    A key of its own, not the signing key: witness policies pin it for years, while
    ``keys rotate`` replaces the signing key; and the Ed25519 cosignature/v1 message
    does not commit to the signer's name, so one key must serve one cosigner only."""
    path = Path(data_dir) / "keys" / WITNESS_KEY_FILE
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        enc = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        _atomic_write(path, pem)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(f"{path}: witness key has mode {mode:o}; it must be 0600")
    key = serialization.load_pem_private_key(path.read_bytes(), passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 private key")
    return key
