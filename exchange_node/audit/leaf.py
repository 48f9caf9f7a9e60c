"""The audit leaf: one record per security-relevant event, and its exact bytes.

A leaf is encoded once, when it is appended, and the bytes are stored as they are; the
Merkle leaf hash covers those bytes and nothing ever re-encodes a stored leaf. The
encoding (``docs/audit-format.md`` is the reference for auditors) is JSON in a
canonical form:

- one UTF-8 object, keys in ascending byte order, no whitespace, integers in decimal;
- keys ``actor, attrs, kind, message_id, peer, reason, seq, subject_hash, time, v``, all
  always present; ``attrs`` is an object with sorted keys;
- every string is drawn from a restricted ASCII alphabet (below), so no string needs
  escaping and the canonical form is unique. :func:`decode_leaf` accepts only bytes
  that re-encode to themselves.

Leaves hold identifiers and keyed hashes, never personal data in clear: a looked-up
document number goes in as :func:`keyed_hash` of it, and free text has no field.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum

import msgspec

from exchange_node.errors import ValidationError

LEAF_VERSION = 1


class LeafKind(StrEnum):
    """Event kinds. The values are stable: auditors' tools filter on them."""

    ENVELOPE_SENT = "envelope.sent"
    ENVELOPE_RECEIVED = "envelope.received"
    ENVELOPE_REJECTED = "envelope.rejected"
    RECEIPT_SENT = "receipt.sent"
    RECEIPT_RECEIVED = "receipt.received"
    DOCUMENT_LOOKUP = "document.lookup"
    CASE_TRANSITION = "case.transition"
    CASE_ACCESSED = "case.accessed"
    PEER_ADDED = "peer.added"
    PEER_REMOVED = "peer.removed"
    PEER_PAUSED = "peer.paused"
    PEER_RESUMED = "peer.resumed"
    PEER_CATCHUP = "peer.catchup"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    AUTH_FAILED = "auth.failed"
    CONFIG_LOADED = "config.loaded"
    CHECKPOINT_INCONSISTENT = "checkpoint.inconsistent"
    NOTICE_SUBMITTED = "notice.submitted"
    REQUEST_REFUSED = "request.refused"
    AUDIT_ORIGIN_CHANGED = "audit.origin_changed"
    CHECKPOINT_COSIGNED = "checkpoint.cosigned"
    CHECKPOINT_REFUSED = "checkpoint.refused"
    WITNESS_COSIGNED = "witness.cosigned"
    RECORD_PURGED = "record.purged"
    KEK_ROTATED = "kek.rotated"
    KEK_DESTROYED = "kek.destroyed"
    RECORD_HOLD = "record.hold"
    RECORD_REVIEWED = "record.reviewed"
    SUBJECT_REPORT = "subject.report"
    DEAD_LETTER_RETRIED = "dead_letter.retried"
    DEAD_LETTER_ACKNOWLEDGED = "dead_letter.acknowledged"
    PEER_PINGED = "peer.pinged"
    CONSOLE_SIGNED_IN = "console.signed_in"
    CONSOLE_SIGNED_OUT = "console.signed_out"
    BACKUP_MADE = "backup.made"
    BACKUP_RESTORED = "backup.restored"
    KEYS_ENCRYPTED = "keys.encrypted"


KINDS = frozenset(k.value for k in LeafKind)

# Alphabets: identifiers only. None of these characters needs escaping in JSON.
_ACTOR = re.compile(r"[A-Za-z0-9._:@/+\-]{1,128}")
_PEER = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{2,128}")
_REASON = re.compile(r"[a-z0-9_.]{1,64}")
_SUBJECT = re.compile(r"[0-9a-f]{64}")
_ATTR_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ATTR_VALUE = re.compile(r"[A-Za-z0-9._:@/+=\-]{0,128}")
# What a kind may look like, known or not: verifiers accept kinds added later.
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){1,3}")
MAX_ATTRS = 16
MAX_TIME = 2**53 - 1  # exact in every JSON implementation


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append; the log assigns its ``seq``.

    ``time`` is unix milliseconds, passed in by the caller. ``actor`` is who acted (a
    token name, a node id or ``"operator"``); ``peer`` the other node involved or "";
    ``message_id`` lowercase hex or ""; ``reason`` a stable error code or "";
    ``subject_hash`` a :func:`keyed_hash` of what was looked up or acted on, or "";
    ``attrs`` a few identifier-only values (case ids, key ids, states).
    """

    time: int
    kind: str
    actor: str
    peer: str = ""
    message_id: str = ""
    reason: str = ""
    subject_hash: str = ""
    attrs: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)


class LeafRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored leaf: an event with its position ``seq`` in the log (the leaf index)."""

    v: int = LEAF_VERSION
    seq: int
    time: int
    kind: str
    actor: str
    peer: str = ""
    message_id: str = ""
    reason: str = ""
    subject_hash: str = ""
    attrs: dict[str, str] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(LeafRecord)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError("audit_leaf_invalid", message, field)


def _validate(e: AuditEvent | LeafRecord, known_kinds_only: bool = True) -> None:
    if type(e.time) is not int or not 0 <= e.time <= MAX_TIME:
        raise _invalid("time", "time must be unix milliseconds, 0 to 2^53-1")
    if e.kind not in KINDS and (known_kinds_only or not _KIND.fullmatch(e.kind)):
        raise _invalid("kind", f"unknown kind {e.kind!r}; use a LeafKind value")
    if not _ACTOR.fullmatch(e.actor):
        raise _invalid("actor", "actor must be 1-128 characters of A-Z a-z 0-9 . _ : @ / + -")
    if e.peer and not _PEER.fullmatch(e.peer):
        raise _invalid("peer", "peer must be a node id: 1-64 characters of A-Z a-z 0-9 . _ : -")
    if e.message_id and not _HEX.fullmatch(e.message_id):
        raise _invalid("message_id", "message_id must be 2-128 lowercase hex digits")
    if e.reason and not _REASON.fullmatch(e.reason):
        raise _invalid("reason", "reason must be a stable code: 1-64 of a-z 0-9 _ .")
    if e.subject_hash and not _SUBJECT.fullmatch(e.subject_hash):
        raise _invalid("subject_hash", "subject_hash must be 64 lowercase hex digits")
    if len(e.attrs) > MAX_ATTRS:
        raise _invalid("attrs", f"at most {MAX_ATTRS} attrs")
    for k, val in e.attrs.items():
        if not _ATTR_KEY.fullmatch(k):
            raise _invalid(f"attrs.{k}", "attr keys are 1-32 of a-z 0-9 _, starting with a letter")
        if not _ATTR_VALUE.fullmatch(val):
            raise _invalid(
                f"attrs.{k}", "attr values are identifiers: 0-128 of A-Z a-z 0-9 . _ : @ / + = -"
            )


def encode_leaf(seq: int, event: AuditEvent) -> bytes:
    """The canonical bytes of ``event`` stored at position ``seq``."""
    if type(seq) is not int or seq < 0:
        raise _invalid("seq", "seq must be a non-negative integer")
    return _encoder.encode(
        LeafRecord(
            seq=seq,
            time=event.time,
            kind=event.kind,
            actor=event.actor,
            peer=event.peer,
            message_id=event.message_id,
            reason=event.reason,
            subject_hash=event.subject_hash,
            attrs=event.attrs,
        )
    )


def decode_leaf(data: bytes, *, known_kinds_only: bool = True) -> LeafRecord:
    """Parse stored leaf bytes. Raises ``ValidationError`` (``audit_leaf_invalid``) unless
    ``data`` is a valid leaf in canonical form (so equal records have equal bytes).

    ``known_kinds_only=False`` (offline verifiers) also accepts a kind this version does
    not know, if it is shaped like one (dotted lowercase words); the caller reports it.
    """
    try:
        record = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _invalid("leaf", f"not a leaf record: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _invalid("leaf", f"not JSON: {exc}") from None
    if record.v != LEAF_VERSION:
        raise _invalid("v", f"unsupported leaf version {record.v}")
    if type(record.seq) is not int or record.seq < 0:
        raise _invalid("seq", "seq must be a non-negative integer")
    _validate(record, known_kinds_only)
    if _encoder.encode(record) != data:
        raise _invalid("leaf", "leaf bytes are not in canonical form")
    return record


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, lowercase hex.

    For ``subject_hash``: lets an auditor holding the key check whether a given document
    was looked up, without the log revealing which documents were.
    """
    if len(key) < 16:
        raise ValidationError(
            "audit_key_too_short", "the subject key must be at least 16 bytes", "key"
        )
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
