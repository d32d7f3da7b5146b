"""Once the start is done, its survivors leave the collector's generations."""

from __future__ import annotations

import gc
import sys

import trio
import trio.testing

from runtime.app._settle import malloc_trim, settle_when_ready


async def test_once_ready_the_heap_is_frozen_and_trimmed(autojump_clock: trio.abc.Clock) -> None:
    ready = trio.Event()
    frozen_before = gc.get_freeze_count()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(settle_when_ready, ready)
            await trio.testing.wait_all_tasks_blocked()
            assert gc.get_freeze_count() == frozen_before
            ready.set()
            await trio.testing.wait_all_tasks_blocked()
            assert gc.get_freeze_count() == frozen_before, "not at once: requests come first"
        assert gc.get_freeze_count() > frozen_before
    finally:
        gc.unfreeze()


def test_malloc_trim_runs_on_glibc() -> None:
    assert malloc_trim() is (sys.platform == "linux" and _glibc())


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"
