"""What runs out, and when: this node's TLS certificate and current keys, and those of
every pinned peer. ``status`` lists what expires within :data:`WARNING_DAYS`, the node
logs it at start-up and once a day, and ``/metrics`` exports the time left of each, so
an alert fires long before a handshake or a signature fails.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from exchange_node.config import Config
from exchange_node.protocol.cards import PeerCard
from exchange_node.protocol.envelope import DAY_MS

WARNING_DAYS = 30
"""How far ahead an expiry is reported (status, logs); the metric shows every one."""


@dataclass(frozen=True, slots=True)
class Expiry:
    """One thing that expires: ``owner`` is a node id, ``what`` ``tls_certificate``,
    ``signing_key`` or ``encryption_key`` (the current one) or, for this node,
    ``local_api_certificate``; ``not_after_ms`` when."""

    owner: str
    what: str
    not_after_ms: int

    def left_ms(self, now: int) -> int:
        return self.not_after_ms - now


@functools.lru_cache(maxsize=1024)
def tls_not_after_ms(cert_der: bytes) -> int:
    """The certificate's notAfter (parsed once per certificate: gauges ask often)."""
    cert = x509.load_der_x509_certificate(cert_der)
    return int(cert.not_valid_after_utc.timestamp() * 1000)


def card_expiries(card: PeerCard) -> list[Expiry]:
    """A card's TLS certificate and its current keys with an end (open keys never end;
    the earlier keys a rotation keeps are meant to run out)."""
    found = []
    if card.tls_certificate:
        found.append(
            Expiry(card.node_id, "tls_certificate", tls_not_after_ms(card.tls_certificate))
        )
    for what, keys in (
        ("signing_key", card.signing_keys),
        ("encryption_key", card.encryption_keys),
    ):
        if keys and keys[0].not_after_ms:
            found.append(Expiry(card.node_id, what, keys[0].not_after_ms))
    return found


def local_api_expiry(node_id: str, cert_file: Path) -> Expiry | None:
    """The local API's own certificate (``[local_api] tls_cert_file``), if readable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None  # start-up reports an unusable file; nothing to count down
    return Expiry(
        node_id, "local_api_certificate", int(cert.not_valid_after_utc.timestamp() * 1000)
    )


def all_expiries(
    own: PeerCard, peers: Iterable[PeerCard], local_api_cert: Path | None = None
) -> list[Expiry]:
    found = [e for card in (own, *peers) for e in card_expiries(card)]
    if local_api_cert is not None and (e := local_api_expiry(own.node_id, local_api_cert)):
        found.append(e)
    return found


def due(expiries: Iterable[Expiry], now: int, days: int = WARNING_DAYS) -> list[Expiry]:
    """Those that expire within ``days`` (or have expired), soonest first."""
    return sorted(
        (e for e in expiries if e.left_ms(now) <= days * DAY_MS), key=lambda e: e.not_after_ms
    )


def local_api_cert(config: Config) -> Path | None:
    """The local API's certificate file the config names, or None (no TLS)."""
    api = config.local_api
    return config.relative_path(api.tls_cert_file) if api.tls_cert_file else None
