"""The collector is paused during the start; once the start is done, its survivors leave
the collector's generations and it runs again."""

from __future__ import annotations

import gc
import sys

import trio
import trio.testing

from runtime.app._settle import (
    PAUSE_LIMIT_SECONDS,
    malloc_trim,
    pause_collector,
    settle_when_ready,
)


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


async def test_the_paused_collector_runs_again_once_settled(
    autojump_clock: trio.abc.Clock,
) -> None:
    ready = trio.Event()
    try:
        pause_collector()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(settle_when_ready, ready)
            await trio.testing.wait_all_tasks_blocked()
            ready.set()
            await trio.testing.wait_all_tasks_blocked()
            assert not gc.isenabled(), "paused until the settle"
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


async def test_a_service_never_ready_gets_its_collector_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    ready = trio.Event()
    frozen_before = gc.get_freeze_count()
    try:
        pause_collector()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(settle_when_ready, ready)
            await trio.sleep(PAUSE_LIMIT_SECONDS - 1)
            assert not gc.isenabled()
            await trio.sleep(2)
            assert gc.isenabled()
            assert gc.get_freeze_count() == frozen_before, "not settled: it is not ready"
            nursery.cancel_scope.cancel()
    finally:
        gc.enable()
        gc.unfreeze()


def test_malloc_trim_runs_on_glibc() -> None:
    assert malloc_trim() is (sys.platform == "linux" and _glibc())


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"
