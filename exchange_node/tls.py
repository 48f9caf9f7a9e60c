"""TLS 1.3 contexts with mutual authentication by pinned certificates.

No certificate authority is involved: each side's only trust anchors are the
certificates on the node cards its operator pinned. OpenSSL checks that the other
side holds the key of one of those certificates; the application then maps the
certificate's SHA-256 to a node id and refuses anything that does not match.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def _pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


def _base(
    purpose: ssl.Purpose, cert_der: bytes, key_path: Path, password: bytes | None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # load_cert_chain wants files; the certificate is kept as DER, so hand it PEM via a
    # sibling file written once.
    pem_path = key_path.with_name("tls-cert.pem")
    if not pem_path.exists() or pem_path.read_text() != _pem(cert_der):
        pem_path.write_text(_pem(cert_der))
    ctx.load_cert_chain(pem_path, key_path, password=password)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(
    cert_der: bytes, key_path: Path, peer_certs: Iterable[bytes], password: bytes | None = None
) -> ssl.SSLContext:
    """Server side: demand a client certificate that is one of ``peer_certs``."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH, cert_der, key_path, password)
    trust_peers(ctx, peer_certs)
    return ctx


def trust_peers(ctx: ssl.SSLContext, peer_certs: Iterable[bytes]) -> None:
    """Add pinned peers' certificates as trust anchors.

    OpenSSL cannot drop an anchor from a live context: when the pinned peers change, the
    node builds a new server context for the handshakes that follow.
    """
    pem = "".join(_pem(c) for c in peer_certs if c)
    if pem:
        ctx.load_verify_locations(cadata=pem)


def client_context(
    cert_der: bytes, key_path: Path, peer_cert: bytes, password: bytes | None = None
) -> ssl.SSLContext:
    """Client side: present our certificate; accept only ``peer_cert`` from the server."""
    ctx = _base(ssl.Purpose.SERVER_AUTH, cert_der, key_path, password)
    trust_peers(ctx, [peer_cert])
    return ctx


def cert_sha256(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def local_api_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The local API's server side: TLS 1.2 or later with the operator's certificate
    (typically from the authority's own CA), no client certificate: callers prove who
    they are with bearer tokens. ValueError with a line for the operator when a file
    is missing, readable by others (the key) or does not load."""
    for path in (cert_file, key_file):
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{key_file}: private key file has mode {mode:o}; it must be 0600")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ValueError(
            f"{cert_file}, {key_file}: not a PEM certificate and its unencrypted private key"
            f" ({exc.reason or exc})"
        ) from None
    return ctx


def local_api_client_context(cert_file: Path) -> ssl.SSLContext:
    """The command line's side of the local API on the same host: trust exactly the
    certificate the config names (it is the one served), whatever name it carries."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx
