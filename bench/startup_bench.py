"""Start-time benchmark: `vpnbot run` until ready vs a plain aiogram bot until its first
poll, and every command that does not run the bot vs `python -c pass`.

    .venv/bin/python bench/startup_bench.py [--rounds N] [--quick]

Start: the sandbox (`vpnbot run` without a config file: the whole runtime, embedded
PostgreSQL with its data directory already initialised, migrations, HTTP listeners, the
bot) from exec until it sends systemd's `READY=1` (every critical actor started: the bot's
poller included; `/readyz` is checked to answer 200 then), against aiogram's own
`start_polling` echo bot (`aiogram_echo_bot.py`) from exec until the Telegram emulator sees
its first `getUpdates`. The project is compiled to bytecode first, as an installed one is.
Commands: the wall and CPU time of `vpnbot --help`, `check-config`, `plugins`, `status`,
`config-reference`, each in a fresh interpreter, against `python -c pass` and
`python -c "import aiogram.types"`. Rounds are interleaved (the order rotates each round);
medians and min-max are printed, with the load average before and after each part.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio
from _bytecode import compile_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.testing.telegram import SANDBOX_RETENTION, Limits, TelegramEmulator

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).with_name("aiogram_echo_bot.py")
PEER_TOKEN = "223344556:AAHstartupBenchPeerToken0123456789a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f} to {max(values):.2f})"


# -- Commands -------------------------------------------------------------------------------


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one process, from exec to exit."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


PEAK_RSS = "\nimport re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
"""Appended to each import: the interpreter prints its own peak RSS in KiB (a fork's
``ru_maxrss`` would count the parent's pages from before the exec)."""
RUN_PATH = "import runtime.app._runtime, runtime.sandbox, runtime.bot._actor"
"""What `vpnbot run` imports before its bot can answer (nothing is started)."""
AIOGRAM = "import aiogram, aiogram.types, aiogram.client.session.aiohttp"


def import_rounds(pythons: Sequence[str], rounds: int) -> None:
    """The import cost of aiogram and of the whole run path under each interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cases = [
        (python, name, [python, "-c", code])
        for python in pythons
        for name, code in (("pass", "pass"), ("aiogram", AIOGRAM), ("run path", RUN_PATH))
    ]

    def run(argv: list[str]) -> tuple[float, float, float]:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*argv[:-1], argv[-1] + PEAK_RSS], cwd=ROOT, env=env, stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        output = process.stdout.read()
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0
        wall = time.perf_counter() - started
        return wall, usage.ru_utime + usage.ru_stime, int(output.split()[-1]) / 1024

    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    before = load()
    for round_ in range(rounds):
        shift = round_ % len(cases)
        for python, name, argv in cases[shift:] + cases[:shift]:
            results.setdefault((python, name), []).append(run(argv))
    print(f"\nimports, {rounds} interleaved rounds (load {before} before, {load()} after)")
    header = f"{'wall s: median (min-max)':>26} {'CPU s':>6} {'peak MB':>7}"
    print(f"  {'interpreter':28} {'import':9} {header}")
    for (python, name), samples in results.items():
        version = subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        walls = [wall for wall, _, _ in samples]
        cpu = statistics.median(c for _, c, _ in samples)
        rss = statistics.median(r for _, _, r in samples)
        print(f"  Python {version:21} {name:9} {spread(walls):>26} {cpu:6.2f} {rss:7.0f}")


def command_rounds(rounds: int) -> None:
    python = sys.executable
    vpnbot = [python, str(ROOT / "supervisor.py")]
    closed = free_port()
    commands = {
        "python -c pass": [python, "-c", "pass"],
        'python -c "import aiogram.types"': [python, "-c", "import aiogram.types"],
        "vpnbot --help": [*vpnbot, "--help"],
        "vpnbot check-config": [*vpnbot, "check-config"],
        "vpnbot plugins": [*vpnbot, "plugins"],
        "vpnbot status (nothing listening)": [
            *vpnbot,
            "status",
            "--url",
            f"http://127.0.0.1:{closed}",
        ],
        "vpnbot config-reference": [*vpnbot, "config-reference"],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VPNBOT_CONFIG", None)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    before = load()
    names = list(commands)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            seconds, cpu_seconds = timed(commands[name], env)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    print(f"\ncommands, {rounds} interleaved rounds (load {before} before, {load()} after)")
    print(f"  {'command':36} {'wall s: median (min-max)':>26} {'CPU s: median':>14} {'x pass':>7}")
    baseline = statistics.median(wall["python -c pass"])
    for name in names:
        ratio = statistics.median(wall[name]) / baseline
        print(
            f"  {name:36} {spread(wall[name]):>26} {statistics.median(cpu[name]):14.2f}"
            f" {ratio:7.1f}"
        )


# -- Start ----------------------------------------------------------------------------------


async def wait_ready(notify: trio.socket.SocketType, process: trio.Process) -> None:
    """Until the service sends systemd's ``READY=1`` (every critical actor started).
    Waiting on the notification, not polling ``/readyz``, leaves the service's CPU to its
    start."""
    while True:
        with trio.move_on_after(0.2):
            if b"READY=1" in (await notify.recv(4096)).split(b"\n"):
                return
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited with {process.returncode} before it was ready")


async def check_ready(port: int) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    if answer.status_code != 200:
        raise RuntimeError(f"READY=1 was sent but /readyz answers {answer.status_code}")


async def sandbox_start(workdir: Path, log: Path) -> tuple[float, float]:
    """Seconds from exec to the sandbox's ``READY=1`` (``/readyz`` is checked to answer 200
    then), and the CPU seconds it used until then; it is stopped after."""
    port = free_port()
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(workdir / "notify.sock"))
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "VPNBOT_CONFIG")},
        "NOTIFY_SOCKET": str(workdir / "notify.sock"),
        "PYTHONPATH": str(ROOT),
        "VPNBOT_HTTP__PORT": str(port),
        "VPNBOT_HTTP__PUBLIC__PORT": "0",
        "VPNBOT_SERVICE__LOG_FORMAT": "json",
        "VPNBOT_DATABASE__DATA_DIR": str(workdir / "pgdata"),
    }
    argv = [sys.executable, str(ROOT / "supervisor.py"), "run"]
    argv += ["--telegram-port", str(free_port())]
    with notify, log.open("ab") as output:
        started = time.perf_counter()
        process = await trio.lowlevel.open_process(
            argv, cwd=workdir, env=env, stdout=output, stderr=output
        )
        try:
            with trio.fail_after(300):
                await wait_ready(notify, process)
                seconds = time.perf_counter() - started
                cpu = cpu_seconds(process.pid)
                await check_ready(port)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            (workdir / "notify.sock").unlink()
    if code != 0:
        raise RuntimeError(f"the sandbox exited with {code}; see {log}")
    return seconds, cpu


async def peer_start(emulator: TelegramEmulator, bot: int) -> tuple[float, float]:
    """Seconds from exec to the emulator seeing the peer's first getUpdates, and the CPU
    seconds it used until then."""
    polls = emulator.polls(bot=bot)
    env = {**os.environ, "BOT_TOKEN": PEER_TOKEN, "TELEGRAM_API": emulator.url}
    started = time.perf_counter()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(PEER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(300):
            while emulator.polls(bot=bot) == polls:
                if process.poll() is not None:
                    raise RuntimeError(f"the peer exited with {process.returncode}")
                await trio.sleep(0.005)
        return time.perf_counter() - started, cpu_seconds(process.pid)
    finally:
        process.terminate()
        await process.wait()


async def start_rounds(rounds: int, workdir: Path) -> None:
    log = workdir / "sandbox.log"
    await sandbox_start(workdir, log)  # initdb: the rounds start with a warm data directory
    emulator = TelegramEmulator(limits=Limits.off(), retention=SANDBOX_RETENTION)
    sandbox: list[tuple[float, float]] = []
    peer: list[tuple[float, float]] = []
    async with emulator.running():
        bot = emulator.add_bot(PEER_TOKEN, username="startup_peer_bot")
        before = load()
        for round_ in range(rounds):
            if round_ % 2:
                peer.append(await peer_start(emulator, bot))
                sandbox.append(await sandbox_start(workdir, log))
            else:
                sandbox.append(await sandbox_start(workdir, log))
                peer.append(await peer_start(emulator, bot))
    print(f"\nstart, {rounds} interleaved rounds (load {before} before, {load()} after)")
    print(f"  {'':52} {'seconds: median (min-max)':>26} {'CPU s until then':>17}")
    for name, runs in (
        ("vpnbot sandbox, exec → READY=1 (warm PostgreSQL)", sandbox),
        ("plain aiogram start_polling, exec → first getUpdates", peer),
    ):
        walls = [wall for wall, _ in runs]
        print(f"  {name:52} {spread(walls):>26} {statistics.median(c for _, c in runs):17.2f}")
    difference = [s[0] - p[0] for s, p in zip(sandbox, peer, strict=True)]
    ratio = statistics.median(w for w, _ in sandbox) / statistics.median(w for w, _ in peer)
    print(
        f"  vpnbot - aiogram per round: {spread(difference)} s;"
        f" ratio of medians {ratio:.2f} (goal: difference ≤ 1 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="EXE",
        help="also time the imports under this interpreter (a venv with the project"
        " installed); repeat for several; only the imports are timed",
    )
    parser.add_argument("--imports-only", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    import_rounds(args.python or [sys.executable], rounds)
    if args.imports_only:
        return
    compile_project()
    command_rounds(rounds)
    with tempfile.TemporaryDirectory(prefix="vpnbot-startup-") as tmp:
        trio.run(start_rounds, rounds, Path(tmp))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\nCPU of every process started: {usage.ru_utime + usage.ru_stime:.1f} s")


if __name__ == "__main__":
    main()
