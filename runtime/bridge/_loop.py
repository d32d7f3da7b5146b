from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, ParamSpec, TypeVar, get_args

import trio

from ._seam import LeakReport, Seam, current, from_asyncio, from_trio, guarded, stats

P = ParamSpec("P")
T = TypeVar("T")

LoopKind = Literal["auto", "uvloop", "asyncio", "trio-asyncio"]
"""``uvloop`` and ``asyncio``: a native loop in a thread of its own; ``trio-asyncio``:
asyncio emulated on trio's own thread; ``auto``: uvloop when it is installed, else asyncio."""

KIND_VARIABLE = "VPNBOT_SERVICE__ASYNCIO_LOOP"
"""Chooses the loop where no kind is given (tests, benches); the same variable overrides
``[service] asyncio_loop`` in the configuration."""


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve_kind(kind: LoopKind | None = None) -> Literal["uvloop", "asyncio", "trio-asyncio"]:
    """The loop ``asyncio_loop(kind=kind)`` opens."""
    if kind is None:
        wanted = os.environ.get(KIND_VARIABLE) or "auto"
        if wanted not in get_args(LoopKind):
            raise ValueError(f"{KIND_VARIABLE}={wanted!r}: must be one of {get_args(LoopKind)}")
        kind = wanted  # type: ignore[assignment]
    if kind == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if kind == "uvloop" and not uvloop_installed():
        raise RuntimeError('asyncio_loop = "uvloop", but uvloop is not installed')
    assert kind is not None
    return kind


@asynccontextmanager
async def asyncio_loop(
    report: LeakReport | None = None, *, kind: LoopKind | None = None
) -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Open the asyncio loop for the trio code inside, with an exception handler that logs
    and reports (``report`` runs on trio's side) instead of raising.

    On exit the asyncio tasks still running are cancelled and waited for, as
    ``asyncio.run`` does, and the loop is closed.
    """
    chosen = resolve_kind(kind)
    opened: AbstractAsyncContextManager[Seam]
    if chosen == "trio-asyncio":
        from ._in_trio import open_in_trio_loop

        opened = open_in_trio_loop(report)
    else:
        from ._native import open_native_loop

        opened = open_native_loop(chosen, report)
    async with opened as seam:
        token = current.set(seam)
        try:
            yield seam.loop
        finally:
            current.reset(token)


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await the asyncio coroutine function ``fn`` from trio: one crossing.

    Cancellation from trio cancels the asyncio task, and the asyncio side's cleanup
    (``finally``, ``async with``) runs before this raises ``Cancelled``. The log context
    (correlation id) goes along; exceptions come back as they were raised.
    """
    seam = from_trio()
    stats.crossings += 1
    return await seam.run_asyncio(fn, args, kwargs)


async def call_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """From asyncio (an aiogram handler), await the trio coroutine function ``fn``.

    ``fn`` runs as a trio task in the caller's log context. Cancelling the asyncio side
    cancels the trio task and waits for it to finish before raising ``CancelledError``;
    trio's ``Cancelled`` never reaches asyncio. Exceptions come back as they were raised.
    """
    return await from_asyncio().call_trio(fn, args, kwargs)


def call_trio_soon(fn: Callable[..., object], *args: Any) -> None:
    """Run the plain function ``fn`` (setting a trio Event, submitting an alert) on trio's
    side: at once when the caller is there already, else soon, in the caller's log
    context and in order with the crossings. For asyncio callbacks (asyncpg's
    ``add_listener``, aiogram's middlewares) that must touch trio objects. Never raises:
    an exception of ``fn`` is logged as a bug."""
    if trio.lowlevel.in_trio_run():
        guarded(fn, *args)
        return
    from_asyncio().soon_in_trio(fn, args)


def trio_time() -> float:
    """``trio.current_time()``, from either side (trio's MockClock included)."""
    if trio.lowlevel.in_trio_run():
        return trio.current_time()
    return from_asyncio().trio_time()
