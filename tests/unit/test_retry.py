"""retry_transient under trio's MockClock: backoff sleeps are virtual, tests take milliseconds.

Every test takes the ``autojump_clock`` fixture: with it, pytest-trio runs the test on a
``MockClock(autojump_threshold=0)``, so stamina's ``trio.sleep`` jumps instead of waiting.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from itertools import pairwise
from typing import Any

import pytest
import stamina
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from runtime.failures import DependencyError, DomainError, InfraError, retry_transient


class Flaky:
    """Fails with the given exceptions in turn, then returns ``"ok"``; records call times."""

    def __init__(self, *failures: BaseException, forever: BaseException | None = None) -> None:
        self.failures = list(failures)
        self.forever = forever
        self.times: list[float] = []

    @property
    def calls(self) -> int:
        return len(self.times)

    async def __call__(self) -> str:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.failures:
            raise self.failures.pop(0)
        if self.forever is not None:
            raise self.forever
        return "ok"


def retrying_events(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "attempt failed, retrying"]


async def test_transient_failures_are_retried_then_succeed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(ConnectionResetError(), DependencyError("panel 503"))
    result = await retry_transient(attempts=3)(flaky)()
    assert result == "ok"
    assert flaky.calls == 3
    assert trio.current_time() > 0  # it did back off, on the virtual clock


@pytest.mark.parametrize(
    "error",
    [
        DomainError("no such plan"),
        ValueError("bug"),
        DependencyError("bad api key", transient=False),
        InfraError("disk full", transient=False),
    ],
    ids=repr,
)
async def test_non_transient_failures_are_not_retried(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    flaky = Flaky(forever=error)
    with pytest.raises(type(error)) as caught:
        await retry_transient(attempts=5)(flaky)()
    assert caught.value is error
    assert flaky.calls == 1
    assert trio.current_time() == 0


async def test_attempts_are_capped_and_the_last_failure_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    last = TimeoutError("still down")
    flaky = Flaky(*[ConnectionResetError() for _ in range(3)], last)
    with pytest.raises(TimeoutError) as caught:
        await retry_transient(attempts=4, timeout=None)(flaky)()
    assert caught.value is last
    assert flaky.calls == 4


async def test_backoff_is_capped_and_jittered(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(forever=ConnectionResetError())
    policy = retry_transient(
        attempts=8, timeout=None, wait_initial=1.0, wait_max=4.0, wait_jitter=0.5
    )
    with pytest.raises(ConnectionResetError):
        await policy(flaky)()
    waits = [b - a for a, b in pairwise(flaky.times)]
    assert len(waits) == 7
    assert 1.0 <= waits[0] <= 1.5
    assert 2.0 <= waits[1] <= 2.5
    assert all(w <= 4.0 + 1e-9 for w in waits)
    assert waits[-1] == pytest.approx(4.0)  # 1 * 2**6 is far above the cap


async def test_timeout_stops_retrying_on_the_loop_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(forever=ConnectionResetError())
    policy = retry_transient(
        attempts=1000, timeout=10.0, wait_initial=1.0, wait_max=1.0, wait_jitter=0.0
    )
    with pytest.raises(ConnectionResetError):
        await policy(flaky)()
    assert flaky.calls == 11  # at t = 0, 1, ..., 10; the failure at t = 10 is not retried
    assert trio.current_time() == pytest.approx(10.0)


async def test_retry_after_hint_replaces_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(DependencyError("429", retry_after=7))
    assert await retry_transient(wait_initial=0.1, wait_jitter=0)(flaky)() == "ok"
    assert flaky.times == [0, pytest.approx(7.0)]


async def test_retry_after_beyond_the_timeout_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = DependencyError("flood wait", retry_after=3600)
    flaky = Flaky(error)
    with pytest.raises(DependencyError):
        await retry_transient(timeout=30)(flaky)()
    assert flaky.calls == 1


async def test_single_member_group_of_a_transient_failure_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(ExceptionGroup("nursery", [ConnectionResetError()]))
    assert await retry_transient()(flaky)() == "ok"
    assert flaky.calls == 2


async def test_cancellation_is_never_retried(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    @retry_transient(attempts=5, timeout=None)
    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await hangs()
    assert scope.cancelled_caught
    assert calls == 1


async def test_attempt_iterator(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(ConnectionResetError(), ConnectionResetError())
    result = None
    async for attempt in retry_transient(attempts=3, operation="panel.sync"):
        with attempt:
            result = await flaky()
    assert result == "ok"
    assert flaky.calls == 3


async def test_attempt_iterator_does_not_retry_non_transient(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0
    with pytest.raises(DomainError):
        async for attempt in retry_transient(attempts=3):
            with attempt:
                calls += 1
                raise DomainError("invalid state")
    assert calls == 1


async def test_a_decorated_function_can_be_called_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(ConnectionResetError(), ConnectionResetError())
    fetch = retry_transient(attempts=2)(flaky)
    with pytest.raises(ConnectionResetError):
        await fetch()
    assert await fetch() == "ok"  # a fresh count of attempts per call
    assert flaky.calls == 3


async def test_each_retry_is_logged(autojump_clock: trio.testing.MockClock) -> None:
    @retry_transient(attempts=3)
    async def sync_panel() -> str:
        if calls.pop(0):
            raise DependencyError("panel 502")
        return "done"

    calls = [True, True, False]
    with capture_logs() as logs:
        assert await sync_panel() == "done"
    events = retrying_events(logs)
    assert [e["attempt"] for e in events] == [1, 2]
    first = events[0]
    assert first["log_level"] == "warning"
    assert first["operation"].endswith("sync_panel")
    assert first["failure_type"] == "dependency_error"
    assert first["component"] == "retry"
    assert first["correlation_id"] == "-"
    assert first["outcome"] == "failed"
    assert first["error"] == "panel 502"
    assert first["max_attempts"] == 3


async def test_nothing_is_logged_when_giving_up(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(forever=ConnectionResetError())
    with capture_logs() as logs, pytest.raises(ConnectionResetError):
        await retry_transient(attempts=2, operation="db.ping")(flaky)()
    assert [e["operation"] for e in retrying_events(logs)] == ["db.ping"]


async def test_stamina_can_be_switched_off(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(ConnectionResetError())
    stamina.set_active(False)
    try:
        with pytest.raises(ConnectionResetError):
            await retry_transient()(flaky)()
    finally:
        stamina.set_active(True)
    assert flaky.calls == 1


async def test_a_first_attempt_that_succeeds_never_sets_up_stamina(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nearly every attempt succeeds first time: it must not pay for tenacity's set-up."""

    def refuse(**_: object) -> None:
        raise AssertionError("stamina was set up for an attempt that succeeded")

    monkeypatch.setattr(stamina, "retry_context", refuse)
    assert await retry_transient()(Flaky())() == "ok"
    async for attempt in retry_transient(operation="db.unit"):
        with attempt:
            await trio.lowlevel.checkpoint()


async def test_the_first_failure_propagates_as_the_same_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = DomainError("no such plan")
    with pytest.raises(DomainError) as raised:
        await retry_transient()(Flaky(error))()
    assert raised.value is error


def test_only_async_functions_are_decorated() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError):
        retry_transient()(sync)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"timeout": 0}, {"timeout": -1}, {"wait_jitter": -1}],
    ids=repr,
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        retry_transient(**kwargs)  # type: ignore[arg-type]


def test_wraps_keeps_the_name() -> None:
    async def fetch_invoices() -> None:
        pass

    assert retry_transient()(fetch_invoices).__name__ == "fetch_invoices"
