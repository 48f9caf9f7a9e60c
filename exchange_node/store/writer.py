"""Group commit: one thread owns the write connection and commits jobs in batches.

Callers hand a *job* (a function of the connection) to :meth:`GroupCommitWriter.submit`
and await its result. The writer thread takes every job waiting in its queue (up to
``max_group`` rows' worth), runs them in ONE transaction and commits once; only after
COMMIT returns does it resolve the callers' futures. Under load many jobs share one
fsync; when idle a lone job commits at once (no added latency). The jobs an event
loop submits during one turn (the handlers of every request it read at once) are handed
to the thread together at the end of that turn: one wake-up and one group for them, where
handing each over at once woke the thread to commit the first alone.

If a job raises, the group is rolled back, that job's caller gets the exception, and the
other jobs run again together in a new transaction: a failing job takes nothing of the
others with it. If the group as a whole fails (its COMMIT), every job is run again on
its own so each caller gets its own answer. (No SAVEPOINT per job: jobs rarely fail,
and two statements per job, each a release and re-take of the GIL on this thread, cost
more than the rare re-run.) Jobs must therefore
only touch the connection and be safe to run again after a rollback.

Background work yields to the rest. A job submitted with ``background=True`` (a
catch-up chunk, the receipt settling it, the peer's intake of it, a retention sweep)
waits while other jobs are waiting, and a group holds background jobs only or none: a
live notice arriving behind a queued catch-up chunk commits first, in a small group of
its own, instead of waiting for the chunk's transaction. Background work is not starved:
after ``FOREGROUND_RUN`` groups in a row while it waited, one background group runs. The
two kinds keep their own order (FIFO each); nothing orders a background job after a
foreground one submitted later, so only work that needs no such order is background.

The owner may hook the group's start and its last moment before COMMIT
(:meth:`set_group_hooks`): the store appends a group's audit leaves there, once. It may
also hook the moments between groups (:meth:`set_between_groups`), told whether other
jobs are waiting: the SQLite store finishes WAL checkpoints there, when no live job
would wait for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from exchange_node.errors import ExchangeError
from exchange_node.store import faults
from exchange_node.store.base import StoreError
from exchange_node.store.records import WriterStats

T = TypeVar("T")

MAX_TRANSIENT_RETRIES = 5
"""How often a group the database aborted to let another transaction through (a
deadlock between processes sharing a PostgreSQL database) is run again before its jobs
fail."""

DEFAULT_MAX_GROUP = 512
"""Most rows (job weight) committed in one transaction: bounds the transaction's size and
the latency of the jobs in it. Past a few hundred rows a larger group saves no time."""


FOREGROUND_RUN = 4
"""Groups of other jobs committed in a row while background jobs wait, before one
background group: live work goes first, background work still moves."""


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    weight: int = 1
    # False for jobs that must run outside any transaction (checkpoint, pragmas).
    transactional: bool = True
    label: str = ""  # the unit of work, for fault injection (store/faults.py)
    background: bool = False
    result: Any = None
    error: BaseException | None = None


_STOP = object()


@dataclass(slots=True)
class _Counters:
    transactions: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    largest_group: int = 0
    queued: int = 0  # jobs handed over to the writer thread, not yet taken
    write_failure: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class GroupCommitWriter:
    """Owns ``connect()``'s connection on a dedicated thread and serialises all writes.

    ``connect`` is called on the writer thread (SQLite connections stay on the thread that
    made them). Start with :meth:`start`, stop with :meth:`close` (runs everything already
    submitted first).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        name: str = "store-writer",
    ) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._connect = connect
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._counters = _Counters()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._closing = False
        # Jobs submitted during the current turn of each event loop, not yet queued.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self._on_begin: Callable[[], None] = _nothing
        self._before_commit: Callable[[sqlite3.Connection], None] = _nothing_on
        self._between: Callable[[sqlite3.Connection, bool], None] = _nothing_between

    def set_group_hooks(
        self,
        *,
        begin: Callable[[], None],
        before_commit: Callable[[sqlite3.Connection], None],
    ) -> None:
        """``begin`` runs as each group's transaction opens, ``before_commit`` after its
        last job, inside the transaction (an exception there fails the group)."""
        self._on_begin, self._before_commit = begin, before_commit

    def set_between_groups(self, hook: Callable[[sqlite3.Connection, bool], None]) -> None:
        """``hook(conn, waiting)`` runs on the writer thread after each group (or job run
        outside a transaction), outside any transaction; ``waiting`` says whether
        other (not background) jobs are waiting to run. The hook reports its own
        failures: an exception that escapes it fails no job and is dropped."""
        self._between = hook

    def start(self) -> None:
        """Start the thread and open the connection; re-raises a failure to connect."""
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        weight: int = 1,
        transactional: bool = True,
        label: str = "",
        background: bool = False,
    ) -> asyncio.Future[T]:
        """Queue ``fn`` for the writer thread; the future resolves after its COMMIT.

        ``weight`` is roughly how many rows the job writes: a group holds jobs up to
        ``max_group`` weight in total (a heavier job still runs, alone). Non-transactional
        jobs (checkpoint, pragmas) run between groups, outside any transaction.
        Must be called from a running event loop. Raises ``StoreError(store_closed)`` once
        :meth:`close` has begun.
        """
        if self._closing:
            raise StoreError("store_closed", "the store is closed; no more writes accepted")
        loop = asyncio.get_running_loop()
        job = _Job(
            fn=fn,
            loop=loop,
            future=loop.create_future(),
            weight=max(1, weight),
            transactional=transactional,
            label=label,
            background=background and transactional,
        )
        pending = self._pending.get(loop)
        if pending is None:
            # The first job of this turn of the loop: hand over all of the turn's jobs
            # at its end, in one put (one wake-up of this thread, not one per job).
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append(job)
        return job.future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._pending.pop(loop, None)
        if jobs:
            self._put(jobs)

    def _put(self, items: list[Any]) -> None:
        with self._counters.lock:
            self._counters.queued += len(items)
        self._queue.put(items)

    def _took(self, items: list[Any]) -> list[Any]:
        with self._counters.lock:
            self._counters.queued -= len(items)
        return items

    def stats(self) -> WriterStats:
        c = self._counters
        with c.lock:
            return WriterStats(
                transactions=c.transactions,
                jobs=c.jobs,
                failed_jobs=c.failed_jobs,
                largest_group=c.largest_group,
                queued=c.queued + sum(map(len, list(self._pending.values()))),
                write_failure=c.write_failure,
            )

    async def close(self) -> None:
        """Refuse new jobs, finish the queued ones, close the connection, join the thread."""
        if self._closing:
            return
        self._closing = True
        for loop in list(self._pending):  # jobs of this turn first, then the stop
            self._hand_over(loop)
        self._put([_STOP])
        await asyncio.to_thread(self._thread.join)

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        backlog: collections.deque[Any] = collections.deque()  # handed over, not yet run
        background: collections.deque[_Job] = collections.deque()  # the same, yielding
        run = 0  # groups of other jobs committed while background jobs waited
        try:
            while True:
                if not backlog and not background:
                    self._sort(self._took(self._queue.get()), backlog, background)
                self._drain(backlog, background)  # and whatever else was handed over
                if background and (not backlog or run >= FOREGROUND_RUN):
                    run = 0
                    self._run_group(conn, self._take_group(background))
                    self._after(conn, backlog, background)
                    continue
                first = backlog[0]
                if first is _STOP:
                    if background:  # everything submitted before the stop runs first
                        run = FOREGROUND_RUN
                        continue
                    break
                if not first.transactional:
                    self._run_raw(conn, backlog.popleft())
                    self._after(conn, backlog, background)
                    continue
                run = run + 1 if background else 0
                self._run_group(conn, self._take_group(backlog))
                self._after(conn, backlog, background)
        finally:
            conn.close()

    def _after(
        self,
        conn: sqlite3.Connection,
        backlog: collections.deque[Any],
        background: collections.deque[_Job],
    ) -> None:
        self._drain(backlog, background)  # to tell who waits
        waiting = any(item is not _STOP for item in backlog)
        try:
            self._between(conn, waiting)
        except Exception:  # the hook reports its own failures; no job depends on it
            _rollback_quietly(conn)

    def _drain(self, backlog: collections.deque[Any], background: collections.deque[_Job]) -> None:
        """Sort in everything handed over so far, without waiting."""
        while True:
            try:
                self._sort(self._took(self._queue.get_nowait()), backlog, background)
            except queue.Empty:
                return

    @staticmethod
    def _sort(
        items: list[Any], backlog: collections.deque[Any], background: collections.deque[_Job]
    ) -> None:
        for item in items:
            (background if item is not _STOP and item.background else backlog).append(item)

    def _take_group(self, jobs: collections.deque[Any]) -> list[_Job]:
        """The oldest transactional jobs of ``jobs``, up to ``max_group`` weight (the
        first whatever its weight)."""
        first = jobs.popleft()
        group, weight = [first], first.weight
        while jobs and weight < self._max_group:
            job = jobs[0]
            if job is _STOP or not job.transactional or weight + job.weight > self._max_group:
                break
            group.append(jobs.popleft())
            weight += job.weight
        return group

    def _run_raw(self, conn: sqlite3.Connection, job: _Job) -> None:
        try:
            job.result = job.fn(conn)
        except BaseException as exc:
            job.error = _wrap(exc)
        self._resolve([job])

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job], retry: int = 0) -> None:
        current: _Job | None = None  # the job running when something raised
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._on_begin()
            for job in group:
                current = job
                job.result = job.fn(conn)
                if not conn.in_transaction:  # the job ended the group's transaction
                    raise StoreError(
                        "store_job_ended_transaction",
                        "a write job committed or rolled back the group's transaction",
                    )
            current = None
            self._before_commit(conn)
            labels = tuple(job.label for job in group)
            faults.reached(labels, "applied")
            conn.execute("COMMIT")
            faults.reached(labels, "committed")
        except BaseException as exc:
            _rollback_quietly(conn)
            if getattr(exc, "transient", False) and retry < MAX_TRANSIENT_RETRIES:
                for job in group:  # nobody's fault: the same group again
                    job.result, job.error = None, None
                self._run_group(conn, group, retry + 1)
                return
            if len(group) == 1:
                job = group[0]
                job.result = None
                job.error = _wrap(exc)
                self._count(group, exc, committed=False)
                self._resolve(group)
            elif current is not None:
                # That job fails, with what it raised; the others run again, together.
                current.result, current.error = None, _wrap(exc)
                self._count([current], exc, committed=False)
                self._resolve([current])
                rest = [job for job in group if job is not current]
                for job in rest:
                    job.result, job.error = None, None
                self._run_group(conn, rest)
            else:
                for job in group:  # the COMMIT failed: each job alone, for its answer
                    job.result, job.error = None, None
                    self._run_group(conn, [job])
            return
        self._count(group, None, committed=True)
        self._resolve(group)

    def _count(self, group: list[_Job], failure: BaseException | None, *, committed: bool) -> None:
        c = self._counters
        with c.lock:
            c.transactions += 1
            c.jobs += len(group)
            c.failed_jobs += sum(1 for job in group if job.error is not None)
            c.largest_group = max(c.largest_group, len(group))
            # The outcome of the latest write, for readiness: a refusal by the database
            # marks the store unwritable, a clean COMMIT writable again; other errors
            # (a job's own, a bug) say nothing either way.
            if failure is not None and _storage_failure(failure):
                c.write_failure = f"{type(failure).__name__}: {failure}"
            elif committed and failure is None:
                c.write_failure = None

    def _resolve(self, group: list[_Job]) -> None:
        # One wake-up per event loop, not one per job: waking a loop is a system call.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            settled = [(job.future, job.result, job.error) for job in jobs]
            # RuntimeError: the caller's loop is closed, nobody is waiting for these answers.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)


def _nothing() -> None:
    pass


def _nothing_on(_conn: sqlite3.Connection) -> None:
    pass


def _nothing_between(_conn: sqlite3.Connection, _waiting: bool) -> None:
    pass


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _storage_failure(exc: BaseException) -> bool:
    """The database itself refused (disk full, read-only or failing file system, lock
    timeout, corruption), as opposed to a constraint or a misuse by the caller."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError
    )


def _wrap(exc: BaseException) -> BaseException:
    """Keep the node's own errors; turn driver errors into a ``StoreError``."""
    if isinstance(exc, ExchangeError) or not isinstance(exc, sqlite3.Error):
        return exc
    err = StoreError(
        "store_unavailable",
        f"the database refused the write ({type(exc).__name__}: {exc}); "
        "nothing of it was stored, retry later and check disk space and permissions",
    )
    err.__cause__ = exc
    return err
