"""Live work first (delivery/pacing.py): a catch-up step's allowance of waiting."""

from __future__ import annotations

import asyncio

from exchange_node.delivery.pacing import LIVE_SHARE, LiveFirst


async def test_a_pause_with_nothing_live_under_way_is_one_turn_of_the_loop() -> None:
    waits: list[float] = []
    rule = LiveFirst(lambda: False, 60_000, waits.append)
    ran = []
    other = asyncio.get_running_loop().call_soon(ran.append, "other")
    await rule.allowance().pause()
    assert ran == ["other"]  # the loop turned
    assert rule.waited_s == 0 and waits == []
    other.cancel()


async def test_a_pause_lasts_until_the_live_work_is_done() -> None:
    busy = [True]
    rule = LiveFirst(lambda: busy[0], 60_000)
    allowance = rule.allowance()
    asyncio.get_running_loop().call_later(0.05, busy.__setitem__, 0, False)
    await allowance.pause()
    assert not busy[0]
    assert 0.05 <= rule.waited_s < 60
    assert abs(allowance.left_s - (rule.wait_s - rule.waited_s)) < 1e-2


async def test_the_allowance_is_for_all_the_pauses_of_a_step() -> None:
    waits: list[float] = []
    rule = LiveFirst(lambda: True, 30, waits.append, share=1.0)  # live work that never ends
    allowance = rule.allowance()
    await allowance.pause()
    assert allowance.left_s <= 0
    waited = rule.waited_s
    assert waited >= 0.03 and abs(sum(waits) - waited) < 1e-9
    await allowance.pause()  # used up: one turn only
    await allowance.pause()
    assert rule.waited_s == waited
    # The next step has an allowance of its own.
    await rule.allowance().pause()
    assert rule.waited_s >= waited + 0.03


async def test_steps_waiting_at_once_count_their_time_once() -> None:
    busy = [True]
    rule = LiveFirst(lambda: busy[0], 60_000)
    asyncio.get_running_loop().call_later(0.05, busy.__setitem__, 0, False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(rule.allowance().pause() for _ in range(3)))
    assert rule.waited_s <= loop.time() - start  # not three times that


async def test_an_allowance_of_zero_never_waits() -> None:
    rule = LiveFirst(lambda: True, 0)
    await rule.allowance().pause()
    assert rule.waited_s == 0


class Clock:
    """Time that moves only when told: each look at the live work takes 10 ms."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def busy(self) -> bool:
        self.now += 0.01
        return True  # live work that never ends


async def _steps(rule: LiveFirst, clock: Clock, n: int) -> None:
    for _ in range(n):
        await rule.allowance().pause()
        clock.now += 0.05  # the step's own work


async def test_catch_up_steps_wait_at_most_their_share_of_the_time() -> None:
    clock = Clock()
    rule = LiveFirst(clock.busy, 100, clock=clock)  # the default share, a quarter
    await _steps(rule, clock, 100)
    # Each step would wait its whole 100 ms allowance (and did, before the budget):
    # two thirds of the time. The budget holds it to a quarter of the time, plus the
    # one allowance it starts with and the one look that finds it used up.
    assert LIVE_SHARE == 0.25
    assert rule.waited_s <= 0.1 + LIVE_SHARE * clock.now + 0.01
    assert rule.waited_s >= LIVE_SHARE * clock.now - 0.1  # and it does use its share


async def test_without_the_budget_each_step_waits_its_whole_allowance() -> None:
    clock = Clock()
    rule = LiveFirst(clock.busy, 100, clock=clock, share=1.0)  # a budget that never runs out
    await _steps(rule, clock, 100)
    # Its whole allowance, and at most the one look (10 ms) that finds it used up.
    assert 100 * 0.1 <= rule.waited_s <= 100 * 0.11


async def test_the_budget_fills_again_while_no_step_waits() -> None:
    clock = Clock()
    rule = LiveFirst(clock.busy, 100, clock=clock)
    await _steps(rule, clock, 20)
    left = rule.budget_s
    assert left < 0.02  # used up
    clock.now += 0.2  # no step waits: a quarter of that time comes back
    assert abs(rule.budget_s - (left + 0.05)) < 1e-9
    clock.now += 10
    assert rule.budget_s == 0.1  # up to one allowance, no more
