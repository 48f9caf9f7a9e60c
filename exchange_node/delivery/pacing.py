"""Live work first: catch-up steps wait while live work is under way in the node.

A catch-up (``services/catchup.py``) is bulk work in the background, at both ends: the
source reads and seals chunks of notices, sends them as batches and records their
receipts; the peer opens and stores them. On a node whose cores are busy with it, a
live notice waits for a core at every hop. The store's writer already runs live
transactions first (``store/writer.py``); this rule keeps a catch-up from *starting*
work while live work is under way: a submission being sealed or committed, a live
lane with work for a peer that is up (queued, on the wire, its receipt being
recorded), a live batch being received. The composition root (``node.py``) says what
counts; the outbox, the workers and the inbound pipeline pause at their catch-up steps.

Each catch-up step (a chunk read, sealed and committed; a catch-up batch sent, or its
receipt recorded; a catch-up batch opened and stored) gets an :class:`Allowance` of
waiting (``[delivery] catchup_live_wait_ms``): it pauses at its turns while live work
is under way, for at most that long in all, then goes on. With the allowance at 0 it
does not wait at all.

The steps of one node share a budget besides: catch-up steps wait at most
``LIVE_SHARE`` of the time, however busy the node is with live work (a token bucket:
it fills at that share of each second, up to one allowance, and empties while any step
waits). So under steady live traffic, waiting stretches a catch-up's running time at
this node by at most 1 / (1 - ``LIVE_SHARE``) (live work's own use of the cores aside),
and it is never starved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_S = 0.002
"""How often a paused step looks whether the live work is done."""

LIVE_SHARE = 0.25
"""At most this share of the time is spent by catch-up steps waiting for live work."""


class LiveFirst:
    """The node's rule: catch-up steps wait for live work, within an allowance each."""

    def __init__(
        self,
        busy: Callable[[], bool],
        wait_ms: int,
        on_wait: Callable[[float], object] | None = None,
        *,
        share: float = LIVE_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._busy = busy
        self.wait_s = max(0, wait_ms) / 1000
        self.waited_s = 0.0
        """Seconds during which catch-up steps waited (steps waiting at once count once)."""
        self.waiting = 0
        """Catch-up steps waiting now."""
        self._on_wait = on_wait  # the metric ``exchange_catchup_live_wait_seconds_total``
        self._share = share
        self._clock = clock
        self._budget_s = self.wait_s  # what the steps may still wait, together
        self._settled_at = clock()

    @property
    def budget_s(self) -> float:
        """Seconds catch-up steps may still wait now, together (see the module)."""
        self._settle()
        return self._budget_s

    def _settle(self) -> None:
        """Bring the budget up to now: it fills at ``share`` of the time elapsed, up to
        one allowance, and empties at the rate of time while any step waits."""
        now = self._clock()
        elapsed, self._settled_at = now - self._settled_at, now
        spent = elapsed if self.waiting else 0.0
        self._budget_s = min(self.wait_s, self._budget_s + elapsed * self._share - spent)
        if spent > 0:
            self.waited_s += spent
            if self._on_wait is not None:
                self._on_wait(spent)

    def _enter(self) -> None:
        self._settle()
        self.waiting += 1

    def _leave(self) -> None:
        self._settle()
        self.waiting -= 1

    @property
    def busy(self) -> bool:
        """Whether live work is under way now."""
        return self._busy()

    def allowance(self) -> Allowance:
        """The waiting allowance of one catch-up step."""
        return Allowance(self)


class Allowance:
    """What one catch-up step may still wait for live work (within the node's budget)."""

    def __init__(self, rule: LiveFirst) -> None:
        self._rule = rule
        self.left_s = rule.wait_s

    async def pause(self) -> None:
        """A turn of the event loop; while live work is under way, wait until it is
        done, or the allowance or the node's budget is used up."""
        rule = self._rule
        if self.left_s <= 0 or not rule.busy or rule.budget_s <= 0:
            await asyncio.sleep(0)
            return
        clock = rule._clock
        start = clock()
        end = start + self.left_s
        rule._enter()
        try:
            while rule.busy and clock() < end and rule.budget_s > 0:
                await asyncio.sleep(POLL_S)
        finally:
            rule._leave()
        self.left_s -= clock() - start
