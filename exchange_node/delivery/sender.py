"""The outbox with its workers: queueing this node's messages and delivering them.

:meth:`Outbox.submit` seals a body to each recipient and queues it with its leaves (and
whatever the caller's operation writes) in one transaction. One
:class:`~exchange_node.delivery.worker.PeerWorker` per pinned peer sends the queue in
FIFO batches, one in flight per lane (live, catch-up); this object is the workers' host: it posts through the
peer client, verifies receipts, re-seals what a peer's key change made unreadable, and
settles each receipt (outcomes, contact and leaves in one transaction), then hands the
receipt's checkpoint to the witness.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from exchange_node.at_rest import AtRest
from exchange_node.audit import leaves
from exchange_node.audit.leaf import AuditEvent
from exchange_node.config import Config
from exchange_node.delivery.client import PeerClient
from exchange_node.delivery.leases import DeliveryLeases
from exchange_node.delivery.outbox import choose_recipients, payload_context, seal_for
from exchange_node.delivery.pacing import LiveFirst
from exchange_node.delivery.worker import Backoff, DeliveryError, PeerWorker
from exchange_node.identity import Identity
from exchange_node.metrics import Metrics
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.peers import PeerDirectory
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.errors import OpenError, wire_reason_name
from exchange_node.protocol.receipts import VerifiedReceipt, outcome_name, verify_receipt
from exchange_node.store.records import OutboxItem, OutboxRow
from exchange_node.store.sqlite import SqliteStore, SqliteTransaction

log = structlog.get_logger("exchange_node.outbox")


@dataclass(frozen=True)
class Submitted:
    peer_id: str
    message_id: bytes
    outbox_id: int


Also = Callable[[SqliteTransaction, list[list["Submitted"]]], object]
"""Writes of the caller's operation, run last in the transaction that queues the
envelopes, given the copies queued per body (so it knows their message ids); raising
refuses it all. It may be run again after a rollback."""

Keep = Callable[[SqliteTransaction], Sequence[bool]]
"""Which bodies are still to be sent, decided first in that transaction (submit_many)."""

SEALS_PER_TURN = 8
"""Bodies sealed between two turns of the event loop. Sealing a 200-notice catch-up
chunk holds the loop for about 40 ms; yielding every 8 lets a live notice through
meanwhile (``bench/catchup.py --notices 30000``: live p50 during a catch-up 103 and
120 ms without, 74 and 77 ms with, catch-up speed unchanged)."""


class Outbox:
    def __init__(
        self,
        *,
        identity: Identity,
        directory: PeerDirectory,
        client: PeerClient,
        store: SqliteStore,
        at_rest: AtRest,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], int],
        witness: Callable[[str, VerifiedReceipt], Awaitable[None]],
        spawn: Callable[[Awaitable[object]], None],
        live_first: LiveFirst,
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._client = client
        self.store = store
        self._at_rest = at_rest
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._witness = witness
        self._spawn = spawn
        self.workers: dict[str, PeerWorker] = {}
        # Several processes on one database: each peer's queue is delivered by one.
        self.leases = DeliveryLeases(store)
        self.running = False
        self.on_settled: list[Callable[[str], None]] = []
        """Called with the peer after each settled receipt (its queue got shorter)."""
        self._submitting = 0  # live submissions being sealed or committed
        self.live_first = live_first
        """Catch-up steps wait for live work (``delivery/pacing.py``)."""

    @property
    def node_id(self) -> str:
        return self._identity.node_id

    def now_ms(self) -> int:
        return self._clock()

    def live_busy(self) -> bool:
        """Whether this node's outbox has live work under way: a submission being
        sealed or committed, or a live lane with work for a peer that is up
        (``PeerWorker.live_busy``)."""
        return self._submitting > 0 or any(w.live_busy for w in self.workers.values())

    # --- submitting ----------------------------------------------------------------------

    async def submit(
        self,
        body: notice_pb2.Body,
        recipients: Sequence[str] | None = None,
        *,
        actor: str = "operator",
        also: Callable[[SqliteTransaction, list[Submitted]], object] | None = None,
        label: str = "notice.submit",
    ) -> list[Submitted]:
        """Seal ``body`` to each recipient (default: every peer whose policy allows its
        kind) and queue it, with its ``notice.submitted`` leaves and whatever ``also``
        writes (given the copies queued, so it knows their message ids), in one
        transaction. Durable when it returns; delivered in the background.

        Raises ``UnknownRecipient`` (a ValueError) naming a peer not pinned,
        ``RecipientNotAllowed`` (a PermissionError) naming one whose policy forbids the
        kind; nothing is queued or written then.
        """
        (submitted,) = await self.submit_many(
            [(body, recipients)],
            actor=actor,
            also=None if also is None else lambda tx, queued: also(tx, queued[0]),
            label=label,
        )
        return submitted

    async def submit_many(
        self,
        bodies: Sequence[tuple[notice_pb2.Body, Sequence[str] | None]],
        *,
        actor: str = "operator",
        also: Also | None = None,
        label: str = "notice.batch",
        keep: Keep | None = None,
        background: bool = False,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> list[list[Submitted]]:
        """:meth:`submit` for several (body, recipients) at once, all in ONE transaction:
        every body is queued with its leaves, or none is. Returns, per body, its copies;
        ``also`` gets the same. The same errors as :meth:`submit`, before anything is
        written.

        ``keep(tx)``, run first in the transaction, says per body whether it is still
        to be sent as the store stands at commit time (a catch-up drops a notice that
        was withdrawn while its chunk was being sealed); a body not kept is neither
        queued nor audited, and has no copies. ``background`` (a catch-up chunk) lets
        other writes commit first (``store/writer.py``) and is not live work
        (``delivery/pacing.py``); ``pause`` (a catch-up step's ``Allowance.pause``) is
        awaited between turns of sealing, instead of a bare turn of the loop, and
        before the transaction."""
        if background:
            return await self._submit_many(bodies, actor, also, label, keep, True, pause)
        self._submitting += 1
        try:
            return await self._submit_many(bodies, actor, also, label, keep, False, pause)
        finally:
            self._submitting -= 1

    async def _submit_many(
        self,
        bodies: Sequence[tuple[notice_pb2.Body, Sequence[str] | None]],
        actor: str,
        also: Also | None,
        label: str,
        keep: Keep | None,
        background: bool,
        pause: Callable[[], Awaitable[None]] | None,
    ) -> list[list[Submitted]]:
        directory = self._directory
        me = self._identity.keys.local
        now = self._clock()
        sealed: list[list[OutboxItem]] = []
        events: list[list[AuditEvent]] = []
        for n, (body, recipients) in enumerate(bodies):
            if n and n % SEALS_PER_TURN == 0:
                # A catch-up chunk or a batch must not hold the loop.
                await (pause() if pause is not None else asyncio.sleep(0))
            kind = body.WhichOneof("content") or ""
            targets = choose_recipients(kind, recipients, directory.peers, directory.policy)
            items = seal_for(
                body.SerializeToString(),
                sender=me,
                keyring=directory.keyring,
                recipients=targets,
                at_rest=self._at_rest,
                now_ms=now,
            )
            sealed.append(items)
            events.append(
                [leaves.notice_submitted(now, actor, i.peer_id, i.message_id, kind) for i in items]
            )
        flat = [i for items in sealed for i in items]

        if pause is not None:
            await pause()  # nor start the transaction while live work is under way

        def work(tx: SqliteTransaction) -> list[list[Submitted]]:
            kept = [True] * len(bodies) if keep is None else list(keep(tx))
            ids = iter(
                tx.enqueue([i for items, k in zip(sealed, kept, strict=True) if k for i in items])
            )
            queued = [[Submitted(i.peer_id, i.message_id, next(ids)) for i in items] if k else []
                      for items, k in zip(sealed, kept, strict=True)]  # fmt: skip
            # A correction must not overtake, on the live lane, the notice it supersedes
            # still queued on the catch-up lane: it goes out behind the catch-up's rows.
            tx.follow_catchup([sub.outbox_id for sub in corrections(bodies, queued)])
            tx.audit([e for evs, k in zip(events, kept, strict=True) if k for e in evs])
            if also is not None:
                also(tx, queued)
            return queued

        queued = await self.store.transaction(
            work, label=label, weight=2 * len(flat) + len(sealed), background=background
        )
        for peer_id in {i.peer_id for i in flat}:
            self.wake(peer_id)
        return queued

    # --- workers -------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self.leases.start()
        self.sync_workers(frozenset())

    def wake(self, peer_id: str, *, reset_backoff: bool = False) -> None:
        worker = self.workers.get(peer_id)
        if worker is not None:
            worker.wake(reset_backoff=reset_backoff)

    def sync_workers(self, changed: frozenset[str]) -> None:
        """One worker per pinned peer (a directory listener). A peer an operator changed
        (resumed, new card, new policy) is retried now, backoff or not."""
        if not self.running:
            return
        peers = self._directory.peers
        for peer_id in list(self.workers):
            if peer_id not in peers:
                self._spawn(self.workers.pop(peer_id).stop())
        delivery = self._config.delivery
        for peer_id in peers:
            worker = self.workers.get(peer_id)
            if worker is None:
                worker = PeerWorker(
                    self,
                    peer_id,
                    batch_size=delivery.batch_size,
                    backoff=Backoff(delivery.backoff_initial_ms, delivery.backoff_max_ms),
                )
                self.workers[peer_id] = worker
                worker.start()
            else:
                worker.wake(reset_backoff=peer_id in changed)

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()
        await self.leases.stop()

    # --- the workers' host (delivery/worker.py WorkerHost) ---------------------------------

    def is_paused(self, peer_id: str) -> bool:
        return self._directory.is_paused(peer_id)

    async def hold_lease(self, peer_id: str) -> bool:
        return await self.leases.hold(peer_id)

    async def post_batch(self, peer_id: str, data: bytes) -> bytes:
        return await self._client.post_batch(peer_id, data)

    def verify_receipt_for(
        self, peer_id: str, signed: bytes, batch_id: bytes, hashes: Sequence[bytes]
    ) -> VerifiedReceipt:
        """Verify a peer's receipt for our batch; a refused receipt is audited (the batch
        stays queued and is sent again)."""
        try:
            return verify_receipt(
                signed,
                keyring=self._directory.keyring,
                receiver=peer_id,
                sender=self.node_id,
                batch_id=batch_id,
                envelope_hashes=hashes,
            )
        except OpenError as exc:
            leaf = leaves.receipt_refused(
                self._clock(), peer_id, batch_id, signed, exc.reason.value
            )
            self._spawn(self.store.append_audit([leaf]))
            raise

    async def refresh_card(self, peer_id: str) -> bool:
        """Fetch the peer's current card; adopt it if it is a rotation signed by a key we
        trust. True if the pinned card changed."""
        try:
            fresh = await self._client.fetch_card(peer_id)
            if verify_card(fresh).serial > self._directory.keyring.require(peer_id).serial:
                await self._directory.accept_rotation(fresh, actor=peer_id)
                return True
        except (DeliveryError, OpenError) as exc:
            log.warning(
                "peer.card_refresh_failed", peer=peer_id, error=str(getattr(exc, "detail", exc))
            )
        return False

    async def reseal(self, peer_id: str, rows: Sequence[OutboxRow]) -> None:
        """The peer refused our seal (it rotated its key, or we did): refresh its card
        when it has a newer one, then seal the same bodies again under the same ids."""
        await self.refresh_card(peer_id)
        card = self._directory.keyring.require(peer_id)
        now = self._clock()
        me = self._identity.keys.local
        for row in rows:
            if row.payload is None:
                continue
            body = self._at_rest.decrypt(row.payload, payload_context(peer_id, row.message_id))
            sealed = seal(body, sender=me, recipient=card, now_ms=now, message_id=row.message_id)
            await self.store.replace_envelope(row.id, sealed.data)
        log.info("outbox.resealed", peer=peer_id, count=len(rows))

    def settlement_events(
        self,
        peer_id: str,
        batch_id: bytes,
        rows: Sequence[OutboxRow],
        receipt: VerifiedReceipt,
        now: int,
    ) -> list[AuditEvent]:
        """The leaves settling ``receipt`` (committed with the outcomes it applies)."""
        settled = [
            (
                row.message_id,
                outcome_name(o.outcome),
                wire_reason_name(o.reason) if o.reason else "",
            )
            for row, o in zip(rows, receipt.outcomes, strict=True)
        ]
        return leaves.settlement(now, self.node_id, peer_id, batch_id, receipt.signed, settled)

    async def after_receipt(
        self, peer_id: str, batch_id: bytes, rows: Sequence[OutboxRow], receipt: VerifiedReceipt
    ) -> None:
        """Count a settled receipt and witness the checkpoint it carries."""
        counts = Counter(
            (outcome_name(o.outcome), wire_reason_name(o.reason) if o.reason else "")
            for o in receipt.outcomes
        )
        for (outcome, reason), n in counts.items():
            self._metrics.sent.labels(peer_id, outcome, reason).inc(n)
        self._metrics.batch_size.labels(peer_id).observe(len(rows))
        for hook in self.on_settled:
            hook(peer_id)
        if receipt.checkpoint:
            await self._witness(peer_id, receipt)

    def observe_failure(self, peer_id: str, detail: str) -> None:
        self._metrics.delivery_errors.labels(peer_id).inc()


def corrections(
    bodies: Sequence[tuple[notice_pb2.Body, Sequence[str] | None]],
    queued: Sequence[Sequence[Submitted]],
) -> list[Submitted]:
    """The copies queued of the corrections among ``bodies``."""
    return [
        sub
        for (body, _), copies in zip(bodies, queued, strict=True)
        if body.WhichOneof("content") == "correction"
        for sub in copies
    ]
