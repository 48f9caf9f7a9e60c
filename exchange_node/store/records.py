"""Values that cross the store interface.

Every row the store hands out, and every item it takes in, is one of these frozen
dataclasses: callers never see a database row object, so a second implementation
(PostgreSQL) can return the same types. Times are unix milliseconds (``int``) chosen by
the caller; the store never reads a clock for data it keeps, except where a method says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MESSAGE_ID_LEN = 16
"""Bytes in a message id (random, chosen by the sending node)."""

ENVELOPE_HASH_LEN = 32
"""Bytes in an envelope hash (SHA-256 of the envelope as received)."""

TOKEN_HASH_LEN = 32
"""Bytes in a token's secret hash (SHA-256)."""

TOKEN_ROLES = frozenset({"document_officer", "case_officer", "auditor", "operator"})

TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,64}")
"""What a token may be named (it is the audit actor of everything done with it)."""
"""Roles a local API token may carry."""


class OutboxState(StrEnum):
    """Where an outbox row is in its life. ``queued`` rows are sent in id order."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DEAD = "dead"


class Outcome(StrEnum):
    """Per-envelope answer in a batch receipt (also what ``InboxStore.accept`` decides)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class Lane(StrEnum):
    """The two queues of one peer's outbox, each sent FIFO with its own batch in flight:
    ``live`` (everything submitted: notices, case events, protocol messages) and
    ``catchup`` (rows queued by a catch-up, ``outbox.catchup = 1``). A live batch never
    waits behind a catch-up batch (docs/protocol.md 11.1)."""

    LIVE = "live"
    CATCHUP = "catchup"


# --- outbox ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One envelope to enqueue for one peer.

    ``envelope`` is the sealed bytes as they will be sent. ``payload`` is what the node
    seals from (opaque to the store); it is kept while the row may still need re-sealing
    (queued or dead, e.g. after the peer rotated its encryption key) and erased once the
    row is delivered.
    """

    peer_id: str
    message_id: bytes
    envelope: bytes
    payload: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox row. ``id`` is monotonic and gives the FIFO order within a peer.

    ``payload`` is ``None`` once the row is delivered (erased as no longer needed).
    """

    id: int
    peer_id: str
    message_id: bytes
    envelope: bytes
    payload: bytes | None
    created_at: int
    state: OutboxState
    outcome: Outcome | None
    reason: str | None
    attempts: int
    last_attempt_at: int | None
    last_error: str | None
    delivered_at: int | None
    receipt_id: int | None


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """A signed batch receipt received from a peer, kept as proof of delivery.

    ``receipt`` is the raw signed receipt exactly as received (never re-serialised), so a
    third party can verify it later.
    """

    batch_id: bytes
    receipt: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A receipt as stored: ``id`` is what outbox rows refer to as ``receipt_id``."""

    id: int
    peer_id: str
    batch_id: bytes
    receipt: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """Delivery status of one message to one recipient (no envelope or payload)."""

    outbox_id: int
    peer_id: str
    message_id: bytes
    created_at: int
    state: OutboxState
    outcome: Outcome | None
    reason: str | None
    attempts: int
    last_attempt_at: int | None
    last_error: str | None
    delivered_at: int | None
    receipt_id: int | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One peer's queue at a glance (for status pages, metrics and the weekend-outage story).

    ``oldest_queued_at`` is the ``created_at`` of the row at the head of the queue.
    ``last_contact_at`` is the last successful contact; ``last_error``/``last_error_at``
    the last failed one (cleared by the next success). ``known`` is false for a peer that
    was removed but still has outbox history.
    """

    peer_id: str
    depth: int
    oldest_queued_at: int | None
    dead: int
    delivered: int
    paused: bool
    last_contact_at: int | None
    last_error: str | None
    last_error_at: int | None
    known: bool


# --- inbox ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A verified envelope to store: clear header, body and sender's signature (evidence).

    ``kind`` is a short label the node sets (``document_notice``, ``case_event``...) for
    feed filters; ``envelope_hash`` is the SHA-256 of the envelope as received.
    """

    sender: str
    message_id: bytes
    envelope_hash: bytes
    kind: str
    header: bytes
    body: bytes
    signature: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A stored inbox message. ``cursor`` is monotonic: the feed pages by it."""

    cursor: int
    sender: str
    message_id: bytes
    envelope_hash: bytes
    kind: str
    header: bytes
    body: bytes
    signature: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What ``accept`` decided for one item.

    ACCEPTED: stored now, ``cursor`` is its new cursor. DUPLICATE: seen before with the
    same envelope hash, nothing written, ``cursor`` is the original one (the row itself may
    since have been purged by retention). REJECTED: ``reason`` says why (for instance
    ``message_id_reused``), ``cursor`` is ``None``.
    """

    outcome: Outcome
    cursor: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """How many rows ``purge_before`` deleted, per table."""

    inbox: int
    seen: int
    sent_receipts: int
    idempotency_keys: int = 0


# --- peers, tokens ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A pinned peer. ``card`` is the raw signed node card; ``policy`` the notice kinds
    this node allows to be sent to it."""

    node_id: str
    card: bytes
    fingerprint: str
    added_at: int
    updated_at: int
    paused: bool
    last_contact_at: int | None
    last_error: str | None
    last_error_at: int | None
    policy: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A local API token. Only the SHA-256 of its secret is ever stored."""

    id: int
    name: str
    role: str
    secret_hash: bytes
    created_at: int
    revoked_at: int | None
    # When it stops being accepted (ms); None: never.
    expires_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: int) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session (``exchange_node/console``). The cookie's secret is
    kept only as ``id_hash`` (SHA-256); ``csrf`` is the token every form must carry."""

    id_hash: bytes
    token_id: int
    csrf: str
    created_at: int
    last_seen_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead outbox row with whether (and by whom) an operator acknowledged it."""

    row: OutboxRow
    acknowledged_at: int | None
    acknowledged_by: str | None


# --- operations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of the group-commit writer since the store was opened.

    ``transactions`` counts COMMITs (each one fsync of the WAL under ``synchronous=FULL``),
    ``jobs`` the write calls they carried, ``failed_jobs`` those that raised (rolled back
    alone), ``largest_group`` the most jobs in one transaction, ``queued`` the jobs waiting
    right now. ``write_failure`` is why the database refused the latest write (disk full,
    read-only file system, ...), None once a later write has committed.
    """

    transactions: int
    jobs: int
    failed_jobs: int
    largest_group: int
    queued: int
    write_failure: str | None = None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What an operator checks: where the database is and how it is configured."""

    path: str
    schema_version: int
    sqlite_version: str
    journal_mode: str
    synchronous: str
    page_count: int
    page_size: int
    wal_bytes: int


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """One travel-document notice in the index (``doc_notices``), as the store keeps it;
    the services turn it into their ``IndexedNotice``. ``detection_*`` are all None for
    a status notice or a withdrawal."""

    notice_id: str
    sender_node: str
    sender_country: str
    kind: str
    issuing_state: str
    document_type: str
    number: str
    issued_at_ms: int
    supersedes: str | None
    detection_place: str | None
    detected_at_ms: int | None
    detection_auth: str | None
    effective_at_ms: int
    remarks: str
    reason: str
    message_id: bytes | None


@dataclass(frozen=True, slots=True)
class CatchUpRow:
    """One peer's catch-up (``catchup`` table, migration 5).

    ``state``: ``running``, ``paused`` (by the operator) or ``done``. ``kinds``: the
    notice kinds (policy names) the peer has been caught up on, None for a peer pinned
    before catch-up existed (taken as everything its policy allows). ``todo``: the kinds
    the current run sends. ``cursor``: the last ``doc_notices`` rowid looked at;
    ``high_water``: the last rowid when the run began (notices after it went to the
    peer live; corrections after it are still looked at). ``total``: notices in effect
    the run had to send when it began; ``queued``: how many it has queued so far.
    ``requested_at``: when the peer last asked for a catch-up that was honoured.
    ``paused_ms``: how long the current run has been paused in all, not counting a
    pause under way; ``paused_at``: when the pause under way began (None if running).
    """

    peer_id: str
    state: str
    kinds: tuple[str, ...] | None
    todo: tuple[str, ...]
    cursor: int
    high_water: int
    total: int
    queued: int
    started_at: int
    updated_at: int
    requested_at: int | None = None
    paused_ms: int = 0
    paused_at: int | None = None

    def running_ms(self, now_ms: int) -> int:
        """How long the current run has been running at ``now_ms``: since it began,
        less the time it spent paused (a pause under way included)."""
        paused = self.paused_ms
        if self.state == "paused" and self.paused_at is not None:
            paused += max(0, now_ms - self.paused_at)
        return max(0, now_ms - self.started_at - paused)


@dataclass(frozen=True, slots=True)
class CatchUpSelection:
    """Which notices a catch-up sends (built by ``delivery/catchup.py`` from policy
    kinds): notices of these index ``kinds`` that supersede nothing, and, if
    ``corrections``, the latest correction of each chain. ``names``: the policy kinds."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    corrections: bool


@dataclass(frozen=True, slots=True)
class CatchUpProgress:
    """A catch-up with what became of what it queued: ``pending`` still in the outbox,
    ``delivered`` settled ACCEPTED or DUPLICATE, ``dead`` rejected; ``remaining`` what
    it has still to queue (0 once done)."""

    row: CatchUpRow
    pending: int
    dead: int

    @property
    def delivered(self) -> int:
        return max(0, self.row.queued - self.pending - self.dead)

    @property
    def remaining(self) -> int:
        return 0 if self.row.state == "done" else max(0, self.row.total - self.row.queued)

    def eta_s(self, now_ms: int) -> float | None:
        """Seconds until everything is delivered, at the rate delivered while the run
        was running (time paused left out): 0 once nothing is left; None while paused
        or before the first receipt."""
        left = self.remaining + self.pending
        if left == 0:
            return 0.0
        elapsed_s = self.row.running_ms(now_ms) / 1000
        if self.row.state == "paused" or self.delivered == 0 or elapsed_s <= 0:
            return None
        return left * elapsed_s / self.delivered


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A repatriation case as stored: ``participants`` is JSON (node id and role each),
    ``personal`` the at-rest ciphertext of the personal data (None if none was given)."""

    case_ref: str
    opened_by: str
    participants: str
    personal: bytes | None
    opened_at: int


@dataclass(frozen=True, slots=True)
class CaseEventRow:
    """One step of a case as stored: ``note`` is at-rest ciphertext (None if empty);
    ``message_ids`` JSON (recipient -> message id hex for own steps, ``_received`` for a
    peer's)."""

    case_ref: str
    sequence: int
    event_id: bytes
    kind: str
    actor: str
    actor_role: str
    at_ms: int
    note: bytes | None
    performed_by: str
    message_ids: str
    recorded_at: int


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A local API request made with an ``Idempotency-Key`` and the answer it got.

    Written in the transaction of the submission it answers, so the two exist together
    or not at all. ``token_id`` scopes the key (another token's same key is another
    record); ``request_hash`` is the SHA-256 of the method, path and canonical body;
    ``response`` the JSON body answered with ``status``.
    """

    token_id: int
    key: str
    request_hash: bytes
    method: str
    path: str
    status: int
    response: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class WitnessLogRow:
    """As a witness: the latest checkpoint cosigned for log ``origin`` (``note`` with
    this node's cosignature), of pinned peer ``log_peer`` ("" for a configured log)."""

    origin: str
    log_peer: str
    tree_size: int
    root: bytes
    note: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class CosignatureRow:
    """A witness's cosignature on this node's checkpoint of ``tree_size``: the note
    line, the witness's key name and key ID, its timestamp (POSIX seconds)."""

    tree_size: int
    witness: str
    key_id: bytes
    timestamp: int
    line: str
    received_at: int


# --- data protection (store migration 7; exchange_node/record_keys.py) ----------------------


@dataclass(frozen=True, slots=True)
class KekVersionRow:
    """A key-encryption key version: ``retired_at`` once a newer one took over (its data
    keys re-wrapped), ``destroyed_at`` once its file was deleted after the backup
    horizon. The current version is the highest one not retired."""

    version: int
    created_at: int
    retired_at: int | None
    destroyed_at: int | None


@dataclass(frozen=True, slots=True)
class RecordKeyRow:
    """A record's data key, wrapped under KEK ``kek_version``."""

    record_id: str
    kek_version: int
    wrapped: bytes
    created_at: int


PURGE_REASONS = ("retention", "erasure_request", "withdrawn_by_source", "rectified")
"""Why a record's personal content was destroyed (``record.purged`` leaves)."""


@dataclass(frozen=True, slots=True)
class HoldRow:
    """A legal hold: nothing of ``record_id`` is purged while it stands."""

    record_id: str
    reason: str
    placed_by: str
    placed_at: int


@dataclass(frozen=True, slots=True)
class ReviewDue:
    """A record due for its periodic review: ``since`` is when it was stored or last
    kept, ``due_at`` a review period later. For a notice, ``document`` is its
    (issuing state, number)."""

    record_id: str
    record_type: str
    since: int
    due_at: int
    document: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PurgeRow:
    """A record whose personal content was destroyed: what is left of it says so.
    ``notices``: JSON, peer -> message id (hex) of the purge notice sent to it (its
    receipt is the peer's confirmation)."""

    record_id: str
    record_type: str
    reason: str
    approver: str
    purged_at: int
    notices: str = "{}"
