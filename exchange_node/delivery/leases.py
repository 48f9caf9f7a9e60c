"""Which process delivers which peer's queue, when several share one database.

Per-peer delivery is FIFO within each of two lanes (live, catch-up), one batch in
flight per lane; one lease covers both. With one process (SQLite) its worker owns the
queue; with several (PostgreSQL) each peer's queue is leased to one of
them: a worker sends only while its process holds the peer's lease
(``store.claim_delivery``: a row per peer with owner and expiry, claimed with ``SELECT
... FOR UPDATE SKIP LOCKED``). A background task renews the held leases every third of
their term, so a batch in flight longer than the term keeps its lease; a process that
dies stops renewing, and another one's worker (polling its idle queue) takes the lease
over once it has expired: within :data:`LEASE_TTL_S` plus one poll.

If a process stalls past its term (a frozen VM) and another takes over while its batch
is still in flight, both may send the same oldest rows: the receiver answers the second
copy DUPLICATE (it de-duplicates by sender and message id) and the first receipt
recorded wins; the order of the queue is the same for both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Protocol

import structlog

log = structlog.get_logger("exchange_node.delivery")

LEASE_TTL_S = 6.0
"""How long a lease lasts without renewal: the longest a dead process's peers wait."""


class LeaseStore(Protocol):
    async def claim_delivery(self, peer_id: str, owner: str, ttl_s: float) -> bool: ...

    async def release_delivery(self, peer_ids: list[str], owner: str) -> None: ...


def process_owner() -> str:
    """This process's name in the lease table: host, pid and a random part (a pid is
    reused after a restart; the random part is not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DeliveryLeases:
    """The peers whose queues this process may deliver now."""

    def __init__(self, store: LeaseStore, ttl_s: float = LEASE_TTL_S) -> None:
        self.store = store
        self.owner = process_owner()
        self.ttl_s = ttl_s
        self._held: dict[str, float] = {}  # peer -> monotonic time the lease was renewed
        self._task: asyncio.Task | None = None

    def holds(self, peer_id: str) -> bool:
        renewed = self._held.get(peer_id)
        return renewed is not None and time.monotonic() - renewed < self.ttl_s

    async def hold(self, peer_id: str) -> bool:
        """Whether this process holds ``peer_id``'s lease, claiming it if it is free or
        expired and renewing it once half its term is gone."""
        renewed = self._held.get(peer_id)
        if renewed is not None and time.monotonic() - renewed < self.ttl_s / 2:
            return True
        return await self._claim(peer_id)

    async def _claim(self, peer_id: str) -> bool:
        started = time.monotonic()
        try:
            ok = await self.store.claim_delivery(peer_id, self.owner, self.ttl_s)
        except Exception as exc:  # the store is down: the lease is as good as lost
            log.warning("outbox.lease_failed", peer=peer_id, error=str(exc))
            ok = False
        had = peer_id in self._held
        if ok:
            self._held[peer_id] = started
            if not had:
                log.info("outbox.lease_taken", peer=peer_id, owner=self.owner)
        elif had:
            del self._held[peer_id]
            log.warning("outbox.lease_lost", peer=peer_id, owner=self.owner)
        return ok

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew(), name="outbox:leases")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            for peer_id in list(self._held):
                await self._claim(peer_id)

    async def stop(self) -> None:
        """Stop renewing and give the leases up, so another process takes over now."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        held, self._held = list(self._held), {}
        try:
            await self.store.release_delivery(held, self.owner)
        except Exception as exc:  # they expire by themselves
            log.warning("outbox.lease_release_failed", error=str(exc))
