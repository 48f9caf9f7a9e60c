"""Readiness: can this node still keep what it promises to keep?

A node whose store cannot commit refuses every submission and every batch, and records
nothing in its audit log (leaves commit with the changes they record); one whose audit
log cannot sign or keep checkpoints cannot prove what it did. Either must not look
ready. The store's writer and the audit log's own connection (checkpoints, witnessed
peer checkpoints) each remember how their latest write transaction ended
(set by the write itself: a failure the database reports marks it unwritable, a later
commit writable again), so the hot paths do nothing more than set that flag. Every
:data:`PROBE_INTERVAL_S` seconds :meth:`WriteHealth.probe` also commits one small write
to each database (no audit leaf), so a failure, and a recovery, is noticed while no
traffic writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from exchange_node.audit.log import AuditLog
from exchange_node.metrics import Metrics
from exchange_node.store.base import Store

log = structlog.get_logger("exchange_node.health")

PROBE_INTERVAL_S = 5.0
STORE_UNWRITABLE = "store_unwritable"
AUDIT_UNWRITABLE = "audit_unwritable"


@dataclass(frozen=True)
class Unready:
    """Why the node is not ready: a stable ``code`` and what an operator can do."""

    code: str
    detail: str


class WriteHealth:
    """Whether the store and the audit log accept writes; the periodic probe."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        audit_executor: concurrent.futures.Executor,
        clock: Callable[[], int],
    ) -> None:
        self.store = store
        self.audit = audit
        self._audit_executor = audit_executor
        self._clock = clock

    def reasons(self) -> list[Unready]:
        """Empty when both databases took their latest write; else one entry each."""
        found = []
        failure = self.store.writer_stats().write_failure
        if failure is not None:
            found.append(
                Unready(
                    STORE_UNWRITABLE,
                    f"the store ({self.store.path}) refused its latest write ({failure}):"
                    f" {self._what_to_check()}; the node is ready again as soon as a write"
                    " succeeds",
                )
            )
        failure = self.audit.write_failure
        if failure is not None:
            found.append(
                Unready(
                    AUDIT_UNWRITABLE,
                    f"the audit log (in {self.store.path}) refused its latest checkpoint write"
                    f" ({failure}): {self._what_to_check()}; the node is ready again as soon"
                    " as one succeeds",
                )
            )
        return found

    def _what_to_check(self) -> str:
        if self.store.path.startswith("postgres"):
            return (
                "check that the PostgreSQL server is up, reachable and accepting writes"
                " (not a read-only standby), and its free disk space"
            )
        return "check free disk space, permissions and the file system of the data directory"

    def export(self, metrics: Metrics) -> None:
        """Back ``exchange_store_writable`` and ``exchange_audit_writable`` (1 or 0)."""
        metrics.store_writable.set_function(
            lambda: 0.0 if self.store.writer_stats().write_failure else 1.0
        )
        metrics.audit_writable.set_function(lambda: 0.0 if self.audit.write_failure else 1.0)

    async def probe(self) -> None:
        """Commit one probe write to each database. A failure is logged here and
        recorded by the database layer like any other write's."""
        now = self._clock()
        try:
            await self.store.set_meta("write_probe", str(now).encode())
        except Exception as exc:
            log.warning("store.write_probe_failed", error=str(exc))
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._audit_executor, self.audit.probe_write, now
            )
        except Exception as exc:
            log.warning("audit.write_probe_failed", error=str(exc))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            await self.probe()
