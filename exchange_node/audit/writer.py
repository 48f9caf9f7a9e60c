"""Group commit for asyncio code: many concurrent appends, one transaction each round.

Every committed append costs one fsync, and a disk allows a few thousand a second. The
writer lets any number of tasks ``await writer.append(event)``: while one batch is being
committed (in a worker thread, so the event loop keeps running) the next batch collects,
and it is committed as one :meth:`AuditLog.append_many`. Each caller resumes only after
its own leaf is durable, with its seq; if the batch fails, every caller in it gets the
exception and none of its leaves is stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

from exchange_node.audit.leaf import AuditEvent
from exchange_node.audit.log import AuditLog
from exchange_node.errors import ConflictError


class AuditWriter:
    """Batches concurrent appends to one :class:`AuditLog`. Use ``async with`` or call
    :meth:`start` and :meth:`close` (which commits what is queued before returning).

    ``executor`` runs the commits (default: asyncio's); the node passes its single audit
    thread so appends, checkpoint signing and peer witnessing never interleave.
    """

    def __init__(
        self,
        log: AuditLog,
        max_batch: int = 2000,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._log = log
        self._max_batch = max_batch
        self._executor = executor
        self._queue: list[tuple[list[AuditEvent], asyncio.Future[range]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> AuditWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def append(self, event: AuditEvent) -> int:
        """Append ``event``; returns its seq once it is committed."""
        return (await self.record(event)).start

    async def record(self, *events: AuditEvent) -> range:
        """Append ``events`` in order, in one transaction; returns their seqs once they
        are committed (durable)."""
        if self._closing or self._task is None:
            raise ConflictError("audit_writer_closed", "the audit writer is not running", None)
        fut: asyncio.Future[range] = asyncio.get_running_loop().create_future()
        if not events:
            fut.set_result(range(0))
            return await fut
        self._queue.append((list(events), fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Stop accepting appends, commit everything queued, stop the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def _take(self) -> list[tuple[list[AuditEvent], asyncio.Future[range]]]:
        """Whole callers' event lists, up to about ``max_batch`` events."""
        taken, n = [], 0
        while self._queue and (not taken or n + len(self._queue[0][0]) <= self._max_batch):
            entry = self._queue.pop(0)
            taken.append(entry)
            n += len(entry[0])
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take()
                events = [e for evs, _ in batch for e in evs]
                try:
                    seqs = await loop.run_in_executor(self._executor, self._log.append_many, events)
                except Exception as exc:  # every caller in the batch learns of it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                first = seqs.start
                for evs, fut in batch:
                    if not fut.done():
                        fut.set_result(range(first, first + len(evs)))
                    first += len(evs)
            if self._closing:
                return
