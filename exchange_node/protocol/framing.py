"""Domain-separated, length-framed byte strings: the input of every signature and KDF
label in protocol v1.

``frame(label, *parts)`` is ``label || 0x00 || (u32be(len(part)) || part)*``. Labels are
fixed ASCII strings without NUL, so no input under one label can be read as an input
under another, and length framing means no two different part lists give the same
bytes. docs/protocol.md lists every label.
"""

from __future__ import annotations

import struct

LABEL_ENVELOPE_SIGNATURE = b"exchange-node/v1/envelope-signature"
LABEL_RECEIPT_SIGNATURE = b"exchange-node/v1/receipt-signature"
LABEL_CARD_SIGNATURE = b"exchange-node/v1/card-signature"
LABEL_REVOCATION_SIGNATURE = b"exchange-node/v1/revocation-signature"
LABEL_HPKE_INFO = b"exchange-node/v1/hpke-info"
LABEL_KEY_ID = b"exchange-node/v1/key-id"
LABEL_CARD_FINGERPRINT = b"exchange-node/v1/card-fingerprint"

_U32 = struct.Struct(">I")


def frame(label: bytes, *parts: bytes) -> bytes:
    """Return ``label || 0x00`` followed by each part prefixed with its 32-bit length."""
    out = bytearray(label)
    out.append(0)
    for part in parts:
        out += _U32.pack(len(part))
        out += part
    return bytes(out)
