"""What runs: this release, the wire protocol it speaks and the libraries under it.

Shown by ``exchange-node --version`` and exported as the ``exchange_build_info`` metric,
so an operator's dashboard and a bug report name the same versions.
"""

from __future__ import annotations

import platform
from importlib import metadata

from cryptography.hazmat.backends.openssl.backend import backend as _openssl

from exchange_node import __version__
from exchange_node.protocol.envelope import PROTOCOL_VERSION


def build_info() -> dict[str, str]:
    """Label values of ``exchange_build_info``: every value a plain version string."""
    return {
        "version": __version__,
        "protocol": str(PROTOCOL_VERSION),
        "python": platform.python_version(),
        "cryptography": metadata.version("cryptography"),
        "openssl": _openssl.openssl_version_text().removeprefix("OpenSSL ").split(" ")[0],
    }


def version_line() -> str:
    """One line for ``--version``: ``exchange-node 0.1.0 (protocol 1; ...)``."""
    info = build_info()
    return (
        f"exchange-node {info['version']} (protocol {info['protocol']}; Python {info['python']};"
        f" cryptography {info['cryptography']}; OpenSSL {info['openssl']})"
    )
