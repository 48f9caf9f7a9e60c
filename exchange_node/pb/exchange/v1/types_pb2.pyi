# Generated from proto/ by proto/generate.py. Do not edit.
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Suite(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUITE_UNSPECIFIED: _ClassVar[Suite]
    SUITE_MLKEM768_X25519_SHA256_AES256GCM: _ClassVar[Suite]
    SUITE_X25519_SHA256_AES256GCM: _ClassVar[Suite]

class KeyAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ALGORITHM_UNSPECIFIED: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_ED25519: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_MLKEM768_X25519: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_X25519: _ClassVar[KeyAlgorithm]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_MALFORMED: _ClassVar[Reason]
    REASON_OVERSIZED: _ClassVar[Reason]
    REASON_UNSUPPORTED_VERSION: _ClassVar[Reason]
    REASON_WRONG_RECIPIENT: _ClassVar[Reason]
    REASON_UNKNOWN_SENDER: _ClassVar[Reason]
    REASON_SENDER_MISMATCH: _ClassVar[Reason]
    REASON_UNKNOWN_KEY: _ClassVar[Reason]
    REASON_KEY_REVOKED: _ClassVar[Reason]
    REASON_KEY_NOT_VALID: _ClassVar[Reason]
    REASON_UNKNOWN_RECIPIENT_KEY: _ClassVar[Reason]
    REASON_SUITE_MISMATCH: _ClassVar[Reason]
    REASON_VERIFICATION_FAILED: _ClassVar[Reason]
    REASON_EXPIRED: _ClassVar[Reason]
    REASON_FUTURE_DATED: _ClassVar[Reason]
    REASON_MESSAGE_ID_REUSED: _ClassVar[Reason]
    REASON_POLICY_DENIED: _ClassVar[Reason]
    REASON_INVALID_CONTENT: _ClassVar[Reason]
    REASON_ILLEGAL_TRANSITION: _ClassVar[Reason]
    REASON_NOT_PARTICIPANT: _ClassVar[Reason]
SUITE_UNSPECIFIED: Suite
SUITE_MLKEM768_X25519_SHA256_AES256GCM: Suite
SUITE_X25519_SHA256_AES256GCM: Suite
KEY_ALGORITHM_UNSPECIFIED: KeyAlgorithm
KEY_ALGORITHM_ED25519: KeyAlgorithm
KEY_ALGORITHM_MLKEM768_X25519: KeyAlgorithm
KEY_ALGORITHM_X25519: KeyAlgorithm
REASON_UNSPECIFIED: Reason
REASON_MALFORMED: Reason
REASON_OVERSIZED: Reason
REASON_UNSUPPORTED_VERSION: Reason
REASON_WRONG_RECIPIENT: Reason
REASON_UNKNOWN_SENDER: Reason
REASON_SENDER_MISMATCH: Reason
REASON_UNKNOWN_KEY: Reason
REASON_KEY_REVOKED: Reason
REASON_KEY_NOT_VALID: Reason
REASON_UNKNOWN_RECIPIENT_KEY: Reason
REASON_SUITE_MISMATCH: Reason
REASON_VERIFICATION_FAILED: Reason
REASON_EXPIRED: Reason
REASON_FUTURE_DATED: Reason
REASON_MESSAGE_ID_REUSED: Reason
REASON_POLICY_DENIED: Reason
REASON_INVALID_CONTENT: Reason
REASON_ILLEGAL_TRANSITION: Reason
REASON_NOT_PARTICIPANT: Reason
