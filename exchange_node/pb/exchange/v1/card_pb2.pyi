# Generated from proto/ by proto/generate.py. Do not edit.
from exchange_node.pb.exchange.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublicKey(_message.Message):
    __slots__ = ("key_id", "algorithm", "public_key", "not_before_ms", "not_after_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: bytes
    algorithm: _types_pb2.KeyAlgorithm
    public_key: bytes
    not_before_ms: int
    not_after_ms: int
    def __init__(self, key_id: _Optional[bytes] = ..., algorithm: _Optional[_Union[_types_pb2.KeyAlgorithm, str]] = ..., public_key: _Optional[bytes] = ..., not_before_ms: _Optional[int] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class NodeCard(_message.Message):
    __slots__ = ("version", "node_id", "country", "endpoint", "display_name", "signing_keys", "encryption_keys", "tls_cert_sha256", "serial", "issued_at_ms", "tls_certificate")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEYS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_KEYS_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    version: int
    node_id: str
    country: str
    endpoint: str
    display_name: str
    signing_keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    encryption_keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    tls_cert_sha256: bytes
    serial: int
    issued_at_ms: int
    tls_certificate: bytes
    def __init__(self, version: _Optional[int] = ..., node_id: _Optional[str] = ..., country: _Optional[str] = ..., endpoint: _Optional[str] = ..., display_name: _Optional[str] = ..., signing_keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., encryption_keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., tls_cert_sha256: _Optional[bytes] = ..., serial: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., tls_certificate: _Optional[bytes] = ...) -> None: ...

class CardSignature(_message.Message):
    __slots__ = ("key_id", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: bytes
    signature: bytes
    def __init__(self, key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SignedCard(_message.Message):
    __slots__ = ("card", "signatures")
    CARD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    card: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[CardSignature]
    def __init__(self, card: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[CardSignature, _Mapping]]] = ...) -> None: ...

class KeyRevocation(_message.Message):
    __slots__ = ("version", "node_id", "revoked_key_id", "revoked_at_ms", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    node_id: str
    revoked_key_id: bytes
    revoked_at_ms: int
    reason: str
    def __init__(self, version: _Optional[int] = ..., node_id: _Optional[str] = ..., revoked_key_id: _Optional[bytes] = ..., revoked_at_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SignedRevocation(_message.Message):
    __slots__ = ("revocation", "signature")
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    revocation: bytes
    signature: CardSignature
    def __init__(self, revocation: _Optional[bytes] = ..., signature: _Optional[_Union[CardSignature, _Mapping]] = ...) -> None: ...
