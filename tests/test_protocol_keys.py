"""Key material: key ids, deterministic keys, suites, and private key files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from protocol_helpers import BOTH_SUITES, encryption_key, seed, signing_key

from exchange_node.pb.exchange.v1 import types_pb2
from exchange_node.protocol.keys import (
    HYBRID_PUBLIC_LEN,
    KEY_ID_LEN,
    EncryptionKey,
    SigningKey,
    Suite,
    key_id,
    load_private_key,
    save_private_key,
)

PASSPHRASE = b"correct horse battery staple"


# --- key ids ----------------------------------------------------------------------------


def test_signing_key_id_is_16_bytes_derived_from_the_public_key() -> None:
    key = signing_key("a")
    assert len(key.key_id) == KEY_ID_LEN
    assert key.key_id == key_id(types_pb2.KEY_ALGORITHM_ED25519, key.public)


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_encryption_key_id_is_16_bytes_derived_from_algorithm_and_public_key(
    suite: Suite,
) -> None:
    key = encryption_key("a", suite)
    assert len(key.key_id) == KEY_ID_LEN
    assert key.key_id == key_id(suite.key_algorithm, key.public)


def test_key_id_is_deterministic() -> None:
    public = seed("public", 32)
    assert key_id(types_pb2.KEY_ALGORITHM_X25519, public) == key_id(
        types_pb2.KEY_ALGORITHM_X25519, public
    )


def test_key_id_depends_on_the_algorithm() -> None:
    public = seed("public", 32)
    assert key_id(types_pb2.KEY_ALGORITHM_ED25519, public) != key_id(
        types_pb2.KEY_ALGORITHM_X25519, public
    )


def test_key_id_depends_on_the_public_key() -> None:
    alg = types_pb2.KEY_ALGORITHM_ED25519
    assert key_id(alg, seed("one", 32)) != key_id(alg, seed("two", 32))


def test_key_id_matches_the_documented_construction() -> None:
    # SHA-256("exchange-node/v1/key-id" || 0x00 || u32be(2) || u16be(alg) || u32be(len) || pk)
    public = bytes(range(32))
    framed = (
        b"exchange-node/v1/key-id\x00"
        + b"\x00\x00\x00\x02\x00\x01"
        + len(public).to_bytes(4, "big")
        + public
    )
    assert key_id(1, public) == hashlib.sha256(framed).digest()[:16]


# --- seeds ------------------------------------------------------------------------------


def test_signing_key_from_seed_is_fixed() -> None:
    # RFC 8032 section 7.1, TEST 1.
    sk = SigningKey.from_seed(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert sk.public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def test_same_seed_gives_the_same_signing_key() -> None:
    assert SigningKey.from_seed(seed("s", 32)).public == SigningKey.from_seed(seed("s", 32)).public


@pytest.mark.parametrize("suite", BOTH_SUITES, ids=lambda s: s.name)
def test_same_seed_gives_the_same_encryption_key(suite: Suite) -> None:
    length = 96 if suite is Suite.MLKEM768_X25519 else 32
    a = EncryptionKey.from_seed(suite, seed("e", length))
    b = EncryptionKey.from_seed(suite, seed("e", length))
    assert (a.public, a.key_id) == (b.public, b.key_id)


def test_hybrid_public_key_is_mlkem_then_x25519() -> None:
    key = encryption_key("layout", Suite.MLKEM768_X25519)
    x_public = key.parts[1].public_key().public_bytes_raw()
    assert len(key.public) == HYBRID_PUBLIC_LEN == 1216
    assert key.public[-32:] == x_public
    assert key.public[:1184] == key.parts[0].public_key().public_bytes_raw()


def test_x25519_public_key_is_32_bytes() -> None:
    assert len(encryption_key("x", Suite.X25519).public) == 32


def test_key_repr_shows_no_private_material() -> None:
    key = signing_key("repr")
    assert repr(key) == f"SigningKey(key_id={key.key_id.hex()})"


# --- suites -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suite"),
    [
        ("mlkem768-x25519", Suite.MLKEM768_X25519),
        ("MLKEM768-X25519", Suite.MLKEM768_X25519),
        ("mlkem768_x25519", Suite.MLKEM768_X25519),
        (" mlkem768-x25519 ", Suite.MLKEM768_X25519),
        ("x25519", Suite.X25519),
        ("X25519", Suite.X25519),
    ],
)
def test_suite_parse_accepts_config_spellings(text: str, suite: Suite) -> None:
    assert Suite.parse(text) is suite


@pytest.mark.parametrize("text", ["", "p256", "mlkem768", "x448", "SUITE_X25519_SHA256_AES256GCM"])
def test_suite_parse_refuses_other_names_and_lists_the_valid_ones(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'mlkem768-x25519' or 'x25519'"):
        Suite.parse(text)


def test_suite_values_are_the_wire_numbers() -> None:
    assert Suite.MLKEM768_X25519.value == types_pb2.SUITE_MLKEM768_X25519_SHA256_AES256GCM
    assert Suite.X25519.value == types_pb2.SUITE_X25519_SHA256_AES256GCM


def test_suite_for_algorithm_refuses_a_signing_algorithm() -> None:
    with pytest.raises(ValueError):
        Suite.for_algorithm(types_pb2.KEY_ALGORITHM_ED25519)


# --- private key files ------------------------------------------------------------------


def _keys() -> list[SigningKey | EncryptionKey]:
    return [signing_key("file")] + [encryption_key("file", s) for s in BOTH_SUITES]


def _ids(key: SigningKey | EncryptionKey) -> str:
    return repr(key).split("(")[0] + ("" if isinstance(key, SigningKey) else f"-{key.suite.name}")


@pytest.mark.parametrize("key", _keys(), ids=_ids)
def test_saved_key_file_has_mode_0600(tmp_path: Path, key: SigningKey | EncryptionKey) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("key", _keys(), ids=_ids)
def test_saved_key_loads_back_unencrypted(tmp_path: Path, key: SigningKey | EncryptionKey) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, key)
    loaded = load_private_key(path)
    assert type(loaded) is type(key)
    assert (loaded.public, loaded.key_id) == (key.public, key.key_id)


@pytest.mark.parametrize("key", _keys(), ids=_ids)
def test_saved_key_loads_back_with_its_passphrase(
    tmp_path: Path, key: SigningKey | EncryptionKey
) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, key, PASSPHRASE)
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert load_private_key(path, PASSPHRASE).key_id == key.key_id


def test_save_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_private_key(path, signing_key("file"))
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize("key", _keys(), ids=_ids)
def test_wrong_passphrase_is_a_clear_value_error(
    tmp_path: Path, key: SigningKey | EncryptionKey
) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, key, PASSPHRASE)
    with pytest.raises(ValueError, match="wrong passphrase") as info:
        load_private_key(path, b"not the passphrase")
    assert str(path) in str(info.value)


def test_missing_passphrase_for_an_encrypted_key_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, signing_key("file"), PASSPHRASE)
    with pytest.raises(ValueError, match="wrong passphrase"):
        load_private_key(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, signing_key("file"))
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="must be 0600"):
        load_private_key(path)


def test_key_file_readable_by_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    save_private_key(path, signing_key("file"))
    os.chmod(path, 0o640)
    with pytest.raises(ValueError, match="must be 0600"):
        load_private_key(path)


def test_file_that_holds_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not an exchange-node private key"):
        load_private_key(path)


def test_empty_passphrase_is_refused_rather_than_writing_the_key_in_clear(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.pem"
    with pytest.raises(ValueError, match="passphrase"):
        save_private_key(path, signing_key("file"), b"")
    assert not path.exists()
