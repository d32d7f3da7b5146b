"""Recovery benchmark: how soon replies go out once Telegram answers again after an outage.

    .venv/bin/python bench/telegram_recovery_bench.py [--quick]

Starts its own embedded PostgreSQL in a temporary directory and the Telegram emulator on
loopback, runs the bot's actors (polling) under a supervisor, measures, prints a table and
removes everything. Three scenarios, each with users of their own sending /start:

- *no outage*: the time from /start to the reply (the baseline);
- *outage, woken*: Telegram's sending is down (5xx; getUpdates still works, so the updates
  are stored and their replies fail) while the users write, then it comes back: the time
  from the end of the outage to each reply;
- *outage, not woken*: the same with the wake-up switched off, so each update waits for
  its own fallback delay (as long as the outage so far), as every update did before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _databases import bench_databases

from runtime.alerts import Alert
from runtime.bot import TelegramBot
from runtime.bridge import asyncio_loop
from runtime.config import Settings
from runtime.logs import configure_logging
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Database
from runtime.supervision import Supervisor
from runtime.testing.telegram import DEFAULT_TOKEN, SimUser, TelegramEmulator

DATABASES = {"bench": ("bench_recovery", True)}


class Alerts:
    def submit(self, alert: Alert) -> None:
        pass


@dataclass(frozen=True)
class Result:
    scenario: str
    seconds: list[float]


async def replies_after(
    emulator: TelegramEmulator, users: list[SimUser], since: float
) -> list[float]:
    """Seconds from ``since`` (``time.monotonic``) to each user's first reply."""
    waiting = {user.id for user in users}
    seconds: list[float] = []
    while waiting:
        for user_id in list(waiting):
            if emulator.messages(user_id, from_bot=True):
                seconds.append(time.monotonic() - since)
                waiting.discard(user_id)
        await trio.sleep(0.01)
    return seconds


async def scenario(
    name: str,
    emulator: TelegramEmulator,
    bot: TelegramBot,
    users: list[SimUser],
    outage: float,
    *,
    woken: bool,
) -> Result:
    original: Callable[[], Awaitable[int]] = bot.processor.telegram_answers_again

    async def not_woken() -> int:
        return 0

    bot.processor.telegram_answers_again = original if woken else not_woken  # type: ignore[method-assign]
    try:
        if outage <= 0:
            started = time.monotonic()
            for user in users:
                user.send_command("start")
            with trio.fail_after(120):
                return Result(name, await replies_after(emulator, users, started))
        emulator.start_outage(502, spared=["getUpdates"])
        pause = outage / len(users)
        for user in users:  # they write while Telegram is away
            user.send_command("start")
            await trio.sleep(pause)
        emulator.end_outage()
        ended = time.monotonic()
        with trio.fail_after(outage * 2 + 120):
            return Result(name, await replies_after(emulator, users, ended))
    finally:
        bot.processor.telegram_answers_again = original  # type: ignore[method-assign]


async def run(dsn: str, outage: float, users_per_scenario: int) -> list[Result]:
    emulator = TelegramEmulator(DEFAULT_TOKEN)
    async with emulator.running() as url, asyncio_loop():
        settings = Settings.model_validate(
            {
                "telegram": {"token": DEFAULT_TOKEN, "api_base": url},
                "bot": {"mode": "polling", "polling_timeout_seconds": 1},
            }
        )
        db = await Database.connect(dsn, min_size=1, max_size=8)
        try:
            services = Services(settings, Metrics(), instance_id="bench")
            services.provide_db(db)
            services.provide_alerts(Alerts())  # type: ignore[arg-type]
            bot = TelegramBot(services, idle_seconds=0.2)
            supervisor = Supervisor(bot.actors())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervisor.run)
                with trio.fail_after(30):
                    await supervisor.ready.wait()
                results = []
                for name, length, woken in (
                    ("no outage", 0.0, True),
                    ("outage, woken", outage, True),
                    ("outage, not woken", outage, False),
                ):
                    users = [
                        emulator.create_user(first_name=f"U{i}", language_code="en")
                        for i in range(users_per_scenario)
                    ]
                    results.append(await scenario(name, emulator, bot, users, length, woken=woken))
                supervisor.request_shutdown()
        finally:
            await db.close()
    return results


def report(results: list[Result], outage: float, users: int, total: float) -> str:
    baseline = statistics.median(results[0].seconds)
    lines = [
        f"replies to /start: {users} users per scenario, outages of {outage:.0f} s "
        "(sending down, getUpdates up), seconds from the end of the outage",
        f"  {'scenario':<20}{'median s':>10}{'max s':>9}{'ratio':>9}",
    ]
    for result in results:
        median = statistics.median(result.seconds)
        lines.append(
            f"  {result.scenario:<20}{median:>10.2f}{max(result.seconds):>9.2f}"
            f"{median / baseline:>8.1f}x"
        )
    lines += [
        "  ratio: median against the median reply time without an outage",
        "",
        f"total {total:.1f} s",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s outages, 10 users")
    args = parser.parse_args()
    outage, users = (5.0, 10) if args.quick else (20.0, 20)
    configure_logging(fmt="console", level="critical")
    started = time.monotonic()
    with bench_databases(DATABASES) as dsns:
        results = trio.run(run, dsns["bench"], outage, users)
    print(report(results, outage, users, time.monotonic() - started))


if __name__ == "__main__":
    main()
