"""Update intake benchmark: vpnbot's durable inbox against plain aiogram bots.

    .venv/bin/python bench/intake_bench.py           # 5 rounds of 1,500 updates each
    .venv/bin/python bench/intake_bench.py --quick   # 2 rounds of 300 updates

Three bots, each in a process of its own, long-poll the project's Telegram emulator (in
this process, over real HTTP) and reply to every update:

- ``vpnbot``: the ``bot`` and ``bot-poller`` actors under the supervisor (the durable
  inbox: getUpdates, store, acknowledge, claim, the real ``/start`` handler with its user
  record, settle), on a database of the embedded PostgreSQL; as in ``vpnbot run``, the
  start's objects are frozen out of the garbage collector a little after ready
  (``runtime/app/_settle.py``), and the measured updates wait for that;
- ``aiogram+insert``: plain aiogram, ``dp.start_polling(bot)``, a handler that inserts a
  row through an asyncpg pool and answers (the way aiogram users write it);
- ``aiogram echo``: plain aiogram, ``dp.start_polling(bot)``, a handler that answers.

Each round starts each bot afresh (interleaved: vpnbot, insert, echo, then again), waits
until it polls, warms it up with 20 ``/start`` messages of other users, then injects N
``/start`` messages from 200 users at once (none of them known to the bot yet), and stops
when the emulator has seen N more ``sendMessage`` calls. Per bot and round: updates per second
(first update injected to last reply seen), CPU ms per update of the bot's process and of
PostgreSQL (from /proc, over the same window), and the emulator's own CPU share (this
process): near 100% of a core, the emulator is what limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CHATS = 200
WARM_UP = 20
"""Updates from other users answered before the measured ones: what a process does once
only (pydantic builds a model's validator on its first use) stays out of the figures."""
TICKS = os.sysconf("SC_CLK_TCK")
BOTS = ("vpnbot", "aiogram+insert", "aiogram echo")
ONLY = tuple(os.environ.get("INTAKE_BENCH_ONLY", ",".join(BOTS)).split(","))
PEER = "aiogram+insert"
SETTLED = "vpnbot: settled"
"""What the vpnbot process writes once its start's objects are frozen out of the collector,
as ``vpnbot run`` does a little after ready; the measured updates wait for it."""
T = TypeVar("T")


# -- the bots, each run as `intake_bench.py --serve KIND` ----------------------------------


def serve_plain(kind: str, api: str, dsn: str, token: str) -> None:
    import asyncpg
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message

    async def main() -> None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api))
        bot = Bot(token, session=session)
        dp = Dispatcher()
        pool = await asyncpg.create_pool(dsn) if kind == "aiogram+insert" else None

        if pool is not None:

            @dp.message()
            async def remember_and_answer(message: Message) -> None:
                assert pool is not None and message.from_user is not None
                await pool.execute(
                    "insert into bench_messages (chat_id, user_id, text) values ($1, $2, $3)",
                    message.chat.id,
                    message.from_user.id,
                    message.text,
                )
                await message.answer(f"Hello, {message.from_user.first_name}!")

        else:

            @dp.message()
            async def answer(message: Message) -> None:
                assert message.from_user is not None
                await message.answer(f"Hello, {message.from_user.first_name}!")

        await dp.start_polling(bot, handle_signals=True)

    asyncio.run(main())


def serve_vpnbot(api: str, dsn: str, token: str) -> None:
    import trio

    from runtime.access import Access
    from runtime.app._settle import settle_when_ready
    from runtime.billing import Billing
    from runtime.bot import TelegramBot
    from runtime.bridge import asyncio_loop
    from runtime.catalog import Catalog
    from runtime.config import Settings
    from runtime.logs import configure_logging
    from runtime.metrics import Metrics
    from runtime.plugin_api import Services
    from runtime.storage import Database
    from runtime.supervision import Supervisor

    class Alerts:
        def submit(self, alert: object) -> None:
            print(f"alert {alert}", file=sys.stderr, flush=True)

    configure_logging(fmt="json", level="warning")
    settings = Settings.model_validate(
        {
            "telegram": {"token": token, "api_base": api},
            "bot": {"mode": "polling", "polling_timeout_seconds": 10},
        }
    )

    async def main() -> None:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=2, max_size=8)
            try:
                services = Services(settings, Metrics(), instance_id=f"bench-{os.getpid()}")
                alerts = Alerts()
                services.provide_alerts(alerts)  # type: ignore[arg-type]
                services.provide_db(db)
                catalog = Catalog.from_settings(settings)
                services.provide_domain(
                    Billing(db, catalog, {}, alerts, balance_currency="RUB"),  # type: ignore[arg-type]
                    Access(db, catalog, {}, alerts),  # type: ignore[arg-type]
                )
                bot = TelegramBot(services)
                supervisor = Supervisor(bot.actors())
                async with trio.open_nursery() as nursery:

                    async def stop_on_signal() -> None:
                        with trio.open_signal_receiver(signal.SIGTERM) as signals:
                            async for _ in signals:
                                supervisor.request_shutdown()

                    async def settle() -> None:
                        await settle_when_ready(supervisor.ready)
                        print(SETTLED, file=sys.stderr, flush=True)

                    nursery.start_soon(stop_on_signal)
                    nursery.start_soon(settle)
                    await supervisor.run()
                    nursery.cancel_scope.cancel()
            finally:
                await db.close()

    profile = os.environ.get("INTAKE_BENCH_PROFILE")
    if not profile:
        trio.run(main)
        return
    if profile.endswith(".yappi"):  # every thread: the asyncio loop runs in one of its own
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
        try:
            trio.run(main)
        finally:
            yappi.stop()
            yappi.get_func_stats().save(profile, type="pstat")
        return
    import cProfile

    cProfile.runctx("trio.run(main)", globals(), {"trio": trio, "main": main}, profile)


# -- measuring -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as found:
            return [int(child) for child in found.read().split()]
    except OSError:
        return []


def server_cpu(postmaster: int) -> dict[int, float]:
    """CPU so far of the PostgreSQL server and each of its processes."""
    cpu: dict[int, float] = {}
    for pid in [postmaster, *children(postmaster)]:
        try:
            cpu[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return cpu


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


@dataclass
class Round:
    rate: float
    cpu_ms: float
    db_ms: float
    emulator_share: float
    errors: int = 0


async def _postmaster(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        backend: int = await conn.fetchval("select pg_backend_pid()")
        return parent_pid(backend)
    finally:
        await conn.close()


def run_stdlib(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on the stdlib's own loop: importing trio-asyncio changes what asyncio.run uses."""
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def _reset(dsn: str, kind: str) -> None:
    """A fresh start for each run: the emulator's update ids start again per bot token."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if kind == "vpnbot":
            from _databases import truncate

            await truncate(conn, "telegram_updates, leases, users")
        else:
            await conn.execute(
                "create table if not exists bench_messages (id bigserial primary key,"
                " chat_id bigint not null, user_id bigint not null, text text,"
                " created_at timestamptz not null default now())"
            )
            await conn.execute("truncate bench_messages")
    finally:
        await conn.close()


@contextmanager
def bot_process(
    kind: str, api: str, dsn: str, token: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The bot in a process of its own, its errors written to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--serve", kind, "--api", api, "--dsn", dsn]
    with log.open("wb") as errors:
        proc = subprocess.Popen([*command, "--token", token], env=env, stderr=errors)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def one_run(
    emulator: object, kind: str, dsn: str, postmaster: int, updates: int, number: int
) -> Round:
    import trio

    from runtime.testing.telegram import TelegramEmulator

    assert isinstance(emulator, TelegramEmulator)
    token = f"{700000 + number}:AAIntakeBenchToken{number:04d}".ljust(42, "x")
    bot_id = emulator.add_bot(token, username=f"intake_bench_{number}_bot")
    await trio.to_thread.run_sync(lambda: run_stdlib(_reset(dsn, kind)))
    users = [
        emulator.create_user(first_name=f"User{i}", language_code="en", bot=bot_id)
        for i in range(CHATS)
    ]
    warm = [
        emulator.create_user(first_name=f"Warm{i}", language_code="en", bot=bot_id)
        for i in range(WARM_UP)
    ]
    log = Path(tempfile.gettempdir()) / f"intake-bench-{os.getpid()}-{number}.log"
    with bot_process(kind, emulator.url, dsn, token, log) as proc:
        polls = emulator.counters["calls.getUpdates"]
        await emulator.wait_until(
            lambda: emulator.counters["calls.getUpdates"] > polls or proc.poll() is not None,
            timeout=180,
            what=f"{kind} to poll",
        )
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited with {proc.returncode}")
        sent = emulator.counters["calls.sendMessage"]
        for user in warm:
            emulator.send_command(user.id, "start", bot=bot_id)
        await emulator.wait_until(
            lambda: emulator.counters["calls.sendMessage"] - sent >= WARM_UP,
            timeout=120,
            what=f"{kind}'s replies to the warm-up",
        )
        if kind == "vpnbot":
            await emulator.wait_until(
                lambda: SETTLED in log.read_text(errors="replace"), timeout=120, what="the settle"
            )
        sent = emulator.counters["calls.sendMessage"]
        errors_before = failures(log)
        bot_before, db_before = cpu_seconds(proc.pid), server_cpu(postmaster)
        own_before, started = time.process_time(), time.perf_counter()
        for i in range(updates):
            emulator.send_command(users[i % CHATS].id, "start", bot=bot_id)
        await emulator.wait_until(
            lambda: emulator.counters["calls.sendMessage"] - sent >= updates,
            timeout=max(120.0, updates / 2),
            what=f"{kind}'s replies",
        )
        wall = time.perf_counter() - started
        bot_cpu = cpu_seconds(proc.pid) - bot_before
        db_cpu = spent(db_before, server_cpu(postmaster))
        own_cpu = time.process_time() - own_before
        errors = failures(log) - errors_before
    log.unlink()
    return Round(
        updates / wall, 1000 * bot_cpu / updates, 1000 * db_cpu / updates, own_cpu / wall, errors
    )


def failures(log: Path) -> int:
    """Tracebacks and error lines the bot wrote so far."""
    text = log.read_text(errors="replace")
    return text.count("Traceback (most recent call last)") + text.count('"level": "error"')


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


async def measure(dsn: str, rounds: int, updates: int) -> dict[str, list[Round]]:
    from runtime.testing.telegram import Limits, TelegramEmulator

    postmaster = await _postmaster_trio(dsn)
    results: dict[str, list[Round]] = {kind: [] for kind in ONLY}
    emulator = TelegramEmulator(limits=Limits.off())
    async with emulator.running():
        number = 0
        for round_number in range(rounds):
            for kind in ONLY:
                number += 1
                result = await one_run(emulator, kind, dsn, postmaster, updates, number)
                results[kind].append(result)
                print(
                    f"  round {round_number + 1} {kind:<15} {result.rate:7.1f} updates/s"
                    f"  {result.cpu_ms:5.2f} ms CPU/update (+{result.db_ms:.2f} in PostgreSQL)"
                    f"  emulator {100 * result.emulator_share:.0f}% of a core"
                    f"  errors {result.errors}"
                    f"  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    return results


async def _postmaster_trio(dsn: str) -> int:
    import trio

    return await trio.to_thread.run_sync(lambda: run_stdlib(_postmaster(dsn)))


def report(results: dict[str, list[Round]], updates: int) -> None:
    print()
    rounds_run = len(next(iter(results.values())))
    print(f"{updates} updates from {CHATS} chats per round, {rounds_run} rounds")
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'bot':<16}{'updates/s':>24}{'ms CPU/update':>24}{'ms PostgreSQL/update':>26}"
        f"{'emulator':>12}{'ratio':>8}"
    )
    peer_rate = statistics.median(r.rate for r in results.get(PEER, [Round(math.nan, 0, 0, 0)]))
    for kind, rounds in results.items():
        rate = statistics.median(r.rate for r in rounds)
        print(
            f"{kind:<16}"
            f"{span([r.rate for r in rounds], lambda x: f'{x:.0f}'):>24}"
            f"{span([r.cpu_ms for r in rounds], lambda x: f'{x:.2f}'):>24}"
            f"{span([r.db_ms for r in rounds], lambda x: f'{x:.2f}'):>26}"
            f"{100 * statistics.median(r.emulator_share for r in rounds):>11.0f}%"
            f"{rate / peer_rate:>7.2f}x"
        )
    print(f"ratio: updates/s against {PEER} (the goal: vpnbot >= 1.0x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300 updates")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--updates", type=int)
    parser.add_argument("--serve", choices=BOTS, help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "vpnbot":
        serve_vpnbot(args.api, args.dsn, args.token)
        return
    if args.serve is not None:
        serve_plain(args.serve, args.api, args.dsn, args.token)
        return
    rounds = args.rounds or (2 if args.quick else 5)
    updates = args.updates or (300 if args.quick else 1500)

    import trio
    from _databases import bench_databases

    with bench_databases({"intake": ("intake_bench", True)}) as dsns:
        print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
        results = trio.run(measure, dsns["intake"], rounds, updates)
    report(results, updates)


if __name__ == "__main__":
    main()
