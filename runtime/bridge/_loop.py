from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio_asyncio

from runtime.logs import get_logger

P = ParamSpec("P")
T = TypeVar("T")

LeakReport = Callable[[str, BaseException | None], None]

_log = get_logger("bridge")


@dataclass
class BridgeStats:
    """How often trio code crossed into asyncio; tests use it to prove one crossing per unit."""

    crossings: int = 0
    leaked_errors: int = 0


stats = BridgeStats()


def _handler_for(
    report: LeakReport | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # trio-asyncio's default handler re-raises into the loop's nursery, which would end
        # the whole loop (and every asyncio library in it) for one leaked task.
        stats.leaked_errors += 1
        error = context.get("exception")
        message = str(context.get("message", "asyncio error"))
        _log.error(
            "asyncio reported an error outside any task we await",
            operation="asyncio",
            failure_type="bug",
            outcome="failed",
            message=message,
            error=repr(error) if error is not None else None,
        )
        if report is not None:
            try:
                report(message, error)
            except Exception:
                _log.exception("the leak reporter failed", operation="asyncio")

    return handle


@asynccontextmanager
async def asyncio_loop(
    report: LeakReport | None = None,
) -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Open the asyncio loop inside trio, with an exception handler that logs and reports."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_handler_for(report))
        yield loop


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await the asyncio coroutine function ``fn`` from trio: one crossing.

    Cancellation from trio cancels the asyncio task, and the asyncio side's cleanup
    (``finally``, ``async with``) runs before this returns.
    """
    stats.crossings += 1
    result: T = await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
    return result
