"""Catch-up: a peer that joins receives this node's notices that are still in effect.

When a peer is pinned, or its policy comes to allow a document kind it did not, the
peer gets every notice of THIS node that is still in effect and that its policy allows:
status notices and fraud detections that nothing superseded, and the latest correction
of each chain (never a withdrawal, never a superseded notice, never another node's
notice), oldest first. They go through the normal outbox (``Node.submit_many``): the
same sealing, receipts, retries, FIFO order and ``notice.submitted`` leaves (actor
``catchup``) as any notice.

- **Bodies** are rebuilt from the index row (``documents.body_from_row``): the same
  notice id and content as first sent, with ``catch_up.issued_at_ms`` so the receiver
  orders it by when it was issued (``docs/protocol.md`` 16.8).
- **Cursor**: each peer's catch-up is a row of the store (``catchup``, migration 5) with
  a cursor into the index; a chunk is read from the store, sealed, then queued in one
  transaction (label ``catchup.chunk``) that also moves the cursor. A restart carries on
  after the last chunk committed; a chunk whose transaction did not commit is read
  again. Nothing is held in memory but one chunk. The transaction checks again that each
  notice of the chunk is still in effect: one withdrawn or corrected while the chunk was
  being sealed is left out (its withdrawal or correction went out live, ahead of it).
- **Lanes and pacing**: the rows a chunk queues are marked ``outbox.catchup = 1`` in its
  transaction and go out on the peer's catch-up lane (``delivery/worker.py``), beside the
  live lane: a live notice or case event never waits behind a catch-up batch (a catch-up
  batch does wait for live rows queued before it). A chunk is
  queued only while the catch-up lane holds at most one batch (``[delivery]
  batch_size``), and a chunk is one batch: the next chunk is sealed while the one before
  is on the wire, and no more than about two batches of the catch-up are queued at a
  time, however long it is (live traffic queued for a peer that is down does not hold
  it back).
- Notices indexed after the catch-up began went to the peer live; corrections among them
  are also sent by the catch-up (a live correction of a notice the peer did not have yet
  is refused by it; sent again as caught up, it stands on its own). A live correction
  submitted while the catch-up lane holds queued rows is queued on that lane, behind
  them, so it never overtakes the notice it supersedes.
- **Live work first** (``delivery/pacing.py``): a chunk is read and sealed in turns,
  each waiting for live work under way in the node, within one allowance per chunk
  (``[delivery] catchup_live_wait_ms``); the catch-up lane does the same before each
  batch.

The operator pauses, resumes and restarts a peer's catch-up (``exchange-node peer
catchup``), each with a ``peer.catchup`` leaf; ``exchange-node status`` and the
``exchange_catchup_*`` gauges show its progress.

A peer may ask for a catch-up itself (a ``catch_up_request`` body, ``exchange-node peer
catchup ID request`` at its end): :meth:`CatchUpService.apply` honours it at most once
per ``[delivery] catchup_request_interval_seconds``, restarting the peer's catch-up in
the transaction that stores the request, with a ``peer.catchup`` leaf (actor: the
peer); a request inside the interval is REJECTED with ``policy_denied``, which both
sides' ``envelope.*`` leaves record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from exchange_node.audit import leaves
from exchange_node.domain.documents import FRAUD_KINDS, STATUS_KINDS
from exchange_node.errors import ConflictError
from exchange_node.protocol.errors import OpenError, Reason
from exchange_node.services.documents import body_from_row
from exchange_node.store.records import CatchUpSelection

if TYPE_CHECKING:
    from exchange_node.delivery.receiver import EnvelopeResult
    from exchange_node.protocol.cards import PeerCard
    from exchange_node.protocol.envelope import OpenedEnvelope
    from exchange_node.services.context import ServiceContext
    from exchange_node.store.records import CatchUpRow
    from exchange_node.store.sqlite import SqliteTransaction

log = structlog.get_logger("exchange_node.catchup")

CAUGHT_UP_KINDS = ("correction", "fraud_notice", "status_notice")
"""Policy kinds a catch-up sends (case events are not notices in effect)."""

LABEL = "catchup.chunk"
"""The transaction that queues a chunk and moves the cursor (crash tests kill it)."""

IDLE_POLL_S = 0.2

REQUEST_KIND = "catch_up_request"
"""The body a peer asks for a catch-up with (docs/protocol.md 16.9)."""


def wanted_kinds(policy: Iterable[str]) -> frozenset[str]:
    """The kinds of a policy a catch-up covers."""
    return frozenset(policy) & frozenset(CAUGHT_UP_KINDS)


def selection(kinds: Iterable[str]) -> CatchUpSelection:
    """Which index rows a catch-up of these policy kinds sends."""
    names = frozenset(kinds)
    row_kinds: list[str] = []
    if "status_notice" in names:
        row_kinds += sorted(STATUS_KINDS)
    if "fraud_notice" in names:
        row_kinds += sorted(FRAUD_KINDS)
    return CatchUpSelection(tuple(sorted(names)), tuple(row_kinds), "correction" in names)


def begin(
    tx: SqliteTransaction, peer_id: str, me: str, kinds: Iterable[str], todo: Iterable[str], at: int
) -> CatchUpRow:
    """Start (again) ``peer_id``'s catch-up of ``todo`` inside ``tx``; ``kinds`` become
    the kinds it counts as caught up on. The CLI's restart runs it too."""
    return tx.begin_catchup(peer_id, me, sorted(kinds), selection(todo), at)


OPERATOR_ACTIONS = ("pause", "resume", "restart")
"""What an operator may do to a peer's catch-up (``peer catchup``, the console)."""


def operator_action(
    tx: SqliteTransaction,
    peer_id: str,
    action: str,
    *,
    me: str,
    kinds: Iterable[str],
    actor: str,
    at: int,
) -> CatchUpRow:
    """An operator's ``action`` on ``peer_id``'s catch-up inside ``tx``, with its leaf:
    ``pause`` or ``resume`` it where it is, or ``restart`` it from the first notice of
    ``kinds`` (those the peer's policy allows now). ``NotFoundError(catchup_not_found)``
    when there is none to pause or resume, ``ConflictError(catchup_done)`` when it has
    finished. The command line and the console both call it."""
    if action not in OPERATOR_ACTIONS:
        raise ValueError(f"no catch-up action {action!r}")
    if action == "restart":
        kinds = frozenset(kinds)
        row = begin(tx, peer_id, me, kinds, kinds, at)
        tx.audit(
            [
                leaves.catchup(
                    at,
                    peer_id,
                    "restarted",
                    actor=actor,
                    kinds=reason_kinds(kinds),
                    total=str(row.total),
                )
            ]
        )
        return row
    row = tx.set_catchup_state(peer_id, "paused" if action == "pause" else "running", at)
    tx.audit([leaves.catchup(at, peer_id, f"{action}d", actor=actor)])
    return row


def action_done(peer_id: str, action: str, row: CatchUpRow) -> str:
    """What an operator's ``action`` did, in one line (the command line prints it, the
    console shows it as its note)."""
    if action == "restart":
        return f"catch-up of {peer_id} restarted: {row.total} notice(s) in effect to send"
    return f"catch-up of {peer_id} {action}d at {row.queued} of {row.total} queued"


class CatchUpService:
    def __init__(self, node: ServiceContext) -> None:
        self._node = node
        self._wake = asyncio.Event()
        self._resync = True
        self._stopping = False
        self._task: asyncio.Task | None = None

    @property
    def _batch(self) -> int:
        return self._node.config.delivery.batch_size

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._resync = True
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="catchup")

    async def stop(self) -> None:
        """Let the current step finish (a chunk is queued whole or not at all), then
        end. The flag, not only a cancellation, ends the loop: ``asyncio.wait_for`` on
        Python 3.11 can swallow a cancellation that meets a wake-up."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def peers_changed(self, _changed: frozenset[str]) -> None:
        """A directory listener: pins and policies are looked at again."""
        self._resync = True
        self._wake.set()

    def wake(self, _peer_id: str | None = None) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            busy = False
            try:
                if self._resync:
                    self._resync = False
                    await self.reconcile()
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store refused: try again later
                log.error("catchup.failed", error=str(exc))
            if not busy and not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                except TimeoutError:
                    pass
                self._wake.clear()

    # --- what each peer is owed ----------------------------------------------------------

    async def reconcile(self) -> None:
        """Begin a catch-up for each peer pinned without one, and for each peer whose
        policy now allows kinds it was not caught up on."""
        node = self._node
        store = node.store
        directory = node.directory
        for peer_id in sorted(directory.peers):
            wanted = wanted_kinds(directory.policy(peer_id))
            row = store.catchup(peer_id)
            now = node.now_ms()
            if row is None:
                await self._begin(peer_id, wanted, wanted, "pinned")
            elif row.kinds is None:
                # Pinned before catch-up existed: caught up on what it allows now.
                await store.transaction(
                    lambda tx, p=peer_id, w=wanted, t=now: tx.set_catchup_kinds(p, sorted(w), t),
                    label="catchup.kinds",
                )
            else:
                covered = frozenset(row.kinds)
                gained = wanted - covered
                if gained:
                    todo = gained | (frozenset(row.todo) if row.state != "done" else frozenset())
                    await self._begin(peer_id, covered | gained, todo, "policy")
                elif covered - wanted:
                    await store.transaction(
                        lambda tx, p=peer_id, k=covered & wanted, t=now: tx.set_catchup_kinds(
                            p, sorted(k), t
                        ),
                        label="catchup.kinds",
                    )

    async def _begin(
        self, peer_id: str, kinds: frozenset[str], todo: frozenset[str], why: str
    ) -> None:
        node = self._node
        now = node.now_ms()

        def work(tx: SqliteTransaction) -> CatchUpRow:
            row = begin(tx, peer_id, node.node_id, kinds, todo, now)
            if row.total:
                tx.audit(
                    [
                        leaves.catchup(
                            now,
                            peer_id,
                            "started",
                            kinds=reason_kinds(todo),
                            why=why,
                            total=str(row.total),
                        )
                    ]
                )
            return row

        row = await node.store.transaction(work, label="catchup.begin")
        log.info("catchup.begun", peer=peer_id, why=why, total=row.total, kinds=sorted(todo))
        self._wake.set()

    # --- a peer asking -------------------------------------------------------------------

    def apply(
        self, tx: SqliteTransaction, card: PeerCard, opened: OpenedEnvelope, kind: str, now: int
    ) -> None:
        """Content handler of the receiving transaction: a peer's catch-up request,
        honoured at most once per interval (``OpenError(POLICY_DENIED)`` otherwise)."""
        if kind != REQUEST_KIND:
            return
        node = self._node
        peer = card.node_id
        interval_ms = node.config.delivery.catchup_request_interval_seconds * 1000
        row = tx.catchup(peer)
        if row is not None and row.requested_at is not None:
            since = now - row.requested_at
            if since < interval_ms:
                raise OpenError(
                    Reason.POLICY_DENIED,
                    f"a catch-up was requested {since // 1000} s ago; one is honoured every "
                    f"{interval_ms // 1000} s",
                )
        kinds = wanted_kinds(node.directory.policy(peer))
        started = begin(tx, peer, node.node_id, kinds, kinds, now)
        tx.mark_catchup_requested(peer, now)
        tx.audit(
            [
                leaves.catchup(
                    now,
                    peer,
                    "restarted",
                    actor=peer,
                    why="requested",
                    kinds=reason_kinds(kinds),
                    total=str(started.total),
                )
            ]
        )

    def on_accepted(self, results: Sequence[EnvelopeResult]) -> None:
        """After the commit: a request honoured starts sending at once."""
        if any(r.kind == REQUEST_KIND for r in results):
            self._wake.set()

    # --- sending -------------------------------------------------------------------------

    async def step(self) -> bool:
        """Queue one chunk for each running catch-up whose peer's queue is short. True
        if any was queued."""
        node = self._node
        store = node.store
        queued_any = False
        for row in store.catchups():
            if row.state != "running" or row.peer_id not in node.directory.peers:
                continue
            if store.catchup_queued(row.peer_id) > self._batch:
                continue  # one chunk queued behind the one on the wire is enough
            try:
                await self.queue_chunk(row)
                queued_any = True
            except ConflictError as exc:  # paused or restarted meanwhile: read it again
                log.info("catchup.chunk_dropped", peer=row.peer_id, reason=exc.code)
        return queued_any

    async def queue_chunk(self, row: CatchUpRow) -> None:
        node = self._node
        # Live work first: the chunk is read and sealed in turns, each of which waits
        # for live work under way, within one allowance for the chunk (delivery/pacing.py).
        allowance = node.live_first.allowance()
        await allowance.pause()
        allowed = wanted_kinds(node.directory.policy(row.peer_id))
        todo = selection(frozenset(row.todo) & allowed)
        notices, cursor, done = node.store.catchup_chunk(row, node.node_id, todo, self._batch)
        peer = row.peer_id
        now = node.now_ms()

        def advance(tx: SqliteTransaction, queued) -> None:
            ids = [sub.outbox_id for copies in queued for sub in copies]
            tx.advance_catchup(
                peer,
                started_at=row.started_at,
                from_cursor=row.cursor,
                to_cursor=cursor,
                outbox_ids=ids,
                done=done,
                at=now,
            )
            if done and row.total:
                tx.audit([leaves.catchup(now, peer, "finished", queued=str(row.queued + len(ids)))])

        def still_in_effect(tx: SqliteTransaction) -> list[bool]:
            # Read before sealing, checked again at commit: a notice withdrawn or
            # corrected meanwhile is not sent. Its withdrawal went out live, ahead of
            # this chunk, and the peer would otherwise keep the withdrawn notice. Nor
            # is one purged meanwhile (retention purges a withdrawn chain whole, so
            # nothing supersedes it any more: it is simply gone from the index).
            return [
                tx.notice(n.notice_id) is not None and tx.notice_superseded_by(n.notice_id) is None
                for n in notices
            ]

        if notices:
            await node.submit_many(
                [(body_from_row(n, self._chain(n.supersedes)), [peer]) for n in notices],
                actor="catchup",
                also=advance,
                label=LABEL,
                keep=still_in_effect,
                background=True,  # live notices commit first
                pause=allowance.pause,
            )
        else:
            await node.store.transaction(lambda tx: advance(tx, []), label=LABEL, background=True)
        if done:
            log.info("catchup.finished", peer=peer, queued=row.queued + len(notices))

    def _chain(self, supersedes: str | None) -> list[str]:
        """The ids a correction supersedes, directly or through earlier corrections,
        nearest first."""
        chain: list[str] = []
        while supersedes is not None and len(chain) < MAX_CHAIN and supersedes not in chain:
            chain.append(supersedes)
            row = self._node.store.notice(supersedes)
            supersedes = row.supersedes if row is not None else None
        return chain


MAX_CHAIN = 1000
"""Corrections of corrections followed back at most this far."""


def reason_kinds(kinds: Iterable[str]) -> str:
    """Kinds as one audit attribute value (``+``-separated)."""
    return "+".join(sorted(kinds))
