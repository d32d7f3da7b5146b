"""The link's bookkeeping under trio's MockClock: which failures are Telegram's, when it is
down, when it is back, and the probe. No network: aiogram's exceptions are raised by hand
into the request middleware, as the session would."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetMe, GetUpdates, SendMessage

from runtime.bot._telegram_link import TelegramLink, Trouble, telegram_trouble

SEND = SendMessage(chat_id=1, text="hi")


def flood() -> Exception:
    return TelegramRetryAfter(method=SEND, message="Too Many Requests", retry_after=7)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (flood(), Trouble.FLOOD_CONTROL),
        (TelegramServerError(method=SEND, message="Bad Gateway"), Trouble.UNREACHABLE),
        (TelegramNetworkError(method=SEND, message="Request timeout error"), Trouble.UNREACHABLE),
        (ClientDecodeError("Failed to decode object", ValueError(), "<html>"), Trouble.UNREACHABLE),
        (TelegramUnauthorizedError(method=SEND, message="Unauthorized"), Trouble.UNREACHABLE),
        (TelegramEntityTooLarge(method=SEND, message="too large"), None),
        (TelegramBadRequest(method=SEND, message="can't parse entities"), None),
        (TelegramForbiddenError(method=SEND, message="bot was blocked"), None),
        (KeyError("a bug"), None),
    ],
)
def test_which_failures_are_telegrams(exc: Exception, expected: Trouble | None) -> None:
    found = telegram_trouble(exc)
    assert (found.kind if found else None) is expected


def test_the_cause_of_a_wrapper_counts_and_flood_control_says_when() -> None:
    try:
        try:
            raise flood()
        except TelegramRetryAfter as inner:
            raise RuntimeError("while replying") from inner
    except RuntimeError as outer:
        found = telegram_trouble(outer)
    assert found is not None and found.retry_after == 7.0


async def call(link: TelegramLink, method: Any, outcome: Exception | None) -> None:
    async def make_request(bot: Any, method: Any) -> Any:
        if outcome is not None:
            raise outcome
        return "answer"

    try:
        await link(make_request, None, method)  # type: ignore[arg-type]
    except Exception as exc:
        assert exc is outcome


async def test_calls_tell_when_telegram_is_down_and_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = TelegramLink()
    await call(link, SEND, flood())
    assert not link.down  # flood control is Telegram answering
    await call(link, SEND, TelegramServerError(method=SEND, message="Bad Gateway"))
    assert link.down and link.outages == 1 and "Bad Gateway" in (link.reason or "")
    await trio.sleep(12)
    assert link.down_for() == pytest.approx(12)
    await call(link, GetUpdates(), None)
    assert link.down  # long polling answering says nothing about sending
    await call(link, SEND, TelegramBadRequest(method=SEND, message="message is not modified"))
    assert not link.down and link.down_for() == 0
    await call(link, GetMe(), TelegramNetworkError(method=GetMe(), message="timeout"))
    await call(link, GetMe(), None)
    assert link.outages == 2 and not link.down


async def test_a_call_that_hung_through_the_outage_proves_nothing_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = TelegramLink()
    link.unreachable("Bad Gateway")
    started = trio.current_time()
    await trio.sleep(5)
    link.answered()
    link.unreachable("Request timeout error", call_started=started)
    assert not link.down and link.outages == 1
    link.unreachable("Request timeout error", call_started=trio.current_time())
    assert link.down and link.outages == 2


async def test_sleeping_ends_when_telegram_answers_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = TelegramLink()
    start = trio.current_time()
    await link.sleep_unless_back(30)  # up: a plain sleep
    assert trio.current_time() - start == pytest.approx(30)
    link.unreachable("Bad Gateway")
    async with trio.open_nursery() as nursery:

        async def answer_later() -> None:
            await trio.sleep(3)
            link.answered()

        nursery.start_soon(answer_later)
        start = trio.current_time()
        await link.sleep_unless_back(600)
        assert trio.current_time() - start == pytest.approx(3)


async def test_probes_run_on_time_while_down_even_when_they_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = TelegramLink(probe_interval=1.0, probe_timeout=5.0)
    started: list[float] = []
    answering_at = 20.0

    async def probe() -> None:
        started.append(trio.current_time())
        if trio.current_time() < answering_at:
            await trio.sleep_forever()  # a Telegram that takes connections, answers nothing

    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.probe_while_down, probe)
        await trio.sleep(10)
        assert started == []  # up: no probes
        link.unreachable("Request timeout error")
        await link.sleep_unless_back(60)
        assert not link.down
        back_at = trio.current_time()
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert gaps and max(gaps) <= 1.0 + 1e-6  # one a second, hanging ones notwithstanding
    assert answering_at <= back_at <= answering_at + 1.0 + 1e-6
    assert started[-1] <= back_at  # none once it answers
