"""What both kinds of seam share: the interface, the registry of open seams, the leak handler."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from runtime.logs import get_logger

T = TypeVar("T")

LeakReport = Callable[[str, BaseException | None], None]
"""Told of every error asyncio reports outside any awaited task; runs on trio's side."""

_log = get_logger("bridge")


@dataclass
class BridgeStats:
    """How often trio code crossed into asyncio; tests use it to prove one crossing per unit."""

    crossings: int = 0
    leaked_errors: int = 0


stats = BridgeStats()


class Seam(Protocol):
    """One open asyncio loop and the two ways across to it."""

    loop: asyncio.AbstractEventLoop

    async def run_asyncio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """From trio: await ``fn(*args, **kwargs)`` as an asyncio task."""

    async def call_trio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """From asyncio: await ``fn(*args, **kwargs)`` as a trio task."""

    def soon_in_trio(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """From asyncio: run the plain function ``fn`` on trio's side, soon, in this context."""

    def trio_time(self) -> float:
        """trio's clock, read from the asyncio side."""


current: contextvars.ContextVar[Seam] = contextvars.ContextVar("vpnbot_bridge")
"""The seam trio code crosses through (trio copies it into every task started inside)."""

_by_loop: dict[asyncio.AbstractEventLoop, Seam] = {}


def register(seam: Seam) -> None:
    _by_loop[seam.loop] = seam


def unregister(seam: Seam) -> None:
    if _by_loop.get(seam.loop) is seam:
        del _by_loop[seam.loop]


def from_trio() -> Seam:
    try:
        return current.get()
    except LookupError:
        raise RuntimeError(
            "no asyncio loop is open here: run this inside runtime.bridge.asyncio_loop()"
        ) from None


def from_asyncio() -> Seam:
    """The seam whose asyncio loop runs the calling code."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("not on the asyncio side of runtime.bridge.asyncio_loop()") from None
    seam = _by_loop.get(loop)
    if seam is None:
        raise RuntimeError("this asyncio loop was not opened by runtime.bridge.asyncio_loop()")
    return seam


def guarded(fn: Callable[..., object], *args: Any) -> None:
    """Run ``fn`` where an exception must not escape (a callback trio runs between its
    tasks would end the whole run): log it as the bug it is instead."""
    try:
        fn(*args)
    except Exception:
        _log.exception(
            "a callback handed over to trio failed",
            operation="bridge.handover",
            failure_type="bug",
            outcome="failed",
        )


def leak_handler(
    report: LeakReport | None,
    hand_over: Callable[[Callable[..., object], tuple[Any, ...]], None],
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio's exception handler: log and report instead of raising.

    trio-asyncio's default handler re-raises into the loop's nursery, which would end the
    whole loop (and every asyncio library in it) for one leaked task; a native loop's
    default only prints. ``hand_over`` gets ``report`` to trio's side: the handler runs
    wherever asyncio noticed the leak (a task collected on either thread).
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
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
            hand_over(_report_safely, (report, message, error))

    return handle


def _report_safely(report: LeakReport, message: str, error: BaseException | None) -> None:
    try:
        report(message, error)
    except Exception:
        _log.exception("the leak reporter failed", operation="asyncio")
