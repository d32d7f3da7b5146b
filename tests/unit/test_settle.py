"""The collector is paused during the start; once the start is done, its survivors leave
the collector's generations and it runs again. The allocator is held to one arena, and the
bot's import thread collects its garbage as soon as it is done."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import trio
import trio.testing

from runtime.app._early import EarlyStart
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


ROOT = Path(__file__).resolve().parents[2]
ONE_ARENA = "from runtime.app._settle import one_malloc_arena; print(one_malloc_arena())"


def _one_arena(**env: str) -> str:
    """``one_malloc_arena()`` in a fresh interpreter: it changes the process's allocator."""
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", ONE_ARENA],
        env={**environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_the_allocator_is_held_to_one_arena_on_glibc() -> None:
    assert _one_arena() == str(sys.platform == "linux" and _glibc())


def test_an_operators_malloc_arena_max_is_left_to_rule() -> None:
    assert _one_arena(MALLOC_ARENA_MAX="4") == "False"


def test_the_import_thread_collects_once_its_imports_are_done() -> None:
    collected_by: list[str] = []

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            collected_by.append(threading.current_thread().name)

    early = EarlyStart()
    gc.callbacks.append(on_collection)
    try:
        early.import_in_background(["json"])
        early.close()
    finally:
        gc.callbacks.remove(on_collection)
    assert "early-import" in collected_by
