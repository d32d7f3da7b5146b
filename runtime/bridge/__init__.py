"""The one seam between trio (the host loop) and asyncio (aiogram, asyncpg).

``asyncio_loop()`` opens the asyncio loop once, at the root of the tree; ``run_asyncio``
is the only way project code runs asyncio code. Everything else stays trio.
"""

from ._loop import BridgeStats, asyncio_loop, run_asyncio, stats

__all__ = ["BridgeStats", "asyncio_loop", "run_asyncio", "stats"]
