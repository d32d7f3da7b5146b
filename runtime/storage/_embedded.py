"""An embedded PostgreSQL for running without a configured database (and for tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from runtime.failures import InfraError


class EmbeddedPostgres:
    """A PostgreSQL server from the ``pgserver`` package, under a data directory of ours.

    Starting takes about a second (the first start also runs initdb). It listens on a Unix
    socket inside the data directory only, so nothing outside the host can reach it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._server: Any = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def dsn(self, database: str = "postgres") -> str:
        if self._server is None:
            raise RuntimeError("the embedded server is not running")
        return str(self._server.get_uri(database))

    def start_blocking(self) -> str:
        try:
            from pgserver.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - a broken install
            raise InfraError("the pgserver package is missing", transient=False) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise InfraError(
                f"embedded PostgreSQL did not start in {self.data_dir}: {exc}", transient=False
            ) from exc
        return self.dsn()

    def stop_blocking(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.cleanup()  # stops the server once the last process using it lets go

    async def start(self) -> str:
        """Start (or adopt) the server in a thread; returns its DSN."""
        return await trio.to_thread.run_sync(self.start_blocking)

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.stop_blocking)
