"""An embedded PostgreSQL for running without a configured database (and for tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from runtime.failures import InfraError

_DEFAULT_PORT = 5432
# pg_ctl hands the socket directory to the server through a shell, unquoted: a space or a
# shell character in the path breaks the start (or runs a command), and a comma splits the
# DSN's host into a list. Paths are refused unless every character is a letter, a digit or
# one of these.
_PATH_CHARACTERS = frozenset("/._-+@:=~#%")


def _check_path(data_dir: Path) -> None:
    bad = sorted({c for c in str(data_dir) if not (c.isalnum() or c in _PATH_CHARACTERS)})
    if bad:
        raise InfraError(
            f"the embedded PostgreSQL cannot use the data directory {str(data_dir)!r}: "
            f"the server cannot be started or reached through these characters: {bad!r}; "
            "choose a path of letters, digits and / . _ - + @ : = ~ # %",
            transient=False,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _forget_dead_users(server: Any) -> None:
    """Drop the processes that no longer exist from pgserver's list of the server's users.

    pgserver stops a server only when the last process using it lets go, and counts them in
    a file of the data directory. A process killed before letting go (SIGKILL, OOM) stays in
    that file forever, and the server is then never stopped by anyone.
    """
    users = getattr(server, "global_process_id_list", None)
    lock = getattr(server, "_lock", None)
    if users is None or lock is None:  # a pgserver that keeps its books differently
        return
    with lock:
        pids = users.get()
        alive = [pid for pid in pids if _alive(pid)]
        if alive != pids:
            users.put(alive)


class EmbeddedPostgres:
    """A PostgreSQL server from the ``pgserver`` package, under a data directory of ours.

    Starting takes about a second (the first start also runs initdb). It listens on a Unix
    socket inside the data directory only, so nothing outside the host can reach it.
    Starting on a data directory whose server is already running adopts that server; the
    server stops when the last process that started (or adopted) it stops it.
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
        info = self._server.get_postmaster_info()
        if info.socket_dir is None:  # pragma: no cover - TCP, on Windows only
            return str(self._server.get_uri(database))
        # pgserver's own URI pastes the paths in unescaped: a '#' or '%' in the data
        # directory would send clients to another socket.
        dsn = f"postgresql://postgres@/{quote(database, safe='')}"
        dsn += f"?host={quote(str(info.socket_dir), safe='/')}"
        if info.port is not None and info.port != _DEFAULT_PORT:
            dsn += f"&port={info.port}"
        return dsn

    def start_blocking(self) -> str:
        try:
            from pgserver.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - a broken install
            raise InfraError("the pgserver package is missing", transient=False) from exc
        _check_path(self.data_dir)
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
        _forget_dead_users(server)
        server.cleanup()  # stops the server once the last process using it lets go

    async def start(self) -> str:
        """Start (or adopt) the server in a thread; returns its DSN."""
        return await trio.to_thread.run_sync(self.start_blocking)

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.stop_blocking)
