"""Memory benchmark: `vpnbot run` against aiogram's echo bot, idle and through 10,000 updates.

    .venv/bin/python bench/memory_bench.py [--updates N] [--rounds N] [--quick]

One Telegram emulator (in this process, its history bounded) serves both contenders, each
a process of its own polling its own bot: `vpnbot run --config` (polling mode, on a fresh
migrated database of an embedded PostgreSQL per round) and `aiogram_echo_bot.py` (aiogram's
`start_polling`, what a user without durability would run). For each, in interleaved
rounds (the order alternates): ready (vpnbot: `/readyz` 200; the peer: its first
`getUpdates`), then idle for a while (VmRSS sampled every 0.2 s: the median), then N
updates (200 users, each sending `/start` and waiting for the reply before the next),
VmRSS read at each tenth of them, then idle again. The PostgreSQL server is a process of
its own and not counted. Printed: the medians and min-max over rounds, the difference to
the peer, and the growth from the first tenth of the updates to the last.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import trio
from _bytecode import compile_project
from _databases import bench_databases

from runtime.testing.telegram import Limits, Retention, SimUser, TelegramEmulator

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).with_name("aiogram_echo_bot.py")
USERS = 200
MB = 1024 * 1024
CHECKPOINTS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def token(bot_id: int) -> str:
    return f"{bot_id}:AAHmemoryBench{bot_id:021d}"


def config_text(*, dsn: str, operator: int, telegram: str, bot_token: str) -> str:
    return f"""
[service]
log_format = "json"
log_level = "warning"

[database]
dsn = "{dsn}"

[http]
port = {operator}

[http.public]
enabled = false

[telegram]
token = "{bot_token}"
api_base = "{telegram}"

[bot]
mode = "polling"
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Run:
    idle: float = 0.0
    """Median VmRSS (MB) idle after the start."""
    checkpoints: list[float] = field(default_factory=list)
    """VmRSS (MB) after each tenth of the updates."""
    after: float = 0.0
    """Median VmRSS (MB) idle after the updates."""
    seconds: float = 0.0
    """How long the updates took."""


async def quiet_median(pid: int, seconds: float) -> float:
    samples = []
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        samples.append(rss(pid))
        await trio.sleep(0.2)
    return statistics.median(samples) / MB


async def updates(emulator: TelegramEmulator, bot: int, total: int, pid: int, run: Run) -> None:
    """``total`` /start messages from USERS users, each waiting for its reply."""
    done = 0
    step = max(1, total // CHECKPOINTS)
    users = [emulator.create_user(first_name=f"U{i}") for i in range(USERS)]

    async def user_sends(user: SimUser, count: int) -> None:
        nonlocal done
        for _ in range(count):
            sent = user.send_command("start", bot=bot)
            await user.wait_for_message(after=sent, timeout=600, bot=bot)
            done += 1
            if done % step == 0:
                run.checkpoints.append(rss(pid) / MB)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, user in enumerate(users):
            nursery.start_soon(user_sends, user, total // USERS + (i < total % USERS))
    run.seconds = time.perf_counter() - started


async def contender(
    process: trio.Process,
    ready: Callable[[], Awaitable[bool]],
    emulator: TelegramEmulator,
    bot: int,
    total: int,
    quiet: float,
) -> Run:
    run = Run()
    try:
        with trio.fail_after(300):
            while not await ready():
                if process.poll() is not None:
                    raise RuntimeError(f"exited with {process.returncode} before it was ready")
                await trio.sleep(0.05)
        run.idle = await quiet_median(process.pid, quiet)
        await updates(emulator, bot, total, process.pid, run)
        run.after = await quiet_median(process.pid, quiet)
    finally:
        process.terminate()
        await process.wait()
    return run


async def peer_run(emulator: TelegramEmulator, bot_id: int, total: int, quiet: float) -> Run:
    bot = emulator.add_bot(token(bot_id), username=f"peer_{bot_id}_bot")
    env = {**os.environ, "BOT_TOKEN": token(bot_id), "TELEGRAM_API": emulator.url}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(PEER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    async def ready() -> bool:
        return emulator.polls(bot=bot) > 0

    return await contender(process, ready, emulator, bot, total, quiet)


async def vpnbot_run(
    emulator: TelegramEmulator, bot_id: int, dsn: str, workdir: Path, total: int, quiet: float
) -> Run:
    bot = emulator.add_bot(token(bot_id), username=f"vpnbot_{bot_id}_bot")
    operator = free_port()
    config = workdir / f"vpnbot-{bot_id}.toml"
    config.write_text(
        config_text(dsn=dsn, operator=operator, telegram=emulator.url, bot_token=token(bot_id))
    )
    with (workdir / "vpnbot.log").open("ab") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{operator}/readyz", timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    return await contender(process, ready, emulator, bot, total, quiet)


async def measure(
    dsns: list[str], total: int, quiet: float, workdir: Path
) -> tuple[list[Run], list[Run]]:
    emulator = TelegramEmulator(
        limits=Limits.off(), retention=Retention(per_chat=10, updates=1000, calls=1000)
    )
    peer: list[Run] = []
    vpnbot: list[Run] = []
    async with emulator.running():
        for round_, dsn in enumerate(dsns):
            peer_id, vpnbot_id = 610000000 + round_, 620000000 + round_
            if round_ % 2:
                vpnbot.append(await vpnbot_run(emulator, vpnbot_id, dsn, workdir, total, quiet))
                peer.append(await peer_run(emulator, peer_id, total, quiet))
            else:
                peer.append(await peer_run(emulator, peer_id, total, quiet))
                vpnbot.append(await vpnbot_run(emulator, vpnbot_id, dsn, workdir, total, quiet))
    return peer, vpnbot


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f} to {max(values):.1f})"


def report(name: str, runs: list[Run]) -> None:
    growth = [r.checkpoints[-1] - r.checkpoints[0] for r in runs]
    print(
        f"  {name:30} {spread([r.idle for r in runs]):>24}"
        f" {spread([r.checkpoints[-1] for r in runs]):>24}"
        f" {spread([r.after for r in runs]):>24} {spread(growth):>24}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="1 round, 1,000 updates, 5 s idle")
    args = parser.parse_args()
    total, rounds, quiet = args.updates, args.rounds, args.quiet_seconds
    if args.quick:
        total, rounds, quiet = 1_000, 1, 5.0
    compile_project()
    before = load()
    names = {f"r{i}": (f"bench_memory_{i}", True) for i in range(rounds)}
    with bench_databases(names) as dsns, tempfile.TemporaryDirectory(prefix="vpnbot-mem-") as tmp:
        peer, vpnbot = trio.run(
            measure, [dsns[f"r{i}"] for i in range(rounds)], total, quiet, Path(tmp)
        )
    print(
        f"RSS in MB, {rounds} interleaved round(s), {total} updates from {USERS} users each"
        f" (load {before} before, {load()} after)"
    )
    print(
        f"  {'':30} {'idle':>24} {'after the updates':>24} {'idle after':>24}"
        f" {'growth 1st to last tenth':>24}"
    )
    report("plain aiogram (start_polling)", peer)
    report("vpnbot run (polling)", vpnbot)
    difference = [v.idle - p.idle for v, p in zip(vpnbot, peer, strict=True)]
    print(f"  vpnbot - aiogram, idle: {spread(difference)} MB (goal: at most 25 MB)")
    for name, runs in (("aiogram", peer), ("vpnbot", vpnbot)):
        speed = [total / r.seconds for r in runs]
        tenths = " ".join(f"{mb:.1f}" for mb in runs[-1].checkpoints)
        print(f"  {name} answered {spread(speed)} updates/s; last round, RSS by tenth: {tenths}")


if __name__ == "__main__":
    main()
