"""Every audit leaf the node writes is built here, from plain values.

One function per event, so the attrs of a kind (``docs/audit-format.md``) are decided in
one place and the code that records an event cannot drift from the format. Pure: time is
an argument, nothing is written; the caller commits the leaves with the change they
record (``store.transaction`` / a store write's ``audit=``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from exchange_node.audit.leaf import AuditEvent, LeafKind

_CODE = re.compile(r"[a-z0-9_.]{1,64}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _named(key: str, text: str) -> dict[str, str]:
    """``{key: text}`` if ``text`` fits the attrs alphabet, else ``{key_sha256: hash}``:
    names that come from outside (an origin a client sent, a configured key name)."""
    fits = len(text) <= 128 and all(c.isascii() and (c.isalnum() or c in "._:@/+=-") for c in text)
    return {key: text} if fits else {f"{key}_sha256": _sha256(text.encode())}


def notice_submitted(now: int, actor: str, peer: str, message_id: bytes, kind: str) -> AuditEvent:
    """A local system queued a message for ``peer``."""
    return AuditEvent(
        time=now,
        kind=LeafKind.NOTICE_SUBMITTED,
        actor=actor,
        peer=peer,
        message_id=message_id.hex(),
        attrs={"kind": kind},
    )


def envelope_sent(
    now: int, me: str, peer: str, message_id: bytes, batch_id: bytes, outcome: str, reason: str
) -> AuditEvent:
    """``peer``'s verified receipt settled one of our envelopes with ``outcome``."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_SENT,
        actor=me,
        peer=peer,
        message_id=message_id.hex(),
        reason=reason,
        attrs={"outcome": outcome, "batch_id": batch_id.hex()},
    )


def receipt_received(
    now: int, me: str, peer: str, batch_id: bytes, receipt: bytes, counts: dict[str, int]
) -> AuditEvent:
    """A verified receipt for our batch, with how many envelopes had each outcome."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_RECEIVED,
        actor=me,
        peer=peer,
        attrs={
            "batch_id": batch_id.hex(),
            "receipt_sha256": _sha256(receipt),
            **{k: str(counts.get(k, 0)) for k in ("accepted", "duplicate", "rejected")},
        },
    )


def receipt_refused(
    now: int, peer: str, batch_id: bytes, receipt: bytes, reason: str
) -> AuditEvent:
    """A receipt for our batch that did not verify (the batch stays queued)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_RECEIVED,
        actor=peer,
        peer=peer,
        reason=reason,
        attrs={
            "outcome": "refused",
            "batch_id": batch_id.hex(),
            "receipt_sha256": _sha256(receipt),
        },
    )


def envelope_received(
    now: int,
    sender: str,
    message_id: bytes | None,
    envelope_hash: bytes,
    outcome: str,
    reason: str,
    kind: str,
) -> AuditEvent:
    """One envelope of a peer's batch and what our receipt said of it."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_REJECTED if outcome == "rejected" else LeafKind.ENVELOPE_RECEIVED,
        actor=sender,
        peer=sender,
        message_id=message_id.hex() if message_id else "",
        reason=reason,
        attrs={
            "outcome": outcome,
            "envelope_sha256": envelope_hash.hex(),
            **({"kind": kind} if kind else {}),
        },
    )


def receipt_sent(now: int, me: str, peer: str, batch_id: bytes, receipt: bytes) -> AuditEvent:
    """The signed receipt we answered ``peer``'s batch with."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECEIPT_SENT,
        actor=me,
        peer=peer,
        attrs={"batch_id": batch_id.hex(), "receipt_sha256": _sha256(receipt)},
    )


def batch_refused(
    now: int, peer: str, code: str, attrs: dict[str, str] | None = None
) -> AuditEvent:
    """A batch refused as a whole (oversized, malformed, unknown peer)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.ENVELOPE_REJECTED,
        actor=peer or "unknown",
        peer=peer,
        reason=code,
        attrs={"scope": "batch", **(attrs or {})},
    )


def handshake_refused(now: int, reason: str, remote: tuple[str, str], tls_error: str) -> AuditEvent:
    """A connection to the peer API refused in the TLS handshake: no client certificate,
    one on no pinned card, or no TLS 1.3. OpenSSL discards a certificate it refuses, so
    only the remote address and OpenSSL's reason are known."""
    addr, port = remote
    return AuditEvent(
        time=now,
        kind=LeafKind.AUTH_FAILED,
        actor="unknown",
        reason=reason,
        attrs={
            "operation": "peer_api.handshake",
            "remote_addr": addr,
            "remote_port": port,
            **({"tls_error": tls_error} if tls_error else {}),
        },
    )


def peer_request_refused(
    now: int, peer: str, code: str, remote: tuple[str, str], status: int
) -> AuditEvent:
    """A peer API request refused before any handler took it (malformed HTTP, a body
    that does not match its ``Content-Length``, an unknown path or method)."""
    addr, port = remote
    return AuditEvent(
        time=now,
        kind=LeafKind.REQUEST_REFUSED,
        actor=peer or "unknown",
        peer=peer,
        reason=code,
        attrs={
            "operation": "peer_api",
            "status": str(status),
            "remote_addr": addr,
            "remote_port": port,
        },
    )


def refusals_suppressed(
    now: int, kind: LeafKind, operation: str, count: int, window_seconds: int
) -> AuditEvent:
    """``count`` refusals of ``operation`` past the per-window budget, counted in one
    entry instead of one each (a flood cannot fill the log)."""
    return AuditEvent(
        time=now,
        kind=kind,
        actor="unknown",
        reason="refusals_suppressed",
        attrs={
            "operation": operation,
            "suppressed": str(count),
            "window_seconds": str(window_seconds),
        },
    )


def request_refused(now: int, actor: str, operation: str, code: str) -> AuditEvent:
    """A local API request refused for how it was made, not for its content (an
    ``Idempotency-Key`` malformed or reused with another request)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.REQUEST_REFUSED,
        actor=actor,
        reason=code,
        attrs={"operation": operation},
    )


def settlement(
    now: int,
    me: str,
    peer: str,
    batch_id: bytes,
    receipt: bytes,
    settled: Sequence[tuple[bytes, str, str]],
) -> list[AuditEvent]:
    """The leaves of one receipt's settlement: ``envelope.sent`` per (message id,
    outcome, reason), then ``receipt.received`` with the counts."""
    counts: dict[str, int] = {}
    events = []
    for message_id, outcome, reason in settled:
        counts[outcome] = counts.get(outcome, 0) + 1
        events.append(envelope_sent(now, me, peer, message_id, batch_id, outcome, reason))
    events.append(receipt_received(now, me, peer, batch_id, receipt, counts))
    return events


def case_transition(
    now: int, actor: str, peer: str, case_ref: str, event: str, from_status: str, to: str, seq: int
) -> AuditEvent:
    """A step of a repatriation case, this node's (``peer`` empty) or a peer's."""
    return AuditEvent(
        time=now,
        kind=LeafKind.CASE_TRANSITION,
        actor=actor,
        peer=peer,
        attrs={"case": case_ref, "event": event, "from": from_status, "to": to, "seq": str(seq)},
    )


def _read(kind: LeafKind, now: int, actor: str, subject_hash: str, found: bool) -> AuditEvent:
    return AuditEvent(
        time=now,
        kind=kind,
        actor=actor,
        subject_hash=subject_hash,
        attrs={"found": "true" if found else "false"},
    )


def case_accessed(
    now: int, actor: str, subject_hash: str, found: bool, purpose: str, operation: str = "read"
) -> AuditEvent:
    """A read of a case's personal data by a local officer, with the purpose it gave
    (``operation``: ``read``, or ``subject_report`` for a subject access report); the
    reference only as a keyed hash."""
    return AuditEvent(
        time=now,
        kind=LeafKind.CASE_ACCESSED,
        actor=actor,
        subject_hash=subject_hash,
        attrs={
            "found": "true" if found else "false",
            "purpose": purpose,
            "operation": operation,
        },
    )


def document_lookup(now: int, actor: str, subject_hash: str, found: bool) -> AuditEvent:
    """One document looked up by a local system; the document only as a keyed hash."""
    return _read(LeafKind.DOCUMENT_LOOKUP, now, actor, subject_hash, found)


def auth_failed(now: int, actor: str, reason: str, operation: str) -> AuditEvent:
    """A local API call refused for its token (missing, invalid, wrong role)."""
    return AuditEvent(
        time=now, kind=LeafKind.AUTH_FAILED, actor=actor, reason=reason,
        attrs={"operation": operation},
    )  # fmt: skip


def config_loaded(now: int, config_sha256: str, plain_http: bool) -> AuditEvent:
    """The node started with this configuration."""
    return AuditEvent(
        time=now,
        kind=LeafKind.CONFIG_LOADED,
        actor="operator",
        attrs={"config_sha256": config_sha256, "plain_http": str(plain_http).lower()},
    )


def peer_changed(
    now: int, kind: LeafKind, peer: str, actor: str = "operator", **attrs: str
) -> AuditEvent:
    """A pinned peer added, removed, paused or resumed, or its policy changed."""
    return AuditEvent(time=now, kind=kind, actor=actor, peer=peer, attrs=attrs)


def catchup(now: int, peer: str, action: str, actor: str = "catchup", **attrs: str) -> AuditEvent:
    """A peer's catch-up ``started``, ``finished``, ``paused``, ``resumed`` or
    ``restarted`` (by ``actor``: the node itself, an operator, or the peer asking)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.PEER_CATCHUP,
        actor=actor,
        peer=peer,
        attrs={"action": action, **attrs},
    )


def key_rotated(now: int, actor: str, peer: str, serial: int, signing_key: bytes) -> AuditEvent:
    """A card rotation: this node's (``peer`` empty) or a peer's, adopted."""
    return AuditEvent(
        time=now,
        kind=LeafKind.KEY_ROTATED,
        actor=actor,
        peer=peer,
        attrs={"serial": str(serial), "signing_key": signing_key.hex()},
    )


def key_revoked(
    now: int, actor: str, peer: str, key_id: bytes, revoked_at: int | None = None
) -> AuditEvent:
    """A key revoked: one of this node's (``peer`` empty) or a peer's, adopted."""
    attrs = {"key_id": key_id.hex()}
    if revoked_at is not None:
        attrs["revoked_at"] = str(revoked_at)
    return AuditEvent(time=now, kind=LeafKind.KEY_REVOKED, actor=actor, peer=peer, attrs=attrs)


def dead_letter(
    now: int,
    kind: LeafKind,
    actor: str,
    peer: str,
    message_id: bytes,
    outbox_id: int,
    reason: str | None,
) -> AuditEvent:
    """An operator retried a dead letter (queued again) or acknowledged it (left as it
    is, no longer counted as needing a person), with the code it was refused with."""
    code = reason if reason and _CODE.fullmatch(reason) else ""
    return AuditEvent(
        time=now, kind=kind, actor=actor, peer=peer, message_id=message_id.hex(),
        reason=code, attrs={"outbox_id": str(outbox_id)},
    )  # fmt: skip


def backup(now: int, kind: LeafKind, actor: str, made_at: int) -> AuditEvent:
    """A backup of the data directory made (recorded in the log it copies, just before
    the copy) or restored (recorded in the restored log, after what the backup holds)."""
    return AuditEvent(time=now, kind=kind, actor=actor, attrs={"made_at": str(made_at)})


def keys_encrypted(now: int, actor: str, files: int) -> AuditEvent:
    """Private key files written in clear were encrypted under the node's passphrase."""
    return AuditEvent(
        time=now, kind=LeafKind.KEYS_ENCRYPTED, actor=actor, attrs={"files": str(files)}
    )


def token_created(
    now: int, name: str, role: str, expires_at: int | None = None, actor: str = "operator"
) -> AuditEvent:
    return AuditEvent(
        time=now, kind=LeafKind.TOKEN_CREATED, actor=actor,
        attrs={"token": name, "role": role, "expires_at": str(expires_at or "")},
    )  # fmt: skip


def token_revoked(now: int, name: str, actor: str = "operator") -> AuditEvent:
    return AuditEvent(time=now, kind=LeafKind.TOKEN_REVOKED, actor=actor, attrs={"token": name})


def peer_pinged(now: int, actor: str, peer: str, outcome: str) -> AuditEvent:
    """An operator asked a peer for its card: ``outcome`` is ``matches``, ``differs``
    (its card is not the pinned one) or ``unreachable``."""
    return AuditEvent(
        time=now, kind=LeafKind.PEER_PINGED, actor=actor, peer=peer, attrs={"outcome": outcome}
    )


# --- the log itself and witnessing (docs/audit-format.md sections 4b, 12) ----------------


def origin_changed(now: int, old: str, new: str) -> AuditEvent:
    """The log signs its checkpoints under a new origin from this leaf on."""
    return AuditEvent(
        time=now,
        kind=LeafKind.AUDIT_ORIGIN_CHANGED,
        actor="operator",
        attrs={"old_origin": old, "new_origin": new},
    )


def checkpoint_cosigned(
    now: int, actor: str, log_peer: str, origin: str, old_size: int, size: int, root: bytes
) -> AuditEvent:
    """As a witness, this node cosigned a checkpoint of ``origin`` (the log of
    ``log_peer``, "" for a configured log) that ``actor`` submitted, after checking it
    extends the ``old_size`` it had cosigned before."""
    return AuditEvent(
        time=now,
        kind=LeafKind.CHECKPOINT_COSIGNED,
        actor=actor,
        peer=log_peer,
        attrs={
            **_named("origin", origin),
            "old_size": str(old_size),
            "size": str(size),
            "root": root.hex(),
        },
    )


def checkpoint_refused(
    now: int,
    actor: str,
    log_peer: str,
    reason: str,
    status: int,
    origin: str,
    attrs: dict[str, str],
) -> AuditEvent:
    """As a witness, this node refused to cosign a checkpoint ``actor`` submitted
    (``status`` answered). An origin outside the attrs alphabet (anything a client
    sent) is recorded as its SHA-256."""
    return AuditEvent(
        time=now,
        kind=LeafKind.CHECKPOINT_REFUSED,
        actor=actor,
        peer=log_peer,
        reason=reason,
        attrs={"status": str(status), **(_named("origin", origin) if origin else {}), **attrs},
    )


def witness_cosigned(now: int, me: str, witness: str, size: int, timestamp: int) -> AuditEvent:
    """A witness cosigned this node's checkpoint of ``size``; the cosignature is kept."""
    return AuditEvent(
        time=now,
        kind=LeafKind.WITNESS_COSIGNED,
        actor=me,
        attrs={**_named("witness", witness), "size": str(size), "timestamp": str(timestamp)},
    )


# --- data protection (docs/operations.md sections 9-13) ------------------------------------


def record_purged(
    now: int,
    approver: str,
    record_type: str,
    record: str,
    reason: str,
    subject_hash: str,
    peer: str = "",
) -> AuditEvent:
    """A record's personal content destroyed (its data key and ciphertext deleted), for
    ``reason`` (``retention``, ``erasure_request``, ``withdrawn_by_source``,
    ``rectified``), approved by ``approver`` (a token name, ``operator``, or
    ``retention`` for the schedule, or the peer whose purge notice this node obeyed, then
    also ``peer``)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECORD_PURGED,
        actor=approver,
        peer=peer,
        subject_hash=subject_hash,
        attrs={"record_type": record_type, "record": record, "reason": reason},
    )


def kek_rotated(now: int, actor: str, old: int | None, new: int, rewrapped: int) -> AuditEvent:
    """A new key-encryption key version, every data key re-wrapped under it."""
    return AuditEvent(
        time=now,
        kind=LeafKind.KEK_ROTATED,
        actor=actor,
        attrs={"from": str(old or 0), "to": str(new), "rewrapped": str(rewrapped)},
    )


def kek_destroyed(now: int, actor: str, version: int, retired_at: int) -> AuditEvent:
    """A retired key-encryption key's file deleted after the backup horizon."""
    return AuditEvent(
        time=now,
        kind=LeafKind.KEK_DESTROYED,
        actor=actor,
        attrs={"version": str(version), "retired_at": str(retired_at)},
    )


def legal_hold(
    now: int, actor: str, action: str, record_type: str, record: str, subject_hash: str
) -> AuditEvent:
    """A legal hold ``placed`` or ``released`` on a case (``record`` its reference) or a
    document (``record`` empty: a document is named only by its keyed hash)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECORD_HOLD,
        actor=actor,
        subject_hash=subject_hash,
        attrs={"action": action, "record_type": record_type, "record": record},
    )


def record_reviewed(
    now: int, actor: str, record_type: str, record: str, subject_hash: str
) -> AuditEvent:
    """At its periodic review, an operator decided to keep a record (the reason is kept
    with the review, not in the leaf: free text has no field)."""
    return AuditEvent(
        time=now,
        kind=LeafKind.RECORD_REVIEWED,
        actor=actor,
        subject_hash=subject_hash,
        attrs={"decision": "keep", "record_type": record_type, "record": record},
    )


def subject_report(
    now: int,
    actor: str,
    outcome: str,
    record_type: str,
    subject_hash: str,
    report_sha256: str,
    **attrs: str,
) -> AuditEvent:
    """A subject access report ``issued``, or ``refused`` (``jurisdiction``: under whose
    law), about a case or a document named only by its keyed hash; the SHA-256 of the
    signed file handed out."""
    return AuditEvent(
        time=now,
        kind=LeafKind.SUBJECT_REPORT,
        actor=actor,
        subject_hash=subject_hash,
        attrs={
            "outcome": outcome,
            "record_type": record_type,
            "report_sha256": report_sha256,
            **attrs,
        },
    )


def console_session(now: int, kind: LeafKind, actor: str, why: str) -> AuditEvent:
    """A console session began (``why`` = ``signed_in``) or ended (``signed_out``,
    ``expired``, ``token_revoked``, ``token_expired``) for the token named ``actor``."""
    return AuditEvent(time=now, kind=kind, actor=actor, attrs={"why": why})
