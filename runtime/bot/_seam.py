"""The other direction of the seam: asyncio code (aiogram handlers) awaiting trio code.

``runtime.bridge.run_asyncio`` takes trio code into asyncio; handlers come back with
``call_trio``. The trio function runs as a trio task; the log context (correlation id)
travels with it, and cancelling the asyncio side cancels the trio side. Callbacks that
must touch trio objects use ``call_trio_soon``.
"""

from runtime.bridge import call_trio, call_trio_soon, trio_time

__all__ = ["call_trio", "call_trio_soon", "trio_time"]
