"""Crossing benchmark: what one trio -> asyncio -> trio call costs, against two plain threads
passing a byte back and forth, in the same run, on every CPU and on one.

    .venv/bin/python bench/crossing_bench.py [--calls N] [--rounds N]

The crossing is ``runtime.bridge.run_asyncio`` of a coroutine that returns at once: every
unit of work and every Telegram call pays it once. The baseline is the least any two-thread
design pays for a round trip: two wake-ups of a sleeping thread. Each measurement runs in a
process of its own, once free to use every CPU and once pinned to one
(``os.sched_setaffinity``), where waking the other thread needs no other CPU. Prints the
wall time and CPU time per round trip (median over the rounds) and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("crossing", "threads")


def crossing(calls: int) -> tuple[float, float]:
    sys.path.insert(0, str(ROOT))
    import trio

    from runtime.bridge import asyncio_loop, run_asyncio

    async def nothing() -> None:
        return None

    async def main() -> tuple[float, float]:
        async with asyncio_loop():
            for _ in range(100):  # warm up
                await run_asyncio(nothing)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await run_asyncio(nothing)
            return time.perf_counter() - wall, time.process_time() - cpu

    result: tuple[float, float] = trio.run(main)
    return result


def threads(calls: int) -> tuple[float, float]:
    there, back = os.pipe(), os.pipe()

    def echo() -> None:
        while os.read(there[0], 1) == b"x":
            os.write(back[1], b"x")

    thread = threading.Thread(target=echo)
    thread.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        os.write(there[1], b"x")
        os.read(back[0], 1)
    result = time.perf_counter() - wall, time.process_time() - cpu
    os.write(there[1], b"q")
    thread.join()
    return result


def _child(kind: str, calls: int, pinned: bool) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--calls", str(calls)]
        + (["--pinned"] if pinned else []),
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = json.loads(out.stdout)
    return wall / calls, cpu / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--pinned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.pinned:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps((crossing if args.child == "crossing" else threads)(args.calls)))
        return
    load = os.getloadavg()[0]
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for pinned in (False, True):
            for kind in KINDS:
                results.setdefault((kind, pinned), []).append(_child(kind, args.calls, pinned))
    print(f"round trips between two threads, {args.calls} per run, {args.rounds} rounds")
    print(f"  {'what':<34} {'CPUs':<5} {'wall us':>8} {'CPU us':>7}")
    for (kind, pinned), runs in results.items():
        what = (
            "trio -> asyncio -> trio (bridge)"
            if kind == "crossing"
            else "two threads, a byte each way"
        )
        print(
            f"  {what:<34} {'one' if pinned else 'all':<5}"
            f" {statistics.median(w for w, _ in runs) * 1e6:>8.1f}"
            f" {statistics.median(c for _, c in runs) * 1e6:>7.1f}"
        )
    print(
        f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after,"
        f" on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
