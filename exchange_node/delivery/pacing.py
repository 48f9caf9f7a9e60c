"""Live work first: a catch-up step waits while live work is in progress in this node.

A catch-up (``services/catchup.py``) is bulk work in the background: sealing a chunk of
notices, sending it as a batch, settling its receipt. On a node whose cores are busy
with it, a live notice waits for a core at every hop. The store's writer already runs
live transactions first (``store/writer.py``); this module keeps the catch-up from
*starting* CPU work while a live notice or case event is on its way: while one is
being submitted, is queued for a peer that is up, is on the wire or has its receipt
settled.

Each catch-up step (a chunk read and sealed, a catch-up batch sent) gets an
:class:`Allowance` of waiting (``[delivery] catchup_live_wait_ms``): it pauses at its
turns while live work is in progress, for at most that long in all, then goes on. Under
steady live traffic a catch-up therefore slows by a bounded amount and is never starved;
with the allowance at 0 it does not wait at all.
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
        self._on_wait = on_wait  # the metric ``exchange_catchup_live_wait_seconds_total``

    @property
    def busy(self) -> bool:
        """Whether live work is in progress now."""
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
        """A turn of the event loop; while live work is in progress, wait until it is
        done or the allowance is used up."""
        rule = self._rule
        if self.left_s <= 0 or not rule.busy:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self.left_s
        while rule.busy and loop.time() < end:
            await asyncio.sleep(POLL_S)
        spent = loop.time() - start
        self.left_s -= spent
        rule.waited(spent)
