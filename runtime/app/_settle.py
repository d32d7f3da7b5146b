"""After the start, what it left behind stops costing memory and collector time.

The imports and the assembly leave freed memory inside the allocator's heap, and hundreds
of thousands of objects (modules, classes, pydantic's schemas) that live as long as the
process. A little after every critical actor is up (not at once: the first requests that
see the service ready are not held up by it): one full collection, then ``gc.freeze()`` (the
survivors leave the collector's generations, so later collections stop walking them), and
glibc's ``malloc_trim(0)``, which gives the heap's free pages back to the system.

Before that, from the command line's first step, the collector is paused
(``pause_collector``): the start creates those objects by the hundred thousand and the
collector would walk them again and again for garbage that is not there (importing aiogram
alone costs 0.35-0.45 s more CPU with it running, of a start of about 3.5 s). It runs again
at the settle, or after ``PAUSE_LIMIT_SECONDS`` when the service is not ready by then.
"""

from __future__ import annotations

import ctypes
import gc

import trio


def pause_collector() -> None:
    gc.disable()


def settle() -> None:
    gc.collect()
    gc.freeze()
    gc.enable()
    malloc_trim()


def malloc_trim() -> bool:
    """Return the C heap's free memory to the system; False where libc has no
    ``malloc_trim`` (not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim(0)
    return True


SETTLE_AFTER_SECONDS = 2.0
PAUSE_LIMIT_SECONDS = 60.0
"""A service that is not ready by then (the database or Telegram unreachable) must not run
on without a collector until it is."""


async def settle_when_ready(ready: trio.Event) -> None:
    with trio.move_on_after(PAUSE_LIMIT_SECONDS):
        await ready.wait()
    if not ready.is_set():
        gc.enable()
        await ready.wait()
    await trio.sleep(SETTLE_AFTER_SECONDS)
    settle()
