"""The other direction of the seam: asyncio code (aiogram handlers) awaiting trio code.

``runtime.bridge.run_asyncio`` takes trio code into asyncio; handlers come back with
``call_trio``. The trio function runs as a trio task of the bridge's loop; the log context
(correlation id) travels with it, and cancelling the asyncio side cancels the trio side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")


async def call_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """From asyncio, await the trio coroutine function ``fn``: one crossing back."""
    result: T = await trio_asyncio.trio_as_aio(fn)(*args, **kwargs)
    return result
