"""Identifiers that are unique and roughly in time order.

A message id, a notice id or a batch id is 16 bytes: the sender's clock in Unix
milliseconds (48 bits, big-endian) followed by 80 random bits, the layout of a UUIDv7
(RFC 9562, 5.7) without its version and variant bits. Eighty random bits keep two ids
drawn in the same millisecond apart (a collision among a billion ids of one millisecond
has odds of about 1 in 2.4 million); the time prefix makes every index keyed on them,
here and at the receiver, grow at its right edge like a sequence instead of touching a
random page of the B-tree for each row. The time they reveal is the envelope's
``created_at_ms``, already in its clear header. Receivers treat the ids as opaque
(docs/protocol.md 6.2): nothing may depend on their structure.
"""

from __future__ import annotations

import os

ID_LEN = 16
_TIME_BYTES = 6
_TIME_MASK = (1 << (8 * _TIME_BYTES)) - 1


def time_ordered_id(now_ms: int) -> bytes:
    """16 bytes: ``now_ms`` (48 bits, big-endian; wraps in the year 10889) then 80
    random bits."""
    return (now_ms & _TIME_MASK).to_bytes(_TIME_BYTES, "big") + os.urandom(ID_LEN - _TIME_BYTES)
