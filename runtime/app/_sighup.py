"""SIGHUP, heard from the start: the reload itself (``_reload``) is imported on the first
one, so a service that is never reloaded does not hold it."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from runtime.logs import get_logger

if TYPE_CHECKING:
    from ._early import EarlyStart
    from ._reload import Reloader
    from ._runtime import Runtime

_log = get_logger("config")


@dataclass(frozen=True)
class ConfigSource:
    """Where the running configuration came from: read again on a reload."""

    path: Path
    environ: Mapping[str, str]


async def reload_on_signal(
    runtime: Runtime,
    source: ConfigSource | None,
    early: EarlyStart | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP reloads ``source`` once the service is ready (a SIGHUP before waits for it);
    several while one reload runs make one more. Without a source (the sandbox) it is
    logged and ignored, never the default action (which ends the process)."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        if source is None:
            async for _ in signals:
                _log.warning("SIGHUP ignored: no configuration file to reload")
            return
        await runtime.supervisor.ready.wait()
        reloader: Reloader | None = None
        if early is not None and early.reload_requested.is_set():
            reloader = _reloader(runtime, source)
            await reloader.reload()
        async for _ in signals:
            if reloader is None:
                reloader = _reloader(runtime, source)
            await reloader.reload()


def _reloader(runtime: Runtime, source: ConfigSource) -> Reloader:
    from ._reload import Reloader

    return Reloader(runtime, source)
