"""Live work first (delivery/pacing.py): a catch-up step's allowance of waiting."""

from __future__ import annotations

import asyncio

from exchange_node.delivery.pacing import LiveFirst


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
    assert allowance.left_s == rule.wait_s - rule.waited_s


async def test_the_allowance_is_for_all_the_pauses_of_a_step() -> None:
    waits: list[float] = []
    rule = LiveFirst(lambda: True, 30, waits.append)  # live work that never ends
    allowance = rule.allowance()
    await allowance.pause()
    assert allowance.left_s <= 0
    assert rule.waited_s >= 0.03 and waits == [rule.waited_s]
    await allowance.pause()  # used up: one turn only
    await allowance.pause()
    assert len(waits) == 1
    # The next step has an allowance of its own.
    await rule.allowance().pause()
    assert len(waits) == 2


async def test_an_allowance_of_zero_never_waits() -> None:
    rule = LiveFirst(lambda: True, 0)
    await rule.allowance().pause()
    assert rule.waited_s == 0
