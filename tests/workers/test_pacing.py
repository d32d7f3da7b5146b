"""The notifier's pacing, on trio's MockClock: a token bucket that never sends faster than
its rate, catches up after a stall only as far as the bucket holds, and gives nothing up."""

from __future__ import annotations

import math

import trio
import trio.testing

from runtime.workers._pacing import ChatSpacing, Pacer


def never_faster(starts: list[float], pacer: Pacer) -> None:
    """In every span between two starts, at most ``capacity + span * refill`` sends."""
    ordered = sorted(starts)
    for i, first in enumerate(ordered):
        for j in range(i, len(ordered)):
            span = ordered[j] - first
            assert j - i + 1 <= pacer.capacity + span * pacer.refill + 1e-6, (i, j, span)
            assert j - i + 1 <= pacer.capacity + span * pacer.rate + 1e-6


async def send_all(pacer: Pacer, count: int, tasks: int, starts: list[float]) -> None:
    remaining = iter(range(count))

    async def sender() -> None:
        for _ in remaining:
            assert await pacer.slot()
            starts.append(trio.current_time())
            await trio.sleep(0.003)  # the request itself, after its start

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(sender)


async def test_sends_start_no_faster_than_the_rate_and_lose_no_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(50.0)
    starts: list[float] = []
    began = trio.current_time()
    await send_all(pacer, 300, 20, starts)
    assert len(starts) == 300
    never_faster(starts, pacer)
    took = max(starts) - began
    assert took <= 299 / pacer.refill + 1e-6  # every token used the moment it came
    assert took >= (300 - pacer.capacity) / pacer.refill - 1e-6


async def test_a_starved_process_sends_slower_never_faster_and_catches_up_in_the_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(100.0)
    starts: list[float] = []
    stalls: list[float] = []

    async def hog() -> None:
        """Blocks the whole process now and then, as a busy machine does: no task runs
        until it is over, and every timer that came due meanwhile fires late together."""
        for _ in range(8):
            await trio.sleep(0.37)
            autojump_clock.jump(0.25)  # no checkpoint: nothing else runs meanwhile
            stalls.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hog)
        await send_all(pacer, 600, 30, starts)
        nursery.cancel_scope.cancel()
    assert len(starts) == 600  # nothing given up
    never_faster(starts, pacer)
    assert stalls
    for stall in stalls:  # after each stall, what the bucket saved goes out at once
        burst = [t for t in starts if stall <= t < stall + 1e-9]
        if burst:
            assert len(burst) <= pacer.capacity
    caught_up = [s for s in stalls if sum(s <= t < s + 1e-9 for t in starts) == pacer.capacity]
    assert caught_up, "no stall was followed by a catch-up from the bucket"


async def test_a_pause_holds_every_send_and_the_bucket_starts_empty_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(20.0)
    for _ in range(3):
        assert await pacer.slot()
    pacer.pause(2.0)
    resumed = pacer.paused_until
    assert pacer.paused
    starts: list[float] = []
    await send_all(pacer, 10, 5, starts)
    assert min(starts) >= resumed + 1 / pacer.refill - 1e-9
    never_faster(starts, pacer)


async def test_a_slot_past_the_deadline_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(10.0)
    now = trio.current_time()
    pacer.pause(5.0)
    assert not await pacer.slot(deadline=now + 1.0)
    assert trio.current_time() == now  # refused without waiting
    assert await pacer.slot(deadline=math.inf)
    assert trio.current_time() >= now + 5.0


async def test_a_chat_gets_a_short_burst_then_one_message_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spacing = ChatSpacing(1.0, burst=3)
    starts: list[float] = []
    for _ in range(7):
        await trio.sleep_until(spacing.ready_at(42))
        starts.append(trio.current_time())
        spacing.sent(42)
    began = starts[0]
    assert [round(t - began, 6) for t in starts] == [0, 0, 0, 1, 2, 3, 4]
    assert spacing.ready_at(7) == -math.inf  # another chat is not held up
    await trio.sleep(10)
    spacing.forget_old()
    assert spacing.ready_at(42) == -math.inf
