"""After the start, what it left behind stops costing memory and collector time.

The imports and the assembly leave freed memory inside the allocator's heap, and hundreds
of thousands of objects (modules, classes, pydantic's schemas) that live as long as the
process. A little after every critical actor is up (not at once: the first requests that
see the service ready are not held up by it): one full collection, then ``gc.freeze()`` (the
survivors leave the collector's generations, so later collections stop walking them), and
glibc's ``malloc_trim(0)``, which gives the heap's free pages back to the system.
"""

from __future__ import annotations

import ctypes
import gc

import trio


def settle() -> None:
    gc.collect()
    gc.freeze()
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


async def settle_when_ready(ready: trio.Event) -> None:
    await ready.wait()
    await trio.sleep(SETTLE_AFTER_SECONDS)
    settle()
