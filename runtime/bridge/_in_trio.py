"""trio-asyncio's loop: asyncio run by trio itself, on trio's thread.

One thread, and asyncio's callbacks scheduled through trio: every callback of asyncpg and
aiohttp pays for the emulation (about three times plain asyncio's CPU for a payment). Kept
for where one thread matters more than speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from ._seam import LeakReport, guarded, leak_handler, register, unregister

T = TypeVar("T")


class InTrioSeam:
    def __init__(self, loop: asyncio.AbstractEventLoop, report: LeakReport | None) -> None:
        import trio_asyncio

        self.loop = loop
        self._trio_asyncio = trio_asyncio
        loop.set_exception_handler(leak_handler(report, self.soon_in_trio))

    async def run_asyncio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        result: T = await self._trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
        return result

    async def call_trio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        result: T = await self._trio_asyncio.trio_as_aio(fn)(*args, **kwargs)
        return result

    def soon_in_trio(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        guarded(fn, *args)  # asyncio's side runs on trio's thread, inside trio's run

    def trio_time(self) -> float:
        return trio.current_time()


@asynccontextmanager
async def open_in_trio_loop(report: LeakReport | None) -> AsyncIterator[InTrioSeam]:
    """trio-asyncio's ``open_loop``, with an error of the body raised as it was, not in
    the group of its nursery: as a native loop raises it."""
    import trio_asyncio

    raised: list[BaseException] = []
    try:
        async with trio_asyncio.open_loop() as loop:
            seam = InTrioSeam(loop, report)
            register(seam)
            try:
                yield seam
            except BaseException as exc:
                raised.append(exc)
                raise
            finally:
                unregister(seam)
    except BaseExceptionGroup as group:
        if not raised or not _only(group, raised[0]):
            raise
    if raised:
        raise raised[0]


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """Whether ``exc`` is all that ``group`` holds, however deep its nurseries nest it."""
    return all(
        _only(inner, exc) if isinstance(inner, BaseExceptionGroup) else inner is exc
        for inner in group.exceptions
    )
