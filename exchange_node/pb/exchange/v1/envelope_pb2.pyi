# Generated from proto/ by proto/generate.py. Do not edit.
from exchange_node.pb.exchange.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_ACCEPTED: _ClassVar[Outcome]
    OUTCOME_DUPLICATE: _ClassVar[Outcome]
    OUTCOME_REJECTED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_ACCEPTED: Outcome
OUTCOME_DUPLICATE: Outcome
OUTCOME_REJECTED: Outcome

class EnvelopeHeader(_message.Message):
    __slots__ = ("version", "message_id", "sender", "recipient", "created_at_ms", "sender_key_id", "recipient_key_id", "suite")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SENDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SUITE_FIELD_NUMBER: _ClassVar[int]
    version: int
    message_id: bytes
    sender: str
    recipient: str
    created_at_ms: int
    sender_key_id: bytes
    recipient_key_id: bytes
    suite: _types_pb2.Suite
    def __init__(self, version: _Optional[int] = ..., message_id: _Optional[bytes] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., sender_key_id: _Optional[bytes] = ..., recipient_key_id: _Optional[bytes] = ..., suite: _Optional[_Union[_types_pb2.Suite, str]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("header", "sealed")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    sealed: bytes
    def __init__(self, header: _Optional[bytes] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class SignedBody(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("batch_id", "sender", "envelopes")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    batch_id: bytes
    sender: str
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, batch_id: _Optional[bytes] = ..., sender: _Optional[str] = ..., envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchReceipt(_message.Message):
    __slots__ = ("version", "batch_id", "receiver", "sender", "received_at_ms", "outcomes", "signer_key_id", "checkpoint")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SIGNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    version: int
    batch_id: bytes
    receiver: str
    sender: str
    received_at_ms: int
    outcomes: _containers.RepeatedCompositeFieldContainer[EnvelopeOutcome]
    signer_key_id: bytes
    checkpoint: bytes
    def __init__(self, version: _Optional[int] = ..., batch_id: _Optional[bytes] = ..., receiver: _Optional[str] = ..., sender: _Optional[str] = ..., received_at_ms: _Optional[int] = ..., outcomes: _Optional[_Iterable[_Union[EnvelopeOutcome, _Mapping]]] = ..., signer_key_id: _Optional[bytes] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class EnvelopeOutcome(_message.Message):
    __slots__ = ("envelope_hash", "message_id", "outcome", "reason")
    ENVELOPE_HASH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    envelope_hash: bytes
    message_id: bytes
    outcome: Outcome
    reason: _types_pb2.Reason
    def __init__(self, envelope_hash: _Optional[bytes] = ..., message_id: _Optional[bytes] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[_Union[_types_pb2.Reason, str]] = ...) -> None: ...

class SignedReceipt(_message.Message):
    __slots__ = ("receipt", "signature")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    receipt: bytes
    signature: bytes
    def __init__(self, receipt: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
