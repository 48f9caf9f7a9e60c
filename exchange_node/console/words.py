"""Times, ages and delivery errors put in words for the console's pages."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime


def when(ms: int | None) -> str:
    """A Unix-ms time as ``2026-12-01 10:04:05 UTC`` (empty for none)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | None) -> str:
    """A span of time the way an operator reads it: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    if ms is None:
        return ""
    s = max(0, ms // 1000)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def ago(ms: int | None, now: int | None = None) -> str:
    if not ms:
        return "never"
    now = time.time_ns() // 1_000_000 if now is None else now
    return duration(now - ms) + " ago"


# What a delivery error means to an operator, by what the transport reported. First match
# wins; the detail stays on the page (folded) for whoever has to dig further.
_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), words)
    for p, words in (
        (r"Certificate|SSLError|certificate verify|_ALERT|handshake", "the TLS handshake failed: the peer's certificate or ours "
         "is not the one pinned (a card changed, or a certificate was renewed)"),
        (r"Connect(or)?Error|Connection refused|Cannot connect",
         "nothing answered at the peer's address: its node is down or a firewall blocks the port"),
        (r"Timeout", "the peer did not answer in time"),
        (r"ServerDisconnected|Connection reset|closed", "the peer closed the connection "
         "before answering"),
        (r"HTTP 401|HTTP 403", "the peer refused this node: it may not have pinned our "
         "current card"),
        (r"HTTP 413", "the peer found our batch too large"),
        (r"HTTP 429", "the peer asked us to slow down; we retry when it says"),
        (r"HTTP 503", "the peer is up but not ready (its storage or audit log)"),
        (r"HTTP 5\d\d", "the peer failed while answering"),
        (r"HTTP 4\d\d", "the peer refused the request"),
        (r"no usable encryption key", "every encryption key of the peer is revoked: it must "
         "publish a new card"),
        (r"plain http", "the peer's endpoint is plain http and this node allows only TLS"),
    )
)  # fmt: skip


def error_words(detail: str | None) -> str:
    if not detail:
        return ""
    for pattern, words in _ERRORS:
        if pattern.search(detail):
            return words
    # Unknown: at least not a Python class name in front.
    return re.sub(r"^[A-Za-z]+(Error|Exception): ", "", detail)


FILTERS = {"when": when, "duration": duration, "ago": ago, "error_words": error_words}
