"""After the start, what it left behind stops costing memory and collector time.

The imports and the assembly leave freed memory inside the allocator's heap, and hundreds
of thousands of objects (modules, classes, pydantic's schemas) that live as long as the
process. A little after every critical actor is up (not at once: the first requests that
see the service ready are not held up by it): one full collection, then ``gc.freeze()`` (the
survivors leave the collector's generations, so later collections stop walking them), and
glibc's ``malloc_trim(0)``, which gives the heap's free pages back to the system.

At the command line's first step, glibc's allocator is held to one arena
(``one_malloc_arena``): the start's threads (the bot's import, the embedded server's start,
the asyncio loop) would each get an arena of their own, whose freed memory stays scattered
over several heaps; measured, the idle service is about 0.4 MB smaller with one. An
operator's ``MALLOC_ARENA_MAX`` is left to rule.

From the same step, the collector is paused
(``pause_collector``): the start creates those objects by the hundred thousand and the
collector would walk them again and again for garbage that is not there (importing aiogram
alone costs 0.35-0.45 s more CPU with it running, of a start of about 3.5 s). It runs again
at the settle, or after ``PAUSE_LIMIT_SECONDS`` when the service is not ready by then.
"""

from __future__ import annotations

import ctypes
import gc
import os

import trio


def pause_collector() -> None:
    gc.disable()


def collect_import_garbage() -> None:
    """One full collection as soon as the bot's libraries are imported, while the start
    still allocates: the import's cyclic garbage is freed then and its memory reused by the
    rest of the start, instead of left in holes for the settle to find (measured, about
    0.2 MB of the idle service)."""
    gc.collect()


M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the most arenas its allocator keeps."""


def one_malloc_arena() -> bool:
    """Have glibc's allocator serve every thread from one arena; False where libc has no
    ``mallopt`` (not glibc) or the process's ``MALLOC_ARENA_MAX``, which glibc reads
    itself, says otherwise."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


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
