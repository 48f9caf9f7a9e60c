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
is under way, for at most that long in all, then goes on. Under steady live traffic a
catch-up therefore slows by a bounded amount and is never starved; with the allowance
at 0 it does not wait at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.002
"""How often a paused step looks whether the live work is done."""


class LiveFirst:
    """The node's rule: catch-up steps wait for live work, within an allowance each."""

    def __init__(
        self,
        busy: Callable[[], bool],
        wait_ms: int,
        on_wait: Callable[[float], object] | None = None,
    ) -> None:
        self._busy = busy
        self.wait_s = max(0, wait_ms) / 1000
        self.waited_s = 0.0
        """Seconds catch-up steps have waited in all."""
        self.waiting = 0
        """Catch-up steps waiting now."""
        self._on_wait = on_wait  # the metric ``exchange_catchup_live_wait_seconds_total``

    @property
    def busy(self) -> bool:
        """Whether live work is under way now."""
        return self._busy()

    def waited(self, seconds: float) -> None:
        self.waited_s += seconds
        if self._on_wait is not None:
            self._on_wait(seconds)

    def allowance(self) -> Allowance:
        """The waiting allowance of one catch-up step."""
        return Allowance(self)


class Allowance:
    """What one catch-up step may still wait for live work."""

    def __init__(self, rule: LiveFirst) -> None:
        self._rule = rule
        self.left_s = rule.wait_s

    async def pause(self) -> None:
        """A turn of the event loop; while live work is under way, wait until it is
        done or the allowance is used up."""
        rule = self._rule
        if self.left_s <= 0 or not rule.busy:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self.left_s
        rule.waiting += 1
        try:
            while rule.busy and loop.time() < end:
                await asyncio.sleep(POLL_S)
        finally:
            rule.waiting -= 1
        spent = loop.time() - start
        self.left_s -= spent
        rule.waited(spent)
