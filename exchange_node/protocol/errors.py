"""Reasons for refusing protocol input, and the one opaque error callers see.

The protocol core never tells the outside *why* an envelope failed to open: callers
catch :class:`OpenError`, whose ``reason`` they log and audit, and answer peers only
with the coarse wire reason of :func:`wire_reason` (decryption and signature failures
both become VERIFICATION_FAILED). This mirrors Fernet's single ``InvalidToken``.
"""

from __future__ import annotations

import enum

from exchange_node.pb.exchange.v1 import types_pb2


class Reason(enum.StrEnum):
    """Internal reason codes. Stable strings: they appear in logs and audit leaves."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_RECIPIENT = "wrong_recipient"
    UNKNOWN_SENDER = "unknown_sender"
    SENDER_MISMATCH = "sender_mismatch"
    UNKNOWN_KEY = "unknown_key"
    KEY_REVOKED = "key_revoked"
    KEY_NOT_VALID = "key_not_valid"
    UNKNOWN_RECIPIENT_KEY = "unknown_recipient_key"
    SUITE_MISMATCH = "suite_mismatch"
    DECRYPTION_FAILED = "decryption_failed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    FUTURE_DATED = "future_dated"
    MESSAGE_ID_REUSED = "message_id_reused"
    POLICY_DENIED = "policy_denied"
    INVALID_CONTENT = "invalid_content"
    ILLEGAL_TRANSITION = "illegal_transition"
    NOT_PARTICIPANT = "not_participant"


_WIRE = {
    Reason.MALFORMED: types_pb2.REASON_MALFORMED,
    Reason.OVERSIZED: types_pb2.REASON_OVERSIZED,
    Reason.UNSUPPORTED_VERSION: types_pb2.REASON_UNSUPPORTED_VERSION,
    Reason.WRONG_RECIPIENT: types_pb2.REASON_WRONG_RECIPIENT,
    Reason.UNKNOWN_SENDER: types_pb2.REASON_UNKNOWN_SENDER,
    Reason.SENDER_MISMATCH: types_pb2.REASON_SENDER_MISMATCH,
    Reason.UNKNOWN_KEY: types_pb2.REASON_UNKNOWN_KEY,
    Reason.KEY_REVOKED: types_pb2.REASON_KEY_REVOKED,
    Reason.KEY_NOT_VALID: types_pb2.REASON_KEY_NOT_VALID,
    Reason.UNKNOWN_RECIPIENT_KEY: types_pb2.REASON_UNKNOWN_RECIPIENT_KEY,
    Reason.SUITE_MISMATCH: types_pb2.REASON_SUITE_MISMATCH,
    Reason.DECRYPTION_FAILED: types_pb2.REASON_VERIFICATION_FAILED,
    Reason.BAD_SIGNATURE: types_pb2.REASON_VERIFICATION_FAILED,
    Reason.EXPIRED: types_pb2.REASON_EXPIRED,
    Reason.FUTURE_DATED: types_pb2.REASON_FUTURE_DATED,
    Reason.MESSAGE_ID_REUSED: types_pb2.REASON_MESSAGE_ID_REUSED,
    Reason.POLICY_DENIED: types_pb2.REASON_POLICY_DENIED,
    Reason.INVALID_CONTENT: types_pb2.REASON_INVALID_CONTENT,
    Reason.ILLEGAL_TRANSITION: types_pb2.REASON_ILLEGAL_TRANSITION,
    Reason.NOT_PARTICIPANT: types_pb2.REASON_NOT_PARTICIPANT,
}

_FROM_WIRE = {v: k for k, v in _WIRE.items() if k is not Reason.BAD_SIGNATURE}
_FROM_WIRE[types_pb2.REASON_VERIFICATION_FAILED] = Reason.BAD_SIGNATURE


def wire_reason(reason: Reason) -> int:
    """The ``exchange.v1.Reason`` value a peer is told for an internal reason."""
    return _WIRE[reason]


def wire_reason_name(value: int) -> str:
    """Stable lower-case name of a wire reason, e.g. ``verification_failed``."""
    try:
        return types_pb2.Reason.Name(value).removeprefix("REASON_").lower()
    except ValueError:
        return f"unknown_{value}"


class ProtocolError(Exception):
    """Input refused by the protocol core.

    ``str(error)`` is deliberately uninformative; ``reason`` is for the operator's log
    and the audit log only, ``detail`` a short explanation for the same audience.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__("protocol input refused")
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.value!r}, {self.detail!r})"


class OpenError(ProtocolError):
    """An envelope, receipt or card could not be verified. The only error ``open``,
    ``verify_receipt`` and ``verify_card`` raise."""
