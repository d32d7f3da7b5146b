"""Memory under attack: the resident size of a real `vpnbot run`, idle and under hostile load.

    .venv/bin/python bench/memory_attack_bench.py [--users N] [--quick]

Starts its own embedded PostgreSQL in a temporary directory, a migrated database, the
Telegram emulator (webhook mode), a fake Marzban and a fake CryptoBot, then `vpnbot run
--config` as a process of its own, and reads its memory from /proc (VmRSS every 0.2 s,
VmHWM: the kernel's peak) through three phases:

- idle: ready, nothing happening, for 20 s;
- load: N users at once, each sending /start, taking the free trial and waiting for its
  access link (webhook deliveries, handlers, VPN activations, QR codes, notifications),
  while 16 clients upload endless chunked bodies to the public listener, 100 connections
  trickle request heads, and /status and /metrics are scraped 10 times a second;
- after: the load stopped, for 20 s.

The figures are what `MemoryHigh=`/`MemoryMax=` in systemd/vpnbot.service come from
(systemd/README.md says how). The PostgreSQL server is a process of its own and not
counted: under systemd with the embedded server, add its own figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import trio
from _databases import bench_databases
from _service import CRYPTO_TOKEN, PANEL_PASSWORD, PANEL_USER, free_port

from runtime.i18n import load_translator
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Limits, SimUser, TelegramEmulator

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456789:AAHmemoryBenchBotToken0123456789abc"
SECRET = "memory-bench-secret"
MB = 1024 * 1024


def config_text(
    *, dsn: str, operator: int, public: int, telegram: str, panel: str, crypto: str
) -> str:
    return f"""
[service]
log_format = "json"
log_level = "warning"

[database]
dsn = "{dsn}"

[http]
port = {operator}

[http.public]
port = {public}

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"

[bot]
mode = "webhook"
webhook_url = "http://127.0.0.1:{public}/telegram/hook"
webhook_secret = "{SECRET}"

[notifier]
rate_per_second = 100

[trial]
enabled = true
backend = "marzban"
duration_hours = 24

[plans.month]
title = {{ en = "1 month" }}
duration_days = 30
backend = "marzban"
prices = {{ stars = {{ XTR = 150 }}, card = {{ RUB = 19900 }} }}

[plugins.settings.marzban]
base_url = "{panel}"
username = "{PANEL_USER}"
password = "{PANEL_PASSWORD}"

[plugins.settings.cryptobot]
token = "{CRYPTO_TOKEN}"
base_url = "{crypto}/api/"

[plugins.settings.telegram_payments]
card_provider_token = "381764678:TEST:card-provider"

[actors.activation_worker]
interval_seconds = 0.5
"""


class Memory:
    """Samples a process's VmRSS; reads its VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[str, int]] = []
        self.phase = "start"

    def read(self) -> dict[str, int]:
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
        return found

    async def sample(self) -> None:
        while True:
            self.samples.append((self.phase, self.read()["VmRSS"]))
            await trio.sleep(0.2)

    def of(self, phase: str) -> list[int]:
        return [rss for p, rss in self.samples if p == phase]


def chunks() -> Iterator[bytes]:
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    while True:
        yield chunk


async def endless_uploads(port: int) -> None:
    """Uploads that never end, again and again: each is cut off at the limit."""
    head = (
        b"POST /webhooks/payments/cryptobot HTTP/1.1\r\nHost: vpnbot\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(head)
                for chunk in chunks():
                    await stream.send_all(chunk)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.sleep(0.1)


async def trickling_heads(port: int) -> None:
    """A request head a byte at a time, reopened whenever the server hangs up."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"POST /telegram/hook HTTP/1.1\r\nHost: vpnbot\r\n")
                while True:
                    await stream.send_all(b"X")
                    await trio.sleep(0.5)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.sleep(0.01)


async def scrapes(port: int) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            await client.get(f"http://127.0.0.1:{port}/status")
            await client.get(f"http://127.0.0.1:{port}/metrics")
            await trio.sleep(0.2)


async def user_journey(user: SimUser, trial_button: str) -> None:
    hello = user.send_command("start")
    menu = await user.wait_for_message(
        lambda m: any(b.text == trial_button for row in m.buttons() for b in row),
        after=hello,
        timeout=600,
    )
    user.press(menu, text=trial_button)
    started = await user.wait_for_message(lambda m: "trial has started" in m.content, timeout=600)
    await user.wait_for_message(
        lambda m: m.photo is not None or "://" in m.content, after=started, timeout=600
    )


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def start(config: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)],
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def measure(dsn: str, users: int, quiet_seconds: float, workdir: Path) -> dict[str, float]:
    emulator = TelegramEmulator(TOKEN, limits=Limits())
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        operator, public = free_port(), free_port()
        config = workdir / "vpnbot.toml"
        config.write_text(
            config_text(
                dsn=dsn,
                operator=operator,
                public=public,
                telegram=emulator.url,
                panel=panel.url,
                crypto=crypto.url,
            )
        )
        log = (workdir / "vpnbot.log").open("w")
        process = start(config, log)
        try:
            with trio.fail_after(120):
                while not await ready(operator):  # noqa: ASYNC110 - polling another process
                    await trio.sleep(0.25)
            memory = Memory(process.pid)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(memory.sample)
                memory.phase = "idle"
                await trio.sleep(quiet_seconds)
                idle_peak = memory.read()["VmHWM"]
                memory.phase = "load"
                started = time.monotonic()
                async with trio.open_nursery() as attack:
                    for _ in range(16):
                        attack.start_soon(endless_uploads, public)
                    for _ in range(100):
                        attack.start_soon(trickling_heads, public)
                    attack.start_soon(scrapes, operator)
                    button = load_translator().t("en", "menu.trial")
                    async with trio.open_nursery() as journeys:
                        for i in range(users):
                            user = emulator.create_user(10_000 + i, first_name=f"User{i}")
                            journeys.start_soon(user_journey, user, button)
                    attack.cancel_scope.cancel()
                load_seconds = time.monotonic() - started
                load_peak = memory.read()["VmHWM"]
                memory.phase = "after"
                await trio.sleep(quiet_seconds)
                nursery.cancel_scope.cancel()
        finally:
            process.terminate()
            process.wait(timeout=60)
            log.close()
    idle = memory.of("idle")
    after = memory.of("after")
    return {
        "idle_median": statistics.median(idle) / MB,
        "idle_peak": idle_peak / MB,
        "load_seconds": load_seconds,
        "load_max": max(memory.of("load")) / MB,
        "load_peak": load_peak / MB,
        "after_median": statistics.median(after) / MB,
        "delivered": emulator.counters["webhook.delivered"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="50 users, 5 s quiet phases")
    args = parser.parse_args()
    users = 50 if args.quick else args.users
    quiet = 5.0 if args.quick else 20.0
    with (
        bench_databases({"main": ("bench_memory", True)}) as dsns,
        tempfile.TemporaryDirectory(prefix="vpnbot-memory-") as tmp,
    ):
        result = trio.run(measure, dsns["main"], users, quiet, Path(tmp))
    print(f"vpnbot run, webhook mode: {users} users through /start and the trial at once,")
    print("16 endless chunked uploads, 100 trickling heads, /status and /metrics at 5/s each")
    print("  phase  RSS MB (median or max)  peak RSS MB (VmHWM)")
    print(f"  idle   {result['idle_median']:22.1f}  {result['idle_peak']:19.1f}")
    print(f"  load   {result['load_max']:22.1f}  {result['load_peak']:19.1f}")
    print(f"  after  {result['after_median']:22.1f}")
    print(
        f"  load lasted {result['load_seconds']:.1f} s;"
        f" {result['delivered']} webhook updates delivered"
    )


if __name__ == "__main__":
    main()
