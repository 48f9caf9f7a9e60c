"""Per-peer outbox workers: FIFO, one batch in flight, backoff, signed receipts.

One :class:`PeerWorker` per pinned peer owns that peer's queue. It sends the oldest
queued envelopes as one batch, verifies the receipt against exactly what it sent, and
records it (the proof of delivery) in one store transaction. Network errors, 429 and
5xx back off exponentially with jitter up to a cap; a 429 or 503 with ``Retry-After``
sets the delay instead (kept within the same bounds). Waits are measured on the node's
clock.

``wake()`` (start-up, new traffic, a settled receipt) makes an idle worker look at its
queue; it does not cut a backoff short, so a peer that is down gets one attempt per
step of the schedule however much is queued, and new rows go in the next batch.
``wake(reset_backoff=True)`` (the peer seen again, an operator's action on it) ends the
wait at once. Lessons from federation senders elsewhere: queues are woken at start-up,
not only on new traffic, and a single error never parks a queue for long.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol

import structlog

from exchange_node.pb.exchange.v1 import envelope_pb2, types_pb2
from exchange_node.protocol.errors import OpenError, Reason, wire_reason_name
from exchange_node.protocol.receipts import VerifiedReceipt
from exchange_node.store.base import Store
from exchange_node.store.records import OutboxRow, ReceiptRecord
from exchange_node.store.records import Outcome as StoreOutcome

from .receiver import new_batch_id

log = structlog.get_logger("exchange_node.delivery")

# Rejections that a fresh seal can cure: the peer rotated its encryption key, our
# signing key changed under the envelope, or it waited in the queue past the peer's
# freshness window (a long outage). Everything else rejected is permanent.
RESEALABLE = frozenset(
    {
        types_pb2.REASON_EXPIRED,
        types_pb2.REASON_UNKNOWN_RECIPIENT_KEY,
        types_pb2.REASON_SUITE_MISMATCH,
        types_pb2.REASON_KEY_REVOKED,
        types_pb2.REASON_KEY_NOT_VALID,
        types_pb2.REASON_UNKNOWN_KEY,
    }
)
MAX_RESEALS = 3


class DeliveryError(Exception):
    """Sending a batch failed in a way worth retrying."""

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class WorkerHost(Protocol):
    """What a worker needs from the node (implemented by :class:`exchange_node.node.Node`)."""

    node_id: str
    store: Store

    def now_ms(self) -> int: ...

    def is_paused(self, peer_id: str) -> bool: ...

    async def hold_lease(self, peer_id: str) -> bool:
        """Whether this process may deliver the peer's queue now (delivery/leases.py)."""
        ...

    async def post_batch(self, peer_id: str, data: bytes) -> bytes: ...

    def verify_receipt_for(
        self, peer_id: str, signed: bytes, batch_id: bytes, hashes: Sequence[bytes]
    ) -> VerifiedReceipt: ...

    async def reseal(self, peer_id: str, rows: Sequence[OutboxRow]) -> None: ...

    async def refresh_card(self, peer_id: str) -> bool: ...

    def settlement_events(
        self,
        peer_id: str,
        batch_id: bytes,
        rows: Sequence[OutboxRow],
        receipt: VerifiedReceipt,
        now: int,
    ) -> list: ...

    async def after_receipt(
        self, peer_id: str, batch_id: bytes, rows: Sequence[OutboxRow], receipt: VerifiedReceipt
    ) -> None: ...

    def observe_failure(self, peer_id: str, detail: str) -> None: ...


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": a delay in [d/2, d], d doubling to a cap."""

    initial_ms: int
    max_ms: int
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay_s(self) -> float:
        d = min(self.max_ms, self.initial_ms * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(d / 2, d) / 1000

    def reset(self) -> None:
        self.attempt = 0

    def bounded(self, seconds: float) -> float:
        """A delay the peer asked for (``Retry-After``), kept within this schedule's
        bounds: never sooner than ``initial_ms``, never later than ``max_ms``."""
        return min(max(seconds, self.initial_ms / 1000), self.max_ms / 1000)


def retry_after_seconds(value: str | None, now_ms: int) -> float | None:
    """Seconds a ``Retry-After`` header value asks to wait (RFC 9110, 10.2.3): delta
    seconds or an HTTP-date (IMF-fixdate or the two obsolete forms, read as UTC), a date
    in the past being 0. None when there is no value or it is neither."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_ms / 1000)


class PeerWorker:
    def __init__(
        self,
        host: WorkerHost,
        peer_id: str,
        *,
        batch_size: int,
        backoff: Backoff,
        idle_poll_s: float = 1.0,
    ) -> None:
        self.host = host
        self.peer_id = peer_id
        self.batch_size = batch_size
        self.backoff = backoff
        self.idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()  # look at the queue (if not backing off)
        self._resume = asyncio.Event()  # end a backoff now
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.in_flight = False
        self._reseals: dict[int, int] = {}
        self._settling: frozenset[int] = frozenset()
        self._settle_task: asyncio.Task | None = None
        self.log = log.bind(peer=peer_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"outbox:{self.peer_id}")
        self.wake()

    def wake(self, *, reset_backoff: bool = False) -> None:
        """Look at the queue (new traffic, start-up): at once when idle, when the current
        backoff ends otherwise. ``reset_backoff`` (the peer seen again, an operator's
        action) restarts the schedule and ends a backoff now."""
        if reset_backoff:
            self.backoff.reset()
            self._resume.set()
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._resume.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        await self._settled()

    async def _sleep(self, seconds: float | None) -> None:
        """Idle: until woken, or ``seconds``."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _back_off(self, seconds: float) -> None:
        """Wait ``seconds`` on the node's clock, looking at it at least every
        ``idle_poll_s``. Only ``wake(reset_backoff=True)`` or ``stop()`` end it early."""
        delay_ms = round(seconds * 1000)
        retry_at = self.host.now_ms() + delay_ms
        try:
            while not self._stopping and not self._resume.is_set():
                now = self.host.now_ms()
                # A clock set back must not stretch the wait beyond one delay.
                retry_at = min(retry_at, now + delay_ms)
                if now >= retry_at:
                    return
                try:
                    await asyncio.wait_for(
                        self._resume.wait(), timeout=min((retry_at - now) / 1000, self.idle_poll_s)
                    )
                except TimeoutError:
                    pass
        finally:
            self._resume.clear()

    async def run(self) -> None:
        while not self._stopping:
            if self.host.is_paused(self.peer_id):
                await self._sleep(self.idle_poll_s)
                continue
            if not await self.host.hold_lease(self.peer_id):
                # Another process delivers this queue; look again in a while, to take
                # over should it die.
                await self._sleep(self.idle_poll_s)
                continue
            try:
                rows = self._next_rows()
            except Exception as exc:  # the store could not be read: try again later
                self.log.error("outbox.store_failed", error=str(exc))
                await self._back_off(self.backoff.next_delay_s())
                continue
            if not rows:
                await self._sleep(self.idle_poll_s)
                continue
            # Only the peer seen again during this attempt ends the backoff after it.
            self._resume.clear()
            try:
                await self.send(rows)
                self.backoff.reset()
            except DeliveryError as exc:
                delay = self.backoff.next_delay_s()  # the schedule advances either way
                if exc.retry_after_s is not None:
                    delay = self.backoff.bounded(exc.retry_after_s)
                self.log.warning(
                    "outbox.retry_scheduled",
                    error=exc.detail,
                    delay_s=round(delay, 3),
                    retry_after=exc.retry_after_s is not None,
                    queued=len(rows),
                )
                self.host.observe_failure(self.peer_id, exc.detail)
                now = self.host.now_ms()
                try:
                    await self.host.store.record_attempt(
                        self.peer_id, [r.id for r in rows], now, exc.detail
                    )
                    await self.host.store.touch_contact(self.peer_id, now, exc.detail)
                except Exception as store_exc:  # the store is down: keep trying later
                    self.log.error("outbox.store_failed", error=str(store_exc))
                await self._back_off(delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the queue forever
                self.log.exception("outbox.worker_error", error=str(exc))
                await self._back_off(self.backoff.next_delay_s())

    async def send(self, rows: Sequence[OutboxRow]) -> None:
        """Send one batch and record its receipt. DeliveryError if worth retrying."""
        batch_id = new_batch_id(self.host.now_ms())
        hashes = [_sha256(r.envelope) for r in rows]
        data = envelope_pb2.Batch(
            batch_id=batch_id, sender=self.host.node_id, envelopes=[r.envelope for r in rows]
        ).SerializeToString()
        self.in_flight = True
        try:
            signed = await self.host.post_batch(self.peer_id, data)
        finally:
            self.in_flight = False
        try:
            verified = self.host.verify_receipt_for(self.peer_id, signed, batch_id, hashes)
        except OpenError as exc:
            # A peer that just rotated signs with a key we learn from its new card; its
            # announcement may still be behind this receipt. Fetch the card once.
            if exc.reason is not Reason.UNKNOWN_KEY or not await self.host.refresh_card(
                self.peer_id
            ):
                raise DeliveryError(f"receipt refused: {exc.reason.value}: {exc.detail}") from None
            try:
                verified = self.host.verify_receipt_for(self.peer_id, signed, batch_id, hashes)
            except OpenError as again:
                raise DeliveryError(
                    f"receipt refused: {again.reason.value}: {again.detail}"
                ) from None
        outcomes: list[tuple[int, StoreOutcome, str | None]] = []
        reseal: list[OutboxRow] = []
        for row, o in zip(rows, verified.outcomes, strict=True):
            if o.outcome == envelope_pb2.OUTCOME_ACCEPTED:
                outcomes.append((row.id, StoreOutcome.ACCEPTED, None))
            elif o.outcome == envelope_pb2.OUTCOME_DUPLICATE:
                outcomes.append((row.id, StoreOutcome.DUPLICATE, None))
            elif o.reason in RESEALABLE and self._reseals.get(row.id, 0) < MAX_RESEALS:
                self._reseals[row.id] = self._reseals.get(row.id, 0) + 1
                reseal.append(row)
            else:
                outcomes.append((row.id, StoreOutcome.REJECTED, wire_reason_name(o.reason)))
        # The receiver has stored the batch: the next batch may go out while this
        # receipt is recorded (overlapping the two doubles what one peer link can
        # carry). At most one settlement runs at a time; its rows stay out of the
        # next batch until it is done. Should it fail, they are simply still queued
        # and a resend is answered DUPLICATE.
        await self._settled()
        ids = frozenset(r.id for r in rows)
        self._settling |= ids
        self._settle_task = asyncio.create_task(
            self._settle(batch_id, signed, rows, verified, outcomes, reseal, ids),
            name=f"settle:{self.peer_id}",
        )
        if reseal:
            # Re-sealed rows are still the oldest queued: they must go out again before
            # anything younger, so the next batch waits for them (FIFO).
            await self._settled()

    def _next_rows(self) -> list[OutboxRow]:
        """The oldest queued rows not being settled, at most one batch of them."""
        rows = self.host.store.pending(self.peer_id, self.batch_size + len(self._settling))
        return [r for r in rows if r.id not in self._settling][: self.batch_size]

    async def _settled(self) -> None:
        if self._settle_task is not None:
            await asyncio.gather(self._settle_task, return_exceptions=True)
            self._settle_task = None

    async def _settle(
        self,
        batch_id: bytes,
        signed: bytes,
        rows: Sequence[OutboxRow],
        verified: VerifiedReceipt,
        outcomes: list[tuple[int, StoreOutcome, str | None]],
        reseal: list[OutboxRow],
        ids: frozenset[int],
    ) -> None:
        # Each step on its own: a failure in one (say the audit append) must not skip
        # the others, in particular not the re-seal of refused rows.
        steps = [lambda: self._record(batch_id, signed, rows, verified, outcomes)]
        if reseal:
            steps.append(lambda: self.host.reseal(self.peer_id, reseal))
        steps.append(lambda: self.host.after_receipt(self.peer_id, batch_id, rows, verified))
        try:
            for step in steps:
                try:
                    await step()
                except Exception as exc:
                    self.log.exception("outbox.settle_failed", error=str(exc))
        finally:
            self._settling -= ids
            self.wake()

    async def _record(
        self,
        batch_id: bytes,
        signed: bytes,
        rows: Sequence[OutboxRow],
        verified: VerifiedReceipt,
        outcomes: list[tuple[int, StoreOutcome, str | None]],
    ) -> None:
        """The receipt, the outcomes it settles, the contact and the leaves recording
        them: one transaction."""
        now = self.host.now_ms()
        record = ReceiptRecord(batch_id=batch_id, receipt=signed, received_at=now)
        events = self.host.settlement_events(self.peer_id, batch_id, rows, verified, now)

        def work(tx) -> None:
            tx.record_receipt(self.peer_id, record, outcomes)
            tx.touch_contact(self.peer_id, now)
            tx.audit(events)

        await self.host.store.transaction(work, label="receipt.settle", weight=2 * len(rows) + 2)
        for row_id, _, _ in outcomes:
            self._reseals.pop(row_id, None)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
