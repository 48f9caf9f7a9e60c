"""Protocol v1 core: pure functions over bytes, values and a clock passed in.

Nothing in this package performs I/O (except explicit private-key file helpers in
``keys``), reads configuration or looks at the wall clock.
"""

from .cards import CardKey, PeerCard, card_fingerprint, issue_card, sign_revocation, verify_card
from .envelope import Freshness, OpenedEnvelope, SealedEnvelope, open_envelope, seal
from .errors import OpenError, ProtocolError, Reason, wire_reason
from .keyring import FingerprintMismatch, Keyring, LocalIdentity
from .keys import EncryptionKey, SigningKey, Suite
from .receipts import Outcome, VerifiedReceipt, build_receipt, verify_receipt

__all__ = [
    "CardKey",
    "EncryptionKey",
    "FingerprintMismatch",
    "Freshness",
    "Keyring",
    "LocalIdentity",
    "OpenError",
    "OpenedEnvelope",
    "Outcome",
    "PeerCard",
    "ProtocolError",
    "Reason",
    "SealedEnvelope",
    "SigningKey",
    "Suite",
    "VerifiedReceipt",
    "build_receipt",
    "card_fingerprint",
    "issue_card",
    "open_envelope",
    "seal",
    "sign_revocation",
    "verify_card",
    "verify_receipt",
    "wire_reason",
]
