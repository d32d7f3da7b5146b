"""PostgreSQL servers of our own for failover tests: a primary, a streaming standby made
with ``pg_basebackup -R``, killed and promoted as a failover manager would.

The servers listen on loopback TCP only (no Unix socket), with trust authentication, and
run as an unprivileged account when the tests run as root (PostgreSQL refuses root): the
account ``pgserver`` creates for the embedded server.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgserver.postgres_server import POSTGRES_BIN_PATH
from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

from .test_process import free_port

DISTRIBUTION = Path("/usr/lib/postgresql")
SERVER_ACCOUNT = "pgserver"
START_SECONDS = 300
"""pg_ctl's wait for a start, a promotion or a stop: a starved machine's deadline."""


def bin_dir() -> Path:
    """The distribution's newest PostgreSQL, else the one the embedded server uses."""
    found = sorted(
        (p for p in DISTRIBUTION.glob("*/bin") if (p / "pg_basebackup").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else Path(POSTGRES_BIN_PATH)


def _account() -> dict[str, Any]:
    """``subprocess`` arguments that run a server command as a non-root account."""
    if os.geteuid() != 0:
        return {}
    entry = ensure_user_exists(SERVER_ACCOUNT)
    assert entry is not None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "env": {**os.environ, "HOME": "/"}}


@dataclass
class Node:
    """One server: its directory (data and log), its port, the commands run on it."""

    home: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def dsn_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.dsn_host}/{database}"

    def initdb(self, **settings: str) -> None:
        self._prepare_dir()
        _run("initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust", "--no-sync")
        self.configure(**settings)

    def configure(self, **settings: str) -> None:
        """Settings appended to ``postgresql.conf``: the last one of a name wins."""
        lines = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            **settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in lines.items())

    def start(self) -> None:
        _run("pg_ctl", "-D", self.data_dir, "-l", self.log, "-w", "-t", START_SECONDS, "start")

    def kill(self) -> None:
        """SIGKILL the postmaster: the server dies as in a host crash of its process."""
        pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def promote(self) -> None:
        _run("pg_ctl", "-D", self.data_dir, "-w", "-t", START_SECONDS, "promote")

    def stop(self) -> None:
        """Stop it if it runs (immediate: the test's data is thrown away)."""
        if (self.data_dir / "postmaster.pid").exists():
            _run("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop", check=False)

    def _prepare_dir(self) -> None:
        self.home.mkdir(mode=0o700)
        account = _account()
        if account:
            ensure_prefix_permissions(self.home)
            os.chown(self.home, account["user"], account["group"])


def standby_of(primary: Node, home: Path) -> Node:
    """A streaming standby of ``primary`` (started), made by ``pg_basebackup -R``."""
    node = Node(home, free_port())
    node._prepare_dir()
    _run(
        "pg_basebackup",
        "-h",
        "127.0.0.1",
        "-p",
        primary.port,
        "-U",
        "postgres",
        "-D",
        node.data_dir,
        "-R",
        "-X",
        "stream",
        "--no-sync",
        as_account=False,
    )
    _give_to_account(node.data_dir)
    node.configure(synchronous_standby_names="''")
    node.start()
    return node


def _give_to_account(root: Path) -> None:
    """Hand a tree made by this process to the servers' account (when running as root)."""
    account = _account()
    if not account:
        return
    for directory, _, files in os.walk(root):
        for path in (directory, *(os.path.join(directory, name) for name in files)):
            os.chown(path, account["user"], account["group"])


def _run(command: str, *args: object, check: bool = True, as_account: bool = True) -> None:
    """``as_account`` False: as this process (a client command writing files of ours)."""
    done = subprocess.run(
        [str(bin_dir() / command), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=START_SECONDS + 60,
        cwd="/",
        **(_account() if as_account else {}),
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr.strip()}")
