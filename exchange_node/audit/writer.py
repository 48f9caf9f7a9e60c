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

from exchange_node.audit.leaf import AuditEvent
from exchange_node.audit.log import AuditLog
from exchange_node.errors import ConflictError


class AuditWriter:
    """Batches concurrent appends to one :class:`AuditLog`. Use ``async with`` or call
    :meth:`start` and :meth:`close` (which commits what is queued before returning)."""

    def __init__(self, log: AuditLog, max_batch: int = 2000) -> None:
        self._log = log
        self._max_batch = max_batch
        self._queue: list[tuple[AuditEvent, asyncio.Future[int]]] = []
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
        if self._closing or self._task is None:
            raise ConflictError("audit_writer_closed", "the audit writer is not running", None)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Stop accepting appends, commit everything queued, stop the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                events = [e for e, _ in batch]
                try:
                    seqs = await asyncio.to_thread(self._log.append_many, events)
                except Exception as exc:  # every caller in the batch learns of it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for seq, (_, fut) in zip(seqs, batch, strict=True):
                    if not fut.done():
                        fut.set_result(seq)
            if self._closing:
                return
