"""A real `vpnbot run` process against the local stand-ins: what the sandbox assembles.

The bench process serves the Telegram emulator, a fake Marzban and a fake Crypto Pay (as
`vpnbot sandbox` does), and starts `vpnbot run --config` as a process of its own on a
bench database, in polling mode like the sandbox, so that its CPU time and its
transactions are its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from _bytecode import compile_project

from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Limits, TelegramEmulator

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456789:AAHwakeupsBenchBotToken0123456789ab"
CRYPTO_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
PANEL_USER, PANEL_PASSWORD = "panel-admin", "panel-password-3"
CARD_TOKEN = "381764678:TEST:card-provider"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(
    *, dsn: str, port: int, telegram: str, panel: str, crypto: str, wakeups: bool
) -> str:
    """The sandbox's settings (plans, trial, the three payment providers) on ``dsn``."""
    return f"""
[service]
log_format = "json"
log_level = "warning"

[database]
dsn = "{dsn}"

[http]
port = {port}

[http.public]
port = 0

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"

[bot]
mode = "polling"

[wakeups]
enabled = {"true" if wakeups else "false"}

[trial]
enabled = true
backend = "marzban"

[plans.month]
title = {{ en = "1 month" }}
duration_days = 30
backend = "marzban"
prices = {{ stars = {{ XTR = 150 }}, card = {{ RUB = 19900 }}, cryptobot = {{ RUB = 19900 }} }}

[plugins.settings.marzban]
base_url = "{panel}"
username = "{PANEL_USER}"
password = "{PANEL_PASSWORD}"

[plugins.settings.cryptobot]
token = "{CRYPTO_TOKEN}"
base_url = "{crypto}/api/"

[plugins.settings.telegram_payments]
card_provider_token = "{CARD_TOKEN}"
"""


@dataclass
class Peers:
    emulator: TelegramEmulator
    panel: FakeMarzban
    crypto: FakeCryptoBot


@asynccontextmanager
async def peers() -> AsyncIterator[Peers]:
    """The emulator (Telegram's flood limits on), the panel and Crypto Pay, serving."""
    emulator = TelegramEmulator(TOKEN, limits=Limits())
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        yield Peers(emulator, panel, crypto)


class Service:
    """One `vpnbot run --config` process."""

    def __init__(self, workdir: Path, dsn: str, found: Peers, *, wakeups: bool) -> None:
        self.port = free_port()
        label = "wakeups" if wakeups else "polling"
        config = workdir / f"vpnbot-{label}.toml"
        config.write_text(
            config_text(
                dsn=dsn,
                port=self.port,
                telegram=found.emulator.url,
                panel=found.panel.url,
                crypto=found.crypto.url,
                wakeups=wakeups,
            )
        )
        self.log_path = workdir / f"vpnbot-{label}.log"
        self._log = self.log_path.open("a")
        compile_project()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)],
            cwd=workdir,
            env={
                **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                "PYTHONPATH": str(ROOT),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, seconds: float = 300.0) -> None:
        with trio.fail_after(seconds):
            async with httpx.AsyncClient() as client:
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"vpnbot exited: see {self.log_path}")
                    try:
                        answer = await client.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                        if answer.status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            with trio.move_on_after(60):
                await trio.to_thread.run_sync(self.process.wait)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()
