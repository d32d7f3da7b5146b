"""Running an aiogram dispatcher from trio code, for tests against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from runtime.bridge import run_asyncio

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher


@asynccontextmanager
async def polling(
    dispatcher: Dispatcher,
    bot: Bot,
    *,
    polling_timeout: int = 1,
    stop_timeout: float = 5.0,
    **kwargs: Any,
) -> AsyncIterator[None]:
    """Run ``dispatcher.start_polling(bot)`` in the background while the block runs.

    Needs ``runtime.bridge.asyncio_loop()`` around it. Signals stay with trio
    (``handle_signals=False``); on exit polling is stopped the way aiogram needs it
    (``stop_polling()`` under a shielded scope with a timeout, then waiting for polling to
    return, and only then cancelling), which also closes the bot's session.
    """
    finished = trio.Event()
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await run_asyncio(
                dispatcher.start_polling,
                bot,
                handle_signals=False,
                polling_timeout=polling_timeout,
                **kwargs,
            )
        except Exception as error:
            errors.append(error)
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield
        finally:
            with trio.move_on_after(stop_timeout) as scope:
                scope.shield = True
                while not finished.is_set():
                    try:
                        await run_asyncio(dispatcher.stop_polling)
                    except RuntimeError:
                        # not started yet (or already over): look again shortly
                        with trio.move_on_after(0.02):
                            await finished.wait()
                        continue
                    await finished.wait()
            nursery.cancel_scope.cancel()
    if errors:
        raise errors[0]
