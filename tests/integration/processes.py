"""`vpnbot run` processes for the crash and restart tests: config, start, kill, observe."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from runtime.storage import Connection, Database
from tests import forkserver

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHrestartsBotToken0123456789abcdef"
CRYPTO_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
PANEL_USER, PANEL_PASSWORD = "panel-admin", "panel-password-3"


def write_config(
    path: Path,
    *,
    port: int,
    dsn: str,
    telegram: str,
    panel: str,
    crypto: str,
    instance: str | None,
    extra: str = "",
    public_port: int = 0,
) -> Path:
    """A polling-mode config against the fakes; ``instance`` None leaves the id unset."""
    identity = f'instance_id = "{instance}"' if instance is not None else ""
    path.write_text(
        f"""
[service]
{identity}
log_format = "json"
log_level = "info"

[database]
dsn = "{dsn}"

[http]
port = {port}

[http.public]
port = {public_port}

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"

[bot]
mode = "polling"
polling_timeout_seconds = 1

[trial]
enabled = true
backend = "marzban"
duration_hours = 24

[plans.month]
title = {{ en = "1 month" }}
duration_days = 30
backend = "marzban"
prices = {{ stars = {{ XTR = 150 }} }}

[plugins.settings.marzban]
base_url = "{panel}"
username = "{PANEL_USER}"
password = "{PANEL_PASSWORD}"

[plugins.settings.cryptobot]
token = "{CRYPTO_TOKEN}"
base_url = "{crypto}/api/"

[plugins.settings.telegram_payments]
card_provider_token = "381764678:TEST:card-provider"
{extra}"""
    )
    return path


class Vpnbot:
    """One ``vpnbot run --config`` process; its output goes to ``log``. ``wrap`` turns the
    command into the one started (run in a network namespace, say), and ``host`` is where
    its operator listener is reached."""

    def __init__(
        self,
        config: Path,
        log: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        wrap: Callable[[Sequence[str]], Sequence[str]] = list,
    ) -> None:
        self.port = port
        self.host = host
        self.log = log
        self._out = log.open("a")
        command = [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)]
        self.process = forkserver.popen(
            list(wrap(command)),
            cwd=config.parent,
            env={
                **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                "PYTHONPATH": str(ROOT),
            },
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://{self.host}:{self.port}/readyz", timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_ready(self, seconds: float = 180.0) -> float:
        """Wait until ``/readyz`` says ready; returns the trio time it was first seen."""
        try:
            await until(self.ready, seconds=seconds, what="the process ready", every=0.05)
        except AssertionError:
            raise AssertionError(self.tail()) from None
        return trio.current_time()

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.process.send_signal(signal.SIGKILL)
        await self.wait(10)
        self._out.close()

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._out.close()

    async def wait(self, seconds: float) -> int:
        with trio.fail_after(seconds):
            return await trio.to_thread.run_sync(self.process.wait)

    def tail(self, chars: int = 6000) -> str:
        self._out.flush()
        return self.log.read_text()[-chars:]


def free_port_on(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


PATIENCE = 180.0
"""Seconds a process-level step may take: a start imports aiogram (about 3 s of CPU on an
idle core), and the suite runs on a machine that may be several times slower and shared."""


async def until(
    condition: Callable[[], Awaitable[bool]], *, seconds: float, what: str, every: float = 0.1
) -> None:
    """Poll ``condition`` (another process changes what it reads) until it holds."""
    with trio.move_on_after(seconds):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(every)
        return
    raise AssertionError(f"not within {seconds}s: {what}")


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def value(db: Database, sql: str, *args: Any) -> Any:
    async def unit(conn: Connection) -> Any:
        return await conn.fetchval(sql, *args)

    return await db.transaction(unit)


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a process's output read while it runs: a last line still being
    written is left for the next read, and lines that are not JSON are skipped."""
    complete = text[: text.rfind("\n") + 1]
    found = []
    for line in complete.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found
