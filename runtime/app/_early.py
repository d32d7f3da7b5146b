"""What ``vpnbot run`` begins before it imports the runtime, so the start is not serial.

Importing the bot's libraries (aiogram and pydantic's models of the Bot API) is most of a
start: seconds of CPU. The embedded PostgreSQL's start is a subprocess that needs none of
it. So the command line starts the server's thread and an import thread first, then imports
and assembles the runtime; the database, its migrations and the HTTP listeners come up
while the bot's import goes on, and the bot's actors wait only for it (``bot_actors``).

The import thread imports third-party modules only: two threads importing modules of this
package at once could each wait for the other's module (a deadlock Python refuses with an
error), while aiogram never imports us.

A SIGTERM or SIGINT before the supervisor runs is a request to stop, recorded by the
handler and acted on at the next step of the start (``stop_if_requested`` before trio runs,
``serve`` after): raising from the handler could leave an import half done with its lock
held. The start ends, a server being started is waited for (an ``initdb`` cut short leaves
a data directory that never starts again) and stopped, the import is waited for (it cannot
be interrupted, and an interpreter that exits under it aborts), and the process exits 0
with no child left.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import trio

from ._ports import BoundPorts
from ._settle import collect_import_garbage

if TYPE_CHECKING:
    from runtime.storage import EmbeddedPostgres


def _silent(text: str) -> None:
    pass


class Terminated(BaseException):
    """A stop was asked for (SIGTERM, SIGINT) before trio ran."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlyStart:
    """The threads a start runs before the runtime exists, and the stop requests meanwhile.

    ``watch_signals()`` first; a stop request is recorded (``stop_requested``), and
    ``stop_if_requested()`` raises ``Terminated`` for it between the steps of the start;
    ``serve`` honours it once it opens its own signal receiver. ``close()`` stops a server
    that nobody took over (``take_server``) and waits for the import thread.
    """

    def __init__(self) -> None:
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        """A SIGHUP came before ``serve`` listened for it: it reloads once the service is
        ready (the file may have changed after the start read it)."""
        self._signal: str | None = None
        self._server: EmbeddedPostgres | None = None
        self._server_start: Future[str] | None = None
        self._threads: list[threading.Thread] = []
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        self.ports = BoundPorts()
        """The listening sockets bound first (``BoundPorts.bind``); closed by ``close``."""
        self.progress: Callable[[str], None] = _silent
        """Where the start says what it is doing (the sandbox prints it)."""

    def watch_signals(self) -> None:
        for signum in _STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested.set()

    def stop_if_requested(self) -> None:
        if self.stop_requested.is_set():
            raise Terminated(self._signal or "a stop request")

    def restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = self._signal or signal.Signals(signum).name
        self.stop_requested.set()

    def import_in_background(self, modules: Sequence[str]) -> None:
        """Import third-party ``modules`` in a daemon thread (errors surface later, when the
        code that needs them imports them again)."""

        def run() -> None:
            for name in modules:
                try:
                    importlib.import_module(name)
                except Exception:
                    return
            collect_import_garbage()

        self._start_thread(run, "import")

    def start_server(self, data_dir: Path) -> None:
        """Start the embedded PostgreSQL in a thread (``take_server`` waits for it)."""
        from runtime.storage import EmbeddedPostgres

        server = self._server = EmbeddedPostgres(data_dir)
        first = not (server.data_dir / "PG_VERSION").exists()
        self.progress(
            "starting PostgreSQL (first start: initdb)…" if first else "starting PostgreSQL…"
        )
        started: Future[str] = Future()
        self._server_start = started

        def run() -> None:
            try:
                started.set_result(server.start_blocking())
            except BaseException as exc:
                started.set_exception(exc)

        self._start_thread(run, "embedded-postgres")

    def server_for(self, data_dir: Path) -> EmbeddedPostgres | None:
        """The server started early for ``data_dir``, if any."""
        server = self._server
        if server is None or server.data_dir != data_dir.expanduser().resolve():
            return None
        return server

    async def take_server(self) -> EmbeddedPostgres:
        """Wait for the early server's start and take it over: its stop is the taker's now.

        The wait is not cancellable: a server half started is seen to the end, then
        stopped by whoever cancelled.
        """
        server, started = self._server, self._server_start
        if server is None or started is None:
            raise RuntimeError("no server was started early")
        self._server = self._server_start = None
        try:
            await trio.to_thread.run_sync(started.result)
        except BaseException:
            await server.stop()
            raise
        return server

    def close(self) -> None:
        """Stop a server started early and not taken over (after its start, if it runs),
        then wait for the import: an interpreter that exits while a thread is importing
        aborts (SIGABRT) instead of exiting with its code."""
        server, started = self._server, self._server_start
        self._server = self._server_start = None
        if server is not None and started is not None:
            with contextlib.suppress(BaseException):
                started.result()
            server.stop_blocking()
        for thread in self._threads:
            thread.join()
        self.ports.close()

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"early-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
