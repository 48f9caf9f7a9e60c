"""The inbound pipeline: one peer's batch in, one signed receipt out.

:meth:`Inbound.receive` opens the envelopes (on the crypto threads when the batch is
large), then in one transaction stores, checks and applies each in order, signs the
receipt over the outcomes and keeps it, and appends every leaf
(``delivery/receiver.py`` has the steps). After the commit it applies the protocol
messages among the accepted envelopes (card rotations, key revocations) and runs the
``on_accepted`` hooks. A batch refused as a whole raises ``BatchRefused``.

A batch of caught-up notices only (``Body.catch_up``) is background work: it is opened
in rounds, each waiting for live batches being received (``delivery/pacing.py``), and
it waits again before its transaction, which the writer runs after live ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import structlog

from exchange_node.audit import leaves
from exchange_node.audit.leaf import AuditEvent
from exchange_node.delivery.receiver import (
    BatchRefused,
    ContentHandler,
    EnvelopeResult,
    ReceiverContext,
    apply_envelopes,
    open_envelopes,
    parse_batch,
    sign_receipt,
)
from exchange_node.identity import Identity
from exchange_node.metrics import Metrics
from exchange_node.pb.exchange.v1 import envelope_pb2
from exchange_node.peers import PeerDirectory
from exchange_node.protocol.cards import announced_card_bytes
from exchange_node.protocol.envelope import Freshness, OpenedEnvelope
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.receipts import outcome_name
from exchange_node.store.sqlite import SqliteStore, SqliteTransaction

from .pacing import Allowance, LiveFirst

log = structlog.get_logger("exchange_node.inbound")

_CRYPTO_CHUNK_MIN = 16  # envelopes; smaller batches are opened inline


class Inbound:
    def __init__(
        self,
        *,
        identity: Identity,
        directory: PeerDirectory,
        store: SqliteStore,
        freshness: Freshness,
        metrics: Metrics,
        clock: Callable[[], int],
        checkpoint: Callable[[], bytes],
        peer_seen: Callable[[str], None],
        spawn: Callable[[Awaitable[object]], None],
        max_concurrent: int,
        live_first: LiveFirst,
        max_per_peer: int | None = None,
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._store = store
        self._freshness = freshness
        self._metrics = metrics
        self._clock = clock
        self._checkpoint = checkpoint
        self._peer_seen = peer_seen
        self._spawn = spawn
        # Check and apply a stored envelope's content inside the receiving transaction
        # (receiver.ContentHandler): the domain's rules for notices and case steps.
        self.content_handlers: list[ContentHandler] = []
        # Run after the receipt is committed (wake long-pollers).
        self.on_accepted: list[Callable[[Sequence[EnvelopeResult]], object]] = []
        self.slots = asyncio.Semaphore(max_concurrent)
        # Slots held per peer (or per remote address on plain HTTP): one peer gets at
        # most ``max_per_peer`` of them, so it cannot lock the others out.
        self.max_per_peer = max_per_peer or max_concurrent
        self.held: Counter[str] = Counter()
        # Opening envelopes is mostly OpenSSL work that releases the GIL: a batch is
        # opened in slices on these threads, one per core.
        self._crypto_threads = max(1, min(4, os.cpu_count() or 1))
        self._crypto_pool = concurrent.futures.ThreadPoolExecutor(
            self._crypto_threads, thread_name_prefix="crypto"
        )
        # Catch-up batches wait for live work (delivery/pacing.py); the live batches
        # being received now (opened, not a catch-up) are this pipeline's part of it.
        self._live_first = live_first
        self.live_batches = 0

    async def receive(self, data: bytes, peer: str | None) -> bytes:
        """Process one batch from ``peer`` (None on plain HTTP); return the signed receipt.

        Raises BatchRefused for a batch refused as a whole.
        """
        now = self._clock()
        batch = parse_batch(data, peer)
        keyring = self._directory.keyring
        if batch.sender not in keyring.peers:
            raise BatchRefused(
                403,
                "unknown_peer",
                "the batch sender is not a pinned peer",
                claimed_sender=_identifier(batch.sender),
            )
        me = self._identity.keys.local
        ctx = ReceiverContext(me, keyring, self._freshness, self._directory.policy)
        allowance = self._live_first.allowance()
        opened = await self._open_all(ctx, batch, now, allowance)
        catch_up = _catch_up(opened)
        if catch_up:
            await allowance.pause()  # nor take the writer while live work is under way
            return await self._store_batch(ctx, batch, opened, now, catch_up=True)
        self.live_batches += 1
        try:
            return await self._store_batch(ctx, batch, opened, now, catch_up=False)
        finally:
            self.live_batches -= 1

    async def _store_batch(
        self,
        ctx: ReceiverContext,
        batch: envelope_pb2.Batch,
        opened: list[EnvelopeResult],
        now: int,
        *,
        catch_up: bool,
    ) -> bytes:
        """Store, check and apply the opened envelopes in one transaction (``catch_up``:
        in the background); then what follows the commit. Returns the signed receipt."""
        me = ctx.me
        card = ctx.keyring.require(batch.sender)
        checkpoint = self._checkpoint()
        handlers = tuple(self.content_handlers)

        def work(tx: SqliteTransaction) -> tuple[list[EnvelopeResult], bytes]:
            # Each envelope in order: stored, checked against what the store holds now
            # and applied (index rows, case rows, their leaves), or refused with nothing
            # left behind; then the receipt and every leaf. One commit, so ACCEPTED in
            # the receipt means stored, applied and audited.
            results = apply_envelopes(tx, card, opened, handlers, now)
            receipt = sign_receipt(
                me=me,
                signing_key=me.signing_key,
                batch=batch,
                results=results,
                now_ms=now,
                checkpoint=checkpoint,
            )
            tx.store_sent_receipt(batch.sender, batch.batch_id, receipt, now)
            tx.audit(self._events(batch, results, receipt, now))
            return results, receipt

        results, receipt = await self._store.transaction(
            work, label="batch.receive", weight=3 * len(opened) + 2, background=catch_up
        )
        accepted = [r for r in results if r.outcome == envelope_pb2.OUTCOME_ACCEPTED]
        for r in accepted:
            await self._apply_protocol_body(batch.sender, r.opened)
        for hook in self.on_accepted:
            res = hook(accepted)
            if asyncio.iscoroutine(res):
                await res
        counts = Counter(
            (outcome_name(r.outcome), r.reason.value if r.reason else "") for r in results
        )
        for (outcome, reason), n in counts.items():
            self._metrics.received.labels(batch.sender, outcome, reason).inc(n)
        self._peer_seen(batch.sender)  # the peer is evidently up
        return receipt

    def admit(self, key: str) -> str | None:
        """Take a slot for ``key``'s batch; release it with :meth:`release`. Returns
        None when taken, else why not: ``peer_limit`` (``key`` holds its share) or
        ``overloaded`` (every slot is held)."""
        if self.held[key] >= self.max_per_peer:
            return "peer_limit"
        if self.slots.locked():
            return "overloaded"
        self.held[key] += 1
        return None

    def release(self, key: str) -> None:
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]

    def audit_refusal(self, peer: str, code: str, attrs: dict[str, str] | None = None) -> None:
        """Audit a batch refused as a whole (oversized, malformed, unknown peer)."""
        leaf = leaves.batch_refused(self._clock(), peer, code, attrs)
        self._spawn(self._store.append_audit([leaf]))

    def close(self) -> None:
        self._crypto_pool.shutdown(wait=True)

    async def _open_all(
        self, ctx: ReceiverContext, batch: envelope_pb2.Batch, now: int, allowance: Allowance
    ) -> list[EnvelopeResult]:
        """Open a batch's envelopes, on the crypto threads when it is worth it.

        A large batch's first envelope is opened here, to see what the batch is. The
        rest of any other batch is opened in one round over the threads; that of a
        catch-up batch in rounds of one slice of ``_CRYPTO_CHUNK_MIN`` per thread, each
        waiting for live work under way (within ``allowance``)."""
        envs = batch.envelopes
        if len(envs) < 2 * _CRYPTO_CHUNK_MIN:
            return open_envelopes(ctx, batch.sender, envs, 0, now)
        opened = open_envelopes(ctx, batch.sender, envs[:1], 0, now)
        if not _catch_up(opened):
            return opened + await self._open_round(ctx, batch, 1, len(envs), now)
        step = self._crypto_threads * _CRYPTO_CHUNK_MIN
        while len(opened) < len(envs):
            await allowance.pause()
            opened += await self._open_round(ctx, batch, len(opened), len(opened) + step, now)
        return opened

    async def _open_round(
        self, ctx: ReceiverContext, batch: envelope_pb2.Batch, start: int, end: int, now: int
    ) -> list[EnvelopeResult]:
        """Envelopes ``start`` to ``end`` (at most) of the batch, split over the threads."""
        envs = batch.envelopes[start:end]
        n = max(1, min(self._crypto_threads, len(envs) // _CRYPTO_CHUNK_MIN))
        size = -(-len(envs) // n)
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._crypto_pool,
                    open_envelopes,
                    ctx,
                    batch.sender,
                    envs[i : i + size],
                    start + i,
                    now,
                )
                for i in range(0, len(envs), size)
            )
        )
        return [r for part in parts for r in part]

    def _events(
        self, batch, results: Sequence[EnvelopeResult], receipt: bytes, now: int
    ) -> list[AuditEvent]:
        events = [
            leaves.envelope_received(
                now,
                batch.sender,
                r.message_id,
                r.envelope_hash,
                outcome_name(r.outcome),
                r.reason.value if r.reason else "",
                r.kind,
            )
            for r in results
        ]
        me = self._identity.node_id
        events.append(leaves.receipt_sent(now, me, batch.sender, batch.batch_id, receipt))
        return events

    async def _apply_protocol_body(self, sender: str, opened: OpenedEnvelope | None) -> None:
        if opened is None:
            return
        kind = opened.body.WhichOneof("content")
        try:
            if kind == "card_announcement":
                signed = announced_card_bytes(opened.body.card_announcement.signed_card)
                await self._directory.accept_rotation(signed, actor=sender)
            elif kind == "revocation_announcement":
                signed = opened.body.revocation_announcement.signed_revocation.SerializeToString()
                await self._directory.accept_revocation(signed, actor=sender)
        except OpenError as exc:
            event = (
                "peer.rotation_refused"
                if kind == "card_announcement"
                else "peer.revocation_refused"
            )
            log.warning(event, peer=sender, reason=exc.reason.value, detail=exc.detail)


def _catch_up(opened: Sequence[EnvelopeResult]) -> bool:
    """True for a batch of notices re-sent by catch-up only: its transaction yields to
    live work (``store/writer.py``), as the sender's catch-up lane yields to its live one."""
    return bool(opened) and all(
        r.opened is not None and r.opened.body.HasField("catch_up") for r in opened
    )


def _identifier(text: str) -> str:
    """``text`` if it is safe to put in an audit leaf as an identifier, else a hash."""
    if re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,64}", text):
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]
