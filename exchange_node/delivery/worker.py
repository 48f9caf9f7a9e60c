"""Per-peer outbox workers: two FIFO lanes, one batch in flight each, backoff, receipts.

One :class:`PeerWorker` per pinned peer owns that peer's queue, sent as two lanes
(``store.records.Lane``): the **live** lane (everything submitted: notices, case
events, protocol messages) and the **catch-up** lane (the notices a catch-up queued,
``services/catchup.py``). Each lane sends its oldest queued rows as one batch, verifies
the receipt against exactly what it sent, and records it (the proof of delivery) in one
store transaction; the settlement of a lane's batch overlaps that lane's next send. A
live batch never waits for the catch-up lane, so a live notice goes out while a catch-up
batch is on the wire: at most two batches are in flight to one peer (the receiver's
``max_concurrent_batches_per_peer`` is 2), and order is kept within each lane
(docs/protocol.md 11.1). The catch-up lane does wait for live rows queued before its
next rows: live envelopes may overtake caught-up ones, never the reverse (a card
announced after a rotation arrives before notices sealed with the new keys). A live
correction that could overtake the notice it supersedes rides the catch-up lane instead
(``SqliteTransaction.follow_catchup``, at submission). Before each catch-up batch, the
lane waits (once, within an allowance) while live work is under way in the node
(``delivery/pacing.py``; ``live_busy`` is this worker's part of it).

The peer has one backoff schedule, and one lease, for both lanes. Network errors, 429
and 5xx back off exponentially with jitter up to a cap; a 429 or 503 with
``Retry-After`` sets the delay instead (kept within the same bounds). Waits are measured
on the node's clock. While the peer is down the lanes take turns: one attempt per step
of the schedule, whichever lane makes it, and both send again once one succeeds.

``wake()`` (start-up, new traffic, a settled receipt) makes an idle lane look at its
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
from exchange_node.store.records import Lane, OutboxRow, ReceiptRecord
from exchange_node.store.records import Outcome as StoreOutcome

from .pacing import LiveFirst
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
    live_first: LiveFirst
    """Before a catch-up batch, and before recording its receipt, the lane waits for
    live work under way in the node (``delivery/pacing.py``)."""

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


@dataclass(eq=False)
class _LaneState:
    """One lane of a peer's queue: its wake-up, the batch it has on the wire and the
    settlement whose rows stay out of its next batch."""

    lane: Lane
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    in_flight: bool = False
    settling: frozenset[int] = frozenset()
    settle_task: asyncio.Task | None = None


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
        self.lanes = {lane: _LaneState(lane) for lane in Lane}
        self._resume = asyncio.Event()  # end a backoff now
        # The peer is down (or the store failed) until an attempt succeeds: the lanes
        # take turns (``_turn``), each waiting for ``_retry_at`` (node clock, ms).
        self._down = False
        self._retry_at = 0
        self._delay_ms = 0
        self._resets = 0  # wake(reset_backoff=True) so far
        self._turn = asyncio.Lock()
        self._stopping = False
        self._reseals: dict[int, int] = {}
        self.log = log.bind(peer=peer_id)

    @property
    def in_flight(self) -> bool:
        """Whether a batch of either lane is on the wire."""
        return any(s.in_flight for s in self.lanes.values())

    @property
    def live_busy(self) -> bool:
        """Whether the live lane has work under way for a peer that is up: a batch on
        the wire or being settled, or a wake-up it has not looked at yet (rows just
        queued). Catch-up steps wait for it (``delivery/pacing.py``)."""
        state = self.lanes[Lane.LIVE]
        if self._down or self._stopping:
            return False
        return state.in_flight or bool(state.settling) or state.wake.is_set()

    def start(self) -> None:
        for state in self.lanes.values():
            state.task = asyncio.create_task(
                self.run(state), name=f"outbox:{self.peer_id}:{state.lane}"
            )
        self.wake()

    def wake(self, *, reset_backoff: bool = False) -> None:
        """Look at the queue (new traffic, start-up): at once when idle, when the current
        backoff ends otherwise. ``reset_backoff`` (the peer seen again, an operator's
        action) restarts the schedule and ends a backoff now, for both lanes."""
        if reset_backoff:
            self.backoff.reset()
            self._resets += 1
            self._retry_at = self.host.now_ms()
            self._resume.set()
        for state in self.lanes.values():
            state.wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._resume.set()
        for state in self.lanes.values():
            state.wake.set()
        tasks = [s.task for s in self.lanes.values() if s.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for state in self.lanes.values():
            await self._settled(state)

    async def _sleep(self, state: _LaneState, seconds: float | None) -> None:
        """Idle: until this lane is woken, or ``seconds``."""
        try:
            await asyncio.wait_for(state.wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        state.wake.clear()

    def _fail(self, delay_s: float) -> None:
        """The peer (or the store) failed: no attempt before ``delay_s`` from now."""
        self._down = True
        self._delay_ms = round(delay_s * 1000)
        self._retry_at = self.host.now_ms() + self._delay_ms

    async def _until_retry(self) -> None:
        """Wait for ``_retry_at`` on the node's clock, looking at it at least every
        ``idle_poll_s``. Only ``wake(reset_backoff=True)``, ``stop()`` or the other
        lane's batch getting through end it early."""
        while not self._stopping and self._down:
            now = self.host.now_ms()
            # A clock set back must not stretch the wait beyond one delay.
            self._retry_at = min(self._retry_at, now + self._delay_ms)
            if now >= self._retry_at:
                return
            self._resume.clear()
            try:
                await asyncio.wait_for(
                    self._resume.wait(),
                    timeout=min((self._retry_at - now) / 1000, self.idle_poll_s),
                )
            except TimeoutError:
                pass

    async def run(self, state: _LaneState) -> None:
        """One lane's loop: its next batch whenever it has rows, the peer is not paused
        and this process holds the peer's lease."""
        yielded = False  # the catch-up lane's next batch has waited for live work
        while not self._stopping:
            if self.host.is_paused(self.peer_id):
                await self._sleep(state, self.idle_poll_s)
                continue
            if not await self.host.hold_lease(self.peer_id):
                # Another process delivers this queue; look again in a while, to take
                # over should it die.
                await self._sleep(state, self.idle_poll_s)
                continue
            rows = self._read(state)
            if rows is None:  # the store failed: wait as for a peer that is down
                async with self._turn:
                    await self._until_retry()
                continue
            if not rows:
                await self._sleep(state, self.idle_poll_s)
                continue
            if not self._down:
                if state.lane is Lane.CATCHUP and not yielded and self.host.live_first.busy:
                    # Live work first: wait for it (once per batch, within an
                    # allowance), then read again: live rows queued meanwhile may now
                    # have to go first.
                    await self.host.live_first.allowance().pause()
                    yielded = True
                    continue
                yielded = False
                await self._attempt(state, rows)
                continue
            # The peer is down: one attempt per step of the schedule, by either lane.
            async with self._turn:
                await self._until_retry()
                if self._stopping or not await self._may_send():
                    continue
                rows = self._read(state)  # what was queued meanwhile goes along
                if rows:
                    await self._attempt(state, rows)

    async def _may_send(self) -> bool:
        return not self.host.is_paused(self.peer_id) and await self.host.hold_lease(self.peer_id)

    def _read(self, state: _LaneState) -> list[OutboxRow] | None:
        """The lane's next batch; None if the store could not be read (then backing off)."""
        try:
            return self._next_rows(state)
        except Exception as exc:  # the store could not be read: try again later
            self.log.error("outbox.store_failed", error=str(exc))
            self._fail(self.backoff.next_delay_s())
            return None

    async def _attempt(self, state: _LaneState, rows: Sequence[OutboxRow]) -> None:
        """Send one batch of the lane and record how it went."""
        was_down, resets = self._down, self._resets
        try:
            await self.send(state, rows)
            self.backoff.reset()
            if self._down:
                self._down = False
                self._resume.set()  # the other lane need not wait any longer
        except DeliveryError as exc:
            if was_down or not self._down:
                # This attempt is the schedule's step. (Had the other lane's batch, sent
                # while the peer was still up, failed first, that was the step of both.)
                delay = self.backoff.next_delay_s()  # the schedule advances either way
                if exc.retry_after_s is not None:
                    delay = self.backoff.bounded(exc.retry_after_s)
                # Only the peer seen again during this attempt ends the wait after it.
                self._fail(0 if self._resets != resets else delay)
            self.log.warning(
                "outbox.retry_scheduled",
                error=exc.detail,
                lane=state.lane.value,
                delay_s=round(self._delay_ms / 1000, 3),
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
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the queue forever
            self.log.exception("outbox.worker_error", error=str(exc))
            self._fail(self.backoff.next_delay_s())

    async def send(self, state: _LaneState, rows: Sequence[OutboxRow]) -> None:
        """Send one batch of the lane and record its receipt. DeliveryError if worth
        retrying."""
        batch_id = new_batch_id(self.host.now_ms())
        hashes = [_sha256(r.envelope) for r in rows]
        data = envelope_pb2.Batch(
            batch_id=batch_id, sender=self.host.node_id, envelopes=[r.envelope for r in rows]
        ).SerializeToString()
        state.in_flight = True
        try:
            signed = await self.host.post_batch(self.peer_id, data)
        finally:
            state.in_flight = False
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
        # The receiver has stored the batch: the lane's next batch may go out while
        # this receipt is recorded (overlapping the two doubles what one peer link can
        # carry). At most one settlement per lane runs at a time; its rows stay out of
        # the lane's next batch until it is done. Should it fail, they are simply still
        # queued and a resend is answered DUPLICATE.
        await self._settled(state)
        ids = frozenset(r.id for r in rows)
        state.settling |= ids
        state.settle_task = asyncio.create_task(
            self._settle(state, batch_id, signed, rows, verified, outcomes, reseal, ids),
            name=f"settle:{self.peer_id}:{state.lane}",
        )
        if reseal:
            # Re-sealed rows are still the lane's oldest queued: they must go out again
            # before anything younger of the lane, so its next batch waits (FIFO).
            await self._settled(state)

    def _next_rows(self, state: _LaneState) -> list[OutboxRow]:
        """The lane's oldest queued rows not being settled, at most one batch of them.
        Nothing for the catch-up lane while a live row queued before them is not settled:
        live envelopes may overtake caught-up ones, never the reverse (a card announced
        live must reach the peer before notices sealed with its keys)."""
        store = self.host.store
        rows = store.pending(self.peer_id, self.batch_size + len(state.settling), state.lane)
        rows = [r for r in rows if r.id not in state.settling][: self.batch_size]
        if rows and state.lane is Lane.CATCHUP:
            live = store.pending(self.peer_id, 1, Lane.LIVE)
            if live and live[0].id < rows[0].id:
                return []
        return rows

    async def _settled(self, state: _LaneState) -> None:
        if state.settle_task is not None:
            await asyncio.gather(state.settle_task, return_exceptions=True)
            state.settle_task = None

    async def _settle(
        self,
        state: _LaneState,
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
        steps = [
            lambda: self._record(
                batch_id, signed, rows, verified, outcomes, background=state.lane is Lane.CATCHUP
            )
        ]
        if reseal:
            steps.append(lambda: self.host.reseal(self.peer_id, reseal))
        steps.append(lambda: self.host.after_receipt(self.peer_id, batch_id, rows, verified))
        try:
            if state.lane is Lane.CATCHUP:
                # Live receipts are recorded first.
                await self.host.live_first.allowance().pause()
            for step in steps:
                try:
                    await step()
                except Exception as exc:
                    self.log.exception("outbox.settle_failed", error=str(exc))
        finally:
            state.settling -= ids
            # A live settlement wakes both lanes (the catch-up lane waits for live rows
            # queued before its own); a catch-up one only its own lane, as waking the
            # live lane for nothing would count as live work under way (pacing.py).
            if state.lane is Lane.LIVE:
                self.wake()
            else:
                state.wake.set()

    async def _record(
        self,
        batch_id: bytes,
        signed: bytes,
        rows: Sequence[OutboxRow],
        verified: VerifiedReceipt,
        outcomes: list[tuple[int, StoreOutcome, str | None]],
        *,
        background: bool = False,
    ) -> None:
        """The receipt, the outcomes it settles, the contact and the leaves recording
        them: one transaction (``background`` for a catch-up batch's: live work commits
        first)."""
        now = self.host.now_ms()
        record = ReceiptRecord(batch_id=batch_id, receipt=signed, received_at=now)
        events = self.host.settlement_events(self.peer_id, batch_id, rows, verified, now)

        def work(tx) -> None:
            tx.record_receipt(self.peer_id, record, outcomes)
            tx.touch_contact(self.peer_id, now)
            tx.audit(events)

        await self.host.store.transaction(
            work, label="receipt.settle", weight=2 * len(rows) + 2, background=background
        )
        for row_id, _, _ in outcomes:
            self._reseals.pop(row_id, None)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
