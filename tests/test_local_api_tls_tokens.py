"""The local API off loopback: TLS 1.2+ from certificate files in the config, no plain
listener beyond loopback unless asked for, and tokens that expire (a default lifetime,
``token create --expires``), an expired one refused 401 ``token_expired`` and audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import ssl

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exchange_node.config import ConfigError, load_config
from exchange_node.node import Node
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.store.sqlite import SqliteStore
from tests.node_helpers import free_port, make_node_dir, run_cli


def write_certificate(folder) -> tuple:
    """A self-signed P-256 certificate for 127.0.0.1 and its key (0600), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jpn-isa.local")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "local-api.crt", folder / "local-api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def set_local_api(nd, **values) -> None:
    """Replace ``[local_api]`` keys in the node's config file (values as TOML text)."""
    text = nd.config_path.read_text()
    section = text.index("[local_api]")
    head, tail = text[:section], text[section:]
    for key, value in values.items():
        tail, n = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {value} ", tail, count=1)
        assert n == 1, key
    nd.config_path.write_text(head + tail)


def create_token(nd, capsys, *extra: str) -> str:
    args = ["--config", str(nd.config_path), "token", "create", "--role", "auditor"]
    assert run_cli([*args, "--name", "audit-desk", *extra]) == 0
    return capsys.readouterr().out.strip()


async def stored_tokens(nd):
    store = await SqliteStore.open(nd.data / "node.sqlite")
    try:
        return store.list_tokens()
    finally:
        await store.close()


# --- token expiry ---------------------------------------------------------------------------


def test_token_create_expires_after_the_duration_given(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    create_token(nd, capsys, "--expires", "12h")
    (token,) = asyncio.run(stored_tokens(nd))
    assert token.expires_at - token.created_at == 12 * 3_600_000


def test_a_token_gets_the_configured_default_lifetime_or_none_when_asked(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    set_local_api(nd, token_lifetime_days="2")
    create_token(nd, capsys)
    args = ["--config", str(nd.config_path), "token", "create", "--role", "operator"]
    assert run_cli([*args, "--name", "ops", "--expires", "never"]) == 0
    default, never = asyncio.run(stored_tokens(nd))
    assert default.expires_at - default.created_at == 2 * DAY_MS
    assert never.expires_at is None
    assert (
        run_cli(["--config", str(nd.config_path), "audit", "show", "--kind", "token.created"]) == 0
    )
    shown = capsys.readouterr().out
    assert f"expires_at={default.expires_at}" in shown


def test_a_malformed_expiry_is_one_error_line(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    args = ["--config", str(nd.config_path), "token", "create", "--role", "auditor"]
    assert run_cli([*args, "--name", "x", "--expires", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: duration_invalid: --expires: expected a duration such as 90d")
    assert asyncio.run(stored_tokens(nd)) == []


async def test_an_expired_token_is_refused_401_token_expired_and_audited(tmp_path, capsys):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    secret = await asyncio.to_thread(create_token, nd, capsys, "--expires", "30m")
    (token,) = await stored_tokens(nd)
    now = [token.expires_at - 1]
    node = await Node.open(nd.config(), clock=lambda: now[0])
    await node.start()
    try:
        url = f"http://127.0.0.1:{node.local_port}/api/v1/audit/checkpoint"
        headers = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(url) as resp:
                assert resp.status == 200
            now[0] = token.expires_at
            async with session.get(url) as resp:
                body = await resp.json(content_type=None)
                assert (resp.status, body["code"]) == (401, "token_expired")
        (leaf,) = node.audit.query(kind="auth.failed")
        assert (leaf.record.actor, leaf.record.reason) == ("audit-desk", "token_expired")
    finally:
        await node.stop()


# --- TLS and the loopback rule ----------------------------------------------------------


def test_off_loopback_without_tls_is_refused_unless_explicitly_allowed(tmp_path):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    set_local_api(nd, listen='"0.0.0.0:8080"', allow_non_loopback="true")
    with pytest.raises(ConfigError, match=r"\[local_api\] listen: expected a loopback address"):
        load_config(nd.config_path)
    set_local_api(nd, allow_plain_off_loopback="true")
    assert load_config(nd.config_path).local_api.allow_plain_off_loopback


def test_tls_files_make_off_loopback_acceptable_and_go_together(tmp_path):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    cert_file, key_file = write_certificate(nd.dir)
    set_local_api(
        nd, listen='"0.0.0.0:8080"', allow_non_loopback="true", tls_cert_file=f'"{cert_file}"'
    )
    with pytest.raises(ConfigError, match=r"\[local_api\] tls_key_file: expected a file"):
        load_config(nd.config_path)
    set_local_api(nd, tls_key_file=f'"{key_file.name}"')
    cfg = load_config(nd.config_path)
    assert cfg.relative_path(cfg.local_api.tls_key_file) == key_file


async def test_the_local_api_serves_tls_1_2_or_later_and_the_cli_reaches_it(tmp_path):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    cert_file, key_file = write_certificate(nd.dir)
    port = free_port()
    set_local_api(
        nd,
        listen=f'"127.0.0.1:{port}"',
        tls_cert_file=f'"{cert_file.name}"',
        tls_key_file=f'"{key_file.name}"',
    )
    node = await Node.open(nd.config())
    await node.start()
    try:
        tls12 = ssl.create_default_context(cafile=str(cert_file))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=tls12) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
        # The command line calls the local API over https with the configured certificate.
        secret = await _create_secret(nd)
        code = await asyncio.to_thread(
            run_cli,
            ["--config", str(nd.config_path), "lookup", "PHL", "P1234567", "--token", secret],
        )
        assert code == 0
        (leaf,) = node.audit.query(kind="document.lookup")
        assert leaf.record.actor == "border-desk"
    finally:
        await node.stop()


async def _create_secret(nd) -> str:
    import secrets

    secret = "xn_" + secrets.token_urlsafe(32)
    store = await SqliteStore.open(nd.data / "node.sqlite")
    try:
        await store.create_token("border-desk", "document_officer", secret, 1)
    finally:
        await store.close()
    return secret


async def test_a_local_api_key_others_can_read_stops_start_up_with_one_line(tmp_path):
    nd = make_node_dir(tmp_path, "JPN-ISA")
    cert_file, key_file = write_certificate(nd.dir)
    key_file.chmod(0o644)
    set_local_api(nd, tls_cert_file=f'"{cert_file}"', tls_key_file=f'"{key_file}"')
    node = await Node.open(nd.config())
    try:
        with pytest.raises(ConfigError, match="private key file has mode 644; it must be 0600"):
            await node.start()
    finally:
        await node.stop()
