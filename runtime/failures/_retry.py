"""Retrying transient failures, on top of stamina.

stamina finds the running async library with sniffio and sleeps with ``trio.sleep`` under
trio (``asyncio.sleep`` on the asyncio side of trio-asyncio), so its backoff runs on trio's
clock and ``trio.testing.MockClock`` makes it instant in tests. Backoff before retry ``n`` is
``min(wait_max, wait_initial * 2 ** (n - 1) + uniform(0, wait_jitter))``.

What this module adds to stamina:

- the decision to retry is the escalation policy's (``escalation_for(classify(exc)).retry``:
  transient dependency and infrastructure failures); cancellations and other control-flow
  signals are never retried;
- a peer's ``retry_after`` hint (Telegram's 429, an HTTP ``Retry-After``) replaces the
  computed backoff, when it fits in what is left of ``timeout``;
- ``timeout`` is measured on the event loop's clock (``trio.current_time()``), not on the
  wall clock stamina would use, so tests under ``MockClock`` see it: once ``timeout``
  seconds have passed since the first attempt began, a failure is no longer retried;
- each scheduled retry is one structured log line (``operation``, ``attempt``,
  ``failure_type``...);
- the first attempt runs before stamina is set up, and stamina takes over only once it
  failed: every database unit retries, and tenacity's set-up per call cost more CPU than
  the unit's own client work (a third of an outbox enqueue's).

stamina's switches still apply: ``stamina.set_active(False)`` turns retries off and
``stamina.set_testing(True, ...)`` removes backoff and overrides the number of attempts.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import stamina
import structlog
import trio
from structlog.typing import FilteringBoundLogger

from ._classify import classify, is_control_flow
from ._errors import Outcome
from ._policy import escalation_for

P = ParamSpec("P")
T = TypeVar("T")


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # not inside trio.run
        return time.monotonic()


class RetryTransient:
    """Retries transient failures: a decorator for async functions and an attempt iterator.

    ::

        @retry_transient(attempts=5, operation="panel.create_account")
        async def create_account(...): ...

        async for attempt in retry_transient(operation="crypto_pay.get_invoices"):
            with attempt:
                invoices = await client.get_invoices()

    ``attempts`` counts the first try. When every attempt failed, or a failure is not
    transient, or ``timeout`` has passed, the last exception propagates unchanged.
    """

    __slots__ = (
        "_attempts",
        "_logger",
        "_operation",
        "_timeout",
        "_wait_initial",
        "_wait_jitter",
        "_wait_max",
    )

    def __init__(
        self,
        *,
        attempts: int = 3,
        timeout: float | None = 30.0,
        wait_initial: float = 0.1,
        wait_max: float = 5.0,
        wait_jitter: float = 1.0,
        operation: str | None = None,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive, or None for no time limit")
        if wait_initial < 0 or wait_max < 0 or wait_jitter < 0:
            raise ValueError("waits must not be negative")
        self._attempts = attempts
        self._timeout = timeout
        self._wait_initial = wait_initial
        self._wait_max = wait_max
        self._wait_jitter = wait_jitter
        self._operation = operation
        self._logger = logger

    def __repr__(self) -> str:
        return (
            f"RetryTransient(attempts={self._attempts}, timeout={self._timeout}, "
            f"operation={self._operation!r})"
        )

    def __aiter__(self) -> AsyncIterator[_AnyAttempt]:
        return self._retry_context(self._operation or "retry_block")

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        # An async function, or an object whose class defines ``async def __call__``.
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)):
            raise TypeError("retry_transient decorates async functions only")
        name = getattr(fn, "__qualname__", None)
        operation = self._operation or (name if isinstance(name, str) else type(fn).__qualname__)

        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            async for attempt in self._retry_context(operation):
                with attempt:
                    return await fn(*args, **kwargs)
            raise AssertionError("unreachable: the last failure propagates")  # pragma: no cover

        return retrying

    def _retry_context(self, operation: str) -> AsyncIterator[_AnyAttempt]:
        return _Attempts(self, _Decision(self, operation))

    def _stamina(self, decide: _Decision) -> AsyncIterator[stamina.Attempt]:
        return stamina.retry_context(
            on=decide,
            attempts=self._attempts,
            timeout=None,  # measured by _Decision on the event loop's clock
            wait_initial=self._wait_initial,
            wait_max=self._wait_max,
            wait_jitter=self._wait_jitter,
        ).__aiter__()


class _FirstAttempt:
    """The first attempt, outside stamina: setting up tenacity's machinery costs more CPU
    than a database unit's own client work, and nearly every first attempt succeeds. A
    failure is kept for stamina, which then decides, logs and backs off as if it had run
    the attempt itself."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or is_control_flow(exc):
            return False
        self.error = exc
        return True


_AnyAttempt = _FirstAttempt | stamina.Attempt


class _Attempts:
    """``async for attempt in ...``: the first attempt, then, only if it failed, stamina's."""

    __slots__ = ("_decide", "_first", "_policy", "_rest")

    def __init__(self, policy: RetryTransient, decide: _Decision) -> None:
        self._policy = policy
        self._decide = decide
        self._first: _FirstAttempt | None = None
        self._rest: AsyncIterator[stamina.Attempt] | None = None

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> _AnyAttempt:
        if self._rest is not None:
            return await self._rest.__anext__()
        if self._first is None:
            self._first = _FirstAttempt()
            return self._first
        failure = self._first.error
        if failure is None:
            raise StopAsyncIteration
        self._first.error = None  # no reference cycle through the traceback
        self._rest = self._policy._stamina(self._decide)
        _fail(await self._rest.__anext__(), failure)
        return await self._rest.__anext__()  # the failure again, or the backoff and a retry


def _fail(attempt: stamina.Attempt, failure: BaseException) -> None:
    """``failure`` as the outcome of ``attempt``: stamina keeps it and decides on it at the
    iterator's next step."""
    with attempt:
        raise failure


class _Decision:
    """stamina's backoff hook for one run of attempts: retry (True, or a wait) or give up."""

    __slots__ = ("_deadline", "_failures", "_operation", "_policy")

    def __init__(self, policy: RetryTransient, operation: str) -> None:
        self._policy = policy
        self._operation = operation
        self._failures = 0
        timeout = policy._timeout
        self._deadline = None if timeout is None else _now() + timeout

    def __call__(self, exc: Exception) -> bool | float:
        # tenacity hands over whatever the attempt raised, cancellations included.
        if is_control_flow(exc):
            return False
        self._failures += 1
        failure = classify(exc)
        escalation = escalation_for(failure, operation=self._operation)
        if not escalation.retry or self._failures >= self._policy._attempts:
            return False
        remaining = None if self._deadline is None else self._deadline - _now()
        if remaining is not None and remaining <= 0:
            return False
        wait: bool | float = True
        if failure.retry_after is not None:
            if remaining is not None and failure.retry_after > remaining:
                return False
            wait = failure.retry_after
        log = self._policy._logger or structlog.get_logger(component="retry")
        fields: dict[str, Any] = {
            "operation": self._operation,
            "correlation_id": structlog.contextvars.get_contextvars().get("correlation_id", "-"),
            "failure_type": failure.type.value,
            "transient": failure.transient,
            "outcome": Outcome.FAILED.value,
            "error": failure.message,
            "error_type": failure.exception_type,
            "attempt": self._failures,
            "max_attempts": self._policy._attempts,
        }
        if failure.retry_after is not None:
            fields["retry_after"] = failure.retry_after
        getattr(log, escalation.log_level)("attempt failed, retrying", **fields)
        return wait


def retry_transient(
    *,
    attempts: int = 3,
    timeout: float | None = 30.0,
    wait_initial: float = 0.1,
    wait_max: float = 5.0,
    wait_jitter: float = 1.0,
    operation: str | None = None,
    logger: FilteringBoundLogger | None = None,
) -> RetryTransient:
    """Retry transient failures; see ``RetryTransient``. The operation name defaults to the
    decorated function's qualified name."""
    return RetryTransient(
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
        operation=operation,
        logger=logger,
    )
