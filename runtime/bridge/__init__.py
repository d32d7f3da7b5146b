"""The one seam between trio (the host loop) and asyncio (aiogram, asyncpg).

``asyncio_loop()`` opens the asyncio loop once, at the root of the tree: by default a
native loop (uvloop when installed) in a thread of its own, or trio-asyncio's loop on
trio's thread (``kind``, ``[service] asyncio_loop``). ``run_asyncio`` is the only way
project code runs asyncio code; asyncio code comes back with ``call_trio`` (await a trio
function) and ``call_trio_soon`` (touch a trio object from a callback). Everything else
stays trio, and asyncio objects are used on asyncio's side only.
"""

from ._loop import (
    KIND_VARIABLE,
    LoopKind,
    asyncio_loop,
    call_trio,
    call_trio_soon,
    resolve_kind,
    run_asyncio,
    trio_time,
    uvloop_installed,
)
from ._seam import BridgeStats, LeakReport, stats

__all__ = [
    "KIND_VARIABLE",
    "BridgeStats",
    "LeakReport",
    "LoopKind",
    "asyncio_loop",
    "call_trio",
    "call_trio_soon",
    "resolve_kind",
    "run_asyncio",
    "stats",
    "trio_time",
    "uvloop_installed",
]
