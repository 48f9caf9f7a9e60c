# Generated from proto/ by proto/generate.py. Do not edit.
from exchange_node.pb.exchange.v1 import card_pb2 as _card_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PurgeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURGE_REASON_UNSPECIFIED: _ClassVar[PurgeReason]
    PURGE_REASON_RETENTION: _ClassVar[PurgeReason]
    PURGE_REASON_ERASURE_REQUEST: _ClassVar[PurgeReason]
    PURGE_REASON_WITHDRAWN_BY_SOURCE: _ClassVar[PurgeReason]
    PURGE_REASON_RECTIFIED: _ClassVar[PurgeReason]

class DocumentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOCUMENT_STATUS_UNSPECIFIED: _ClassVar[DocumentStatus]
    DOCUMENT_STATUS_STOLEN: _ClassVar[DocumentStatus]
    DOCUMENT_STATUS_LOST: _ClassVar[DocumentStatus]
    DOCUMENT_STATUS_REVOKED: _ClassVar[DocumentStatus]
    DOCUMENT_STATUS_INVALIDATED: _ClassVar[DocumentStatus]
    DOCUMENT_STATUS_STOLEN_BLANK: _ClassVar[DocumentStatus]

class FraudType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAUD_TYPE_UNSPECIFIED: _ClassVar[FraudType]
    FRAUD_TYPE_COUNTERFEIT: _ClassVar[FraudType]
    FRAUD_TYPE_FORGED: _ClassVar[FraudType]
    FRAUD_TYPE_PSEUDO: _ClassVar[FraudType]
    FRAUD_TYPE_FRAUDULENTLY_OBTAINED: _ClassVar[FraudType]
    FRAUD_TYPE_IMPOSTOR: _ClassVar[FraudType]

class CorrectionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRECTION_ACTION_UNSPECIFIED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_WITHDRAW: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_REPLACE: _ClassVar[CorrectionAction]

class CaseEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_EVENT_TYPE_UNSPECIFIED: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_OPEN_CASE: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_RECORD_CONSENT: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_RECORD_ASSESSMENT: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_ACCEPT_RETURN: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_REQUEST_TRAVEL_DOCUMENT: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_ISSUE_TRAVEL_DOCUMENT: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_PLAN_TRAVEL: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_DEPART: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_CONFIRM_ARRIVAL: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_START_REINTEGRATION: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_REPORT_REINTEGRATION: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_START_MONITORING: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_CLOSE_CASE: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_WITHDRAW_CONSENT: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_SUSPEND: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_RESUME: _ClassVar[CaseEventType]
    CASE_EVENT_TYPE_CANCEL: _ClassVar[CaseEventType]

class CaseRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_ROLE_UNSPECIFIED: _ClassVar[CaseRole]
    CASE_ROLE_IDENTIFYING_STATE: _ClassVar[CaseRole]
    CASE_ROLE_ORIGIN_STATE: _ClassVar[CaseRole]
    CASE_ROLE_IOM: _ClassVar[CaseRole]
    CASE_ROLE_OTHER: _ClassVar[CaseRole]
PURGE_REASON_UNSPECIFIED: PurgeReason
PURGE_REASON_RETENTION: PurgeReason
PURGE_REASON_ERASURE_REQUEST: PurgeReason
PURGE_REASON_WITHDRAWN_BY_SOURCE: PurgeReason
PURGE_REASON_RECTIFIED: PurgeReason
DOCUMENT_STATUS_UNSPECIFIED: DocumentStatus
DOCUMENT_STATUS_STOLEN: DocumentStatus
DOCUMENT_STATUS_LOST: DocumentStatus
DOCUMENT_STATUS_REVOKED: DocumentStatus
DOCUMENT_STATUS_INVALIDATED: DocumentStatus
DOCUMENT_STATUS_STOLEN_BLANK: DocumentStatus
FRAUD_TYPE_UNSPECIFIED: FraudType
FRAUD_TYPE_COUNTERFEIT: FraudType
FRAUD_TYPE_FORGED: FraudType
FRAUD_TYPE_PSEUDO: FraudType
FRAUD_TYPE_FRAUDULENTLY_OBTAINED: FraudType
FRAUD_TYPE_IMPOSTOR: FraudType
CORRECTION_ACTION_UNSPECIFIED: CorrectionAction
CORRECTION_ACTION_WITHDRAW: CorrectionAction
CORRECTION_ACTION_REPLACE: CorrectionAction
CASE_EVENT_TYPE_UNSPECIFIED: CaseEventType
CASE_EVENT_TYPE_OPEN_CASE: CaseEventType
CASE_EVENT_TYPE_RECORD_CONSENT: CaseEventType
CASE_EVENT_TYPE_RECORD_ASSESSMENT: CaseEventType
CASE_EVENT_TYPE_ACCEPT_RETURN: CaseEventType
CASE_EVENT_TYPE_REQUEST_TRAVEL_DOCUMENT: CaseEventType
CASE_EVENT_TYPE_ISSUE_TRAVEL_DOCUMENT: CaseEventType
CASE_EVENT_TYPE_PLAN_TRAVEL: CaseEventType
CASE_EVENT_TYPE_DEPART: CaseEventType
CASE_EVENT_TYPE_CONFIRM_ARRIVAL: CaseEventType
CASE_EVENT_TYPE_START_REINTEGRATION: CaseEventType
CASE_EVENT_TYPE_REPORT_REINTEGRATION: CaseEventType
CASE_EVENT_TYPE_START_MONITORING: CaseEventType
CASE_EVENT_TYPE_CLOSE_CASE: CaseEventType
CASE_EVENT_TYPE_WITHDRAW_CONSENT: CaseEventType
CASE_EVENT_TYPE_SUSPEND: CaseEventType
CASE_EVENT_TYPE_RESUME: CaseEventType
CASE_EVENT_TYPE_CANCEL: CaseEventType
CASE_ROLE_UNSPECIFIED: CaseRole
CASE_ROLE_IDENTIFYING_STATE: CaseRole
CASE_ROLE_ORIGIN_STATE: CaseRole
CASE_ROLE_IOM: CaseRole
CASE_ROLE_OTHER: CaseRole

class Body(_message.Message):
    __slots__ = ("status_notice", "fraud_notice", "correction", "case_event", "ping", "card_announcement", "revocation_announcement", "catch_up_request", "purge_notice", "catch_up")
    STATUS_NOTICE_FIELD_NUMBER: _ClassVar[int]
    FRAUD_NOTICE_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    CASE_EVENT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    CARD_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PURGE_NOTICE_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_FIELD_NUMBER: _ClassVar[int]
    status_notice: TravelDocumentStatusNotice
    fraud_notice: FraudDetectionNotice
    correction: NoticeCorrection
    case_event: CaseEvent
    ping: Ping
    card_announcement: CardAnnouncement
    revocation_announcement: RevocationAnnouncement
    catch_up_request: CatchUpRequest
    purge_notice: PurgeNotice
    catch_up: CatchUp
    def __init__(self, status_notice: _Optional[_Union[TravelDocumentStatusNotice, _Mapping]] = ..., fraud_notice: _Optional[_Union[FraudDetectionNotice, _Mapping]] = ..., correction: _Optional[_Union[NoticeCorrection, _Mapping]] = ..., case_event: _Optional[_Union[CaseEvent, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., card_announcement: _Optional[_Union[CardAnnouncement, _Mapping]] = ..., revocation_announcement: _Optional[_Union[RevocationAnnouncement, _Mapping]] = ..., catch_up_request: _Optional[_Union[CatchUpRequest, _Mapping]] = ..., purge_notice: _Optional[_Union[PurgeNotice, _Mapping]] = ..., catch_up: _Optional[_Union[CatchUp, _Mapping]] = ...) -> None: ...

class CatchUpRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: bytes
    def __init__(self, request_id: _Optional[bytes] = ...) -> None: ...

class PurgeNotice(_message.Message):
    __slots__ = ("purge_id", "case_ref", "reason", "purged_at_ms")
    PURGE_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PURGED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    purge_id: bytes
    case_ref: str
    reason: PurgeReason
    purged_at_ms: int
    def __init__(self, purge_id: _Optional[bytes] = ..., case_ref: _Optional[str] = ..., reason: _Optional[_Union[PurgeReason, str]] = ..., purged_at_ms: _Optional[int] = ...) -> None: ...

class CatchUp(_message.Message):
    __slots__ = ("issued_at_ms", "superseded_ids")
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_IDS_FIELD_NUMBER: _ClassVar[int]
    issued_at_ms: int
    superseded_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, issued_at_ms: _Optional[int] = ..., superseded_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DocumentRef(_message.Message):
    __slots__ = ("issuing_state", "document_type", "document_number", "mrz")
    ISSUING_STATE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    MRZ_FIELD_NUMBER: _ClassVar[int]
    issuing_state: str
    document_type: str
    document_number: str
    mrz: str
    def __init__(self, issuing_state: _Optional[str] = ..., document_type: _Optional[str] = ..., document_number: _Optional[str] = ..., mrz: _Optional[str] = ...) -> None: ...

class TravelDocumentStatusNotice(_message.Message):
    __slots__ = ("notice_id", "document", "status", "effective_at_ms", "remarks")
    NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REMARKS_FIELD_NUMBER: _ClassVar[int]
    notice_id: bytes
    document: DocumentRef
    status: DocumentStatus
    effective_at_ms: int
    remarks: str
    def __init__(self, notice_id: _Optional[bytes] = ..., document: _Optional[_Union[DocumentRef, _Mapping]] = ..., status: _Optional[_Union[DocumentStatus, str]] = ..., effective_at_ms: _Optional[int] = ..., remarks: _Optional[str] = ...) -> None: ...

class FraudDetectionNotice(_message.Message):
    __slots__ = ("notice_id", "document", "fraud_type", "detected_at_ms", "detection_place", "detecting_authority", "remarks")
    NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    FRAUD_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_PLACE_FIELD_NUMBER: _ClassVar[int]
    DETECTING_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    REMARKS_FIELD_NUMBER: _ClassVar[int]
    notice_id: bytes
    document: DocumentRef
    fraud_type: FraudType
    detected_at_ms: int
    detection_place: str
    detecting_authority: str
    remarks: str
    def __init__(self, notice_id: _Optional[bytes] = ..., document: _Optional[_Union[DocumentRef, _Mapping]] = ..., fraud_type: _Optional[_Union[FraudType, str]] = ..., detected_at_ms: _Optional[int] = ..., detection_place: _Optional[str] = ..., detecting_authority: _Optional[str] = ..., remarks: _Optional[str] = ...) -> None: ...

class NoticeCorrection(_message.Message):
    __slots__ = ("notice_id", "supersedes_notice_id", "action", "reason", "status_notice", "fraud_notice")
    NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_NOTICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_NOTICE_FIELD_NUMBER: _ClassVar[int]
    FRAUD_NOTICE_FIELD_NUMBER: _ClassVar[int]
    notice_id: bytes
    supersedes_notice_id: bytes
    action: CorrectionAction
    reason: str
    status_notice: TravelDocumentStatusNotice
    fraud_notice: FraudDetectionNotice
    def __init__(self, notice_id: _Optional[bytes] = ..., supersedes_notice_id: _Optional[bytes] = ..., action: _Optional[_Union[CorrectionAction, str]] = ..., reason: _Optional[str] = ..., status_notice: _Optional[_Union[TravelDocumentStatusNotice, _Mapping]] = ..., fraud_notice: _Optional[_Union[FraudDetectionNotice, _Mapping]] = ...) -> None: ...

class CaseParticipant(_message.Message):
    __slots__ = ("node_id", "role")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: CaseRole
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[_Union[CaseRole, str]] = ...) -> None: ...

class PersonalData(_message.Message):
    __slots__ = ("full_name", "date_of_birth", "nationality", "sex", "languages", "special_needs")
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    DATE_OF_BIRTH_FIELD_NUMBER: _ClassVar[int]
    NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_NEEDS_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    date_of_birth: str
    nationality: str
    sex: str
    languages: str
    special_needs: str
    def __init__(self, full_name: _Optional[str] = ..., date_of_birth: _Optional[str] = ..., nationality: _Optional[str] = ..., sex: _Optional[str] = ..., languages: _Optional[str] = ..., special_needs: _Optional[str] = ...) -> None: ...

class CaseEvent(_message.Message):
    __slots__ = ("event_id", "case_ref", "type", "sequence", "occurred_at_ms", "participants", "personal_data", "note")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_DATA_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    event_id: bytes
    case_ref: str
    type: CaseEventType
    sequence: int
    occurred_at_ms: int
    participants: _containers.RepeatedCompositeFieldContainer[CaseParticipant]
    personal_data: PersonalData
    note: str
    def __init__(self, event_id: _Optional[bytes] = ..., case_ref: _Optional[str] = ..., type: _Optional[_Union[CaseEventType, str]] = ..., sequence: _Optional[int] = ..., occurred_at_ms: _Optional[int] = ..., participants: _Optional[_Iterable[_Union[CaseParticipant, _Mapping]]] = ..., personal_data: _Optional[_Union[PersonalData, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class CardAnnouncement(_message.Message):
    __slots__ = ("signed_card",)
    SIGNED_CARD_FIELD_NUMBER: _ClassVar[int]
    signed_card: _card_pb2.SignedCard
    def __init__(self, signed_card: _Optional[_Union[_card_pb2.SignedCard, _Mapping]] = ...) -> None: ...

class RevocationAnnouncement(_message.Message):
    __slots__ = ("signed_revocation",)
    SIGNED_REVOCATION_FIELD_NUMBER: _ClassVar[int]
    signed_revocation: _card_pb2.SignedRevocation
    def __init__(self, signed_revocation: _Optional[_Union[_card_pb2.SignedRevocation, _Mapping]] = ...) -> None: ...
