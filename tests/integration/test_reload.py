"""``systemctl reload`` in-process: the runtime on a real PostgreSQL and the fakes of its
peers, its configuration file rewritten and read again."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.app import build_runtime, serve
from runtime.app._reload import Reloaded, Reloader
from runtime.app._sighup import ConfigSource
from runtime.bridge._seam import current as seam
from runtime.config import load_settings
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import TelegramEmulator

from .processes import CRYPTO_TOKEN, PANEL_PASSWORD, PANEL_USER, PATIENCE, TOKEN, write_config
from .test_process import free_port

BUYER = 5_200_001


class Running:
    def __init__(self, runtime: Any, path: Path, notify: socket.socket) -> None:
        self.runtime = runtime
        self.path = path
        self.notify = notify
        self.reloader = Reloader(runtime, ConfigSource(path, runtime.environ))
        self.seam: Any = None

    def rewrite(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.path.write_text(text.replace(old, new))

    def notifications(self) -> list[str]:
        found = []
        while True:
            try:
                found.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                return found

    async def price(self) -> int:
        """The amount of a new Stars invoice for the plan, as the bot's /buy makes it."""
        token = seam.set(self.seam)
        try:
            checkout = await self.runtime.services.billing.buy(BUYER, "month", "stars")
        finally:
            seam.reset(token)
        return int(checkout.payment.amount_minor)


@pytest.fixture
async def running(database_dsn: str, tmp_path: Path) -> AsyncIterator[Running]:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        emulator.create_user(BUYER, first_name="Buyer")
        path = write_config(
            tmp_path / "vpnbot.toml",
            port=free_port(),
            dsn=database_dsn,
            telegram=emulator.url,
            panel=panel.url,
            crypto=crypto.url,
            instance="reloading",
        )
        notify_path = str(tmp_path / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(notify_path)
            notify.setblocking(False)
            environ = {"NOTIFY_SOCKET": notify_path}
            runtime = build_runtime(load_settings(path, environ=environ), environ=environ)
            found = Running(runtime, path, notify)

            async def connected(db: Any) -> None:
                found.seam = seam.get()  # the asyncio loop ``serve`` opened

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: serve(runtime, config=path, on_connected=connected))
                with trio.fail_after(PATIENCE):
                    await runtime.supervisor.ready.wait()
                yield found
                runtime.supervisor.request_shutdown()


async def test_a_valid_reload_prices_the_next_invoice_anew(running: Running) -> None:
    assert await running.price() == 150
    running.notifications()
    bot_before = running.runtime.services.billing
    running.rewrite("XTR = 150", "XTR = 175")
    done = await running.reloader.reload()
    assert done.outcome == "applied", done
    assert done.applied == ["plans.month.prices.stars.XTR"]
    assert done.needs_restart == []
    assert "bot" in done.restarted and "notifier" in done.restarted
    assert "http" not in done.restarted and "database" not in done.restarted
    assert running.runtime.services.billing is not bot_before
    assert await running.price() == 175
    messages = running.notifications()
    reloading = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1\n"))
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1\n"))
    assert reloading < ready
    assert "MONOTONIC_USEC=" in messages[reloading]
    assert "configuration reloaded" in messages[ready]
    for status in running.runtime.supervisor.statuses:
        assert status.failures == 0 and status.restarts == 0, status
    assert running.runtime.info["reload"]["outcome"] == "applied"


@pytest.mark.parametrize(
    ("old", "new", "bad_key"),
    [
        ("XTR = 175", "XTR = [", "vpnbot.toml"),
        ("duration_days = 30", "duration_days = 0", "plans.month.duration_days"),
        ('backend = "marzban"\nprices', 'backend = "nowhere"\nprices', "plans.month"),
    ],
)
async def test_a_bad_configuration_changes_nothing_and_alerts(
    running: Running, old: str, new: str, bad_key: str
) -> None:
    settings = running.runtime.settings
    billing = running.runtime.services.billing
    running.rewrite("XTR = 150", "XTR = 175")  # a good change beside the bad one
    running.rewrite(old, new)
    done = await running.reloader.reload()
    assert done.outcome == "refused"
    assert any(bad_key in p.path for p in done.problems), done.problems
    assert running.runtime.settings is settings
    assert running.runtime.services.settings is settings
    assert running.runtime.services.billing is billing
    assert await running.price() == 150
    recent = running.runtime.recent
    assert recent is not None
    refused = [a for a in recent.alerts if a.key == "config_reload_refused"]
    assert refused and refused[-1].severity.value == "warning"
    assert "READY=1" in "".join(running.notifications())


async def test_a_change_that_needs_a_restart_is_reported_and_not_applied(
    running: Running,
) -> None:
    old_dsn = running.runtime.settings.database.dsn
    running.rewrite("XTR = 150", "XTR = 160")
    running.rewrite("polling_timeout_seconds = 1", "polling_timeout_seconds = 2")
    text = running.path.read_text()
    running.path.write_text(text.replace("[http.public]\nport = 0", "[http.public]\nport = 1"))
    done: Reloaded = await running.reloader.reload()
    assert done.outcome == "applied"
    assert done.needs_restart == ["http.public.port"]
    assert sorted(done.applied) == ["bot.polling_timeout_seconds", "plans.month.prices.stars.XTR"]
    assert running.runtime.settings.http.public.port == 0
    assert running.runtime.settings.database.dsn == old_dsn
    assert running.runtime.settings.bot.polling_timeout_seconds == 2
    assert await running.price() == 160
    assert "needs a restart: http.public.port" in "".join(running.notifications())


async def test_sighup_reloads(running: Running) -> None:
    running.rewrite("XTR = 150", "XTR = 190")
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(PATIENCE):
        while running.runtime.info.get("reload") is None:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert running.runtime.info["reload"]["outcome"] == "applied"
    assert await running.price() == 190
