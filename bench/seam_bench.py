"""Seam benchmark: a payment-shaped transaction on plain asyncio, and from trio through the
seam on each kind of asyncio loop.

    .venv/bin/python bench/seam_bench.py [--quick] [--tasks N]

Starts its own embedded PostgreSQL in a temporary directory, measures, prints a table and
removes everything. Every path runs in a process of its own, so the plain asyncio baseline
never sees trio-asyncio (importing it patches asyncio and slows it down); the paths take
turns, round after round, and the ratios compare numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

POOL_SIZE = 8
WARM_UP = 50
"""Untimed units before each timed part: connections open, statements prepared."""

PATHS: dict[str, tuple[str, str]] = {
    "plain asyncio + asyncpg": ("plain", "asyncio"),
    "plain uvloop + asyncpg": ("plain", "uvloop"),
    "seam, uvloop thread": ("seam", "uvloop"),
    "seam, asyncio thread": ("seam", "asyncio"),
    "seam, trio-asyncio": ("seam", "trio-asyncio"),
    "seam, uvloop, reset kept": ("seam", "uvloop+reset"),
}
BASELINE = "plain asyncio + asyncpg"

_SCHEMA = """
create table bench_payments (
    provider text not null,
    charge_id text not null,
    user_id bigint not null,
    amount_minor integer not null,
    state text not null default 'received',
    received_at timestamptz not null default now(),
    primary key (provider, charge_id)
);
create table bench_subscriptions (user_id bigint primary key, paid_until timestamptz not null);
insert into bench_subscriptions select i, now() from generate_series(0, 999) as i;
"""
_RECORD = (
    "insert into bench_payments (provider, charge_id, user_id, amount_minor)"
    " values ($1, $2, $3, $4) on conflict (provider, charge_id) do nothing"
)
_CREDIT = (
    "update bench_payments set state = 'credited'"
    " where provider = $1 and charge_id = $2 and state = 'received' returning user_id"
)
_EXTEND = (
    "update bench_subscriptions set paid_until = greatest(paid_until, now()) + interval '30 days'"
    " where user_id = $1"
)
_READ = "select paid_until from bench_subscriptions where user_id = $1"


async def pay(conn: Any, charge: str, user: int) -> datetime | None:
    """The business transaction: record the charge once, move it forward only from
    ``received``, extend the subscription, read the new expiry (4 statements)."""
    await conn.execute(_RECORD, "stars", charge, user, 150)
    if await conn.fetchval(_CREDIT, "stars", charge) is None:
        return None  # a duplicate: credited before
    await conn.execute(_EXTEND, user)
    paid_until: datetime = await conn.fetchval(_READ, user)
    return paid_until


@dataclass(frozen=True)
class Sizes:
    units: int
    rounds: int


FULL = Sizes(units=600, rounds=5)
QUICK = Sizes(units=120, rounds=2)


# -- one process per path and round ------------------------------------------------------------


async def _timed(
    units: int, tasks: int, one: Callable[[int], Awaitable[Any]], gather: Callable[..., Any]
) -> dict[str, dict[str, float]]:
    """Sequential, then ``tasks`` at once: wall and CPU seconds of each (asyncio or trio)."""
    for i in range(WARM_UP):
        await one(-i - 1)
    parts: dict[str, dict[str, float]] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(units):
        await one(i)
    parts["sequential"] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    counter = iter(range(units, 2 * units))

    async def worker() -> None:
        for i in counter:
            await one(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await gather(worker, tasks)
    parts["concurrent"] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    return parts


def plain_worker(loop: str, dsn: str, units: int, tasks: int, tag: str) -> dict[str, Any]:
    """What an asyncio user writes: a pool, and ``async with`` a connection and a
    transaction per payment, under ``asyncio.run`` (or ``uvloop.run``)."""
    import asyncpg

    async def gather(worker: Callable[[], Awaitable[None]], n: int) -> None:
        await asyncio.gather(*(worker() for _ in range(n)))

    async def main() -> dict[str, dict[str, float]]:
        async with asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE) as pool:
            await pool.execute("truncate bench_payments")

            async def one(i: int) -> Any:
                async with pool.acquire() as conn, conn.transaction():
                    return await pay(conn, f"{tag}-{i}", i % 1000)

            return await _timed(units, tasks, one, gather)

    if loop == "uvloop":
        import uvloop

        parts = uvloop.run(main())
    else:
        parts = asyncio.run(main())
    return {"parts": parts, "crossings": 0.0}


def seam_worker(kind: str, dsn: str, units: int, tasks: int, tag: str) -> dict[str, Any]:
    """The project's way: trio code, ``Database.transaction(unit)``: one crossing per payment.

    ``uvloop+reset``: the same on a pool of asyncpg's own connections, which reset on every
    release: what the seam costs without the storage layer's skipped reset.
    """
    sys.path.insert(0, str(HERE.parent))
    import asyncpg
    import trio

    from runtime.bridge import asyncio_loop, run_asyncio, stats
    from runtime.storage import Connection, Database

    kind, _, reset = kind.partition("+")

    async def connect() -> Database:
        if not reset:
            return await Database.connect(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        pool = await run_asyncio(
            asyncpg.create_pool, dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, command_timeout=30
        )
        return Database(pool)

    async def gather(worker: Callable[[], Awaitable[None]], n: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(worker)

    async def main() -> dict[str, Any]:
        async with asyncio_loop(kind=kind):  # type: ignore[arg-type]
            db = await connect()
            try:

                async def truncate(conn: Connection) -> None:
                    await conn.execute("truncate bench_payments")

                await db.session(truncate)

                async def one(i: int) -> Any:
                    async def unit(conn: Connection) -> Any:
                        return await pay(conn, f"{tag}-{i}", i % 1000)

                    return await db.transaction(unit)

                before = stats.crossings
                parts = await _timed(units, tasks, one, gather)
                crossings = (stats.crossings - before) / (2 * units + WARM_UP)
                return {"parts": parts, "crossings": crossings}
            finally:
                await db.close()

    result: dict[str, Any] = trio.run(main)
    return result


def worker_main(args: argparse.Namespace) -> None:
    style, loop = PATHS[args.worker]
    run = plain_worker if style == "plain" else seam_worker
    result = run(loop, args.dsn, args.units, args.tasks, args.tag)
    result["trio_asyncio_imported"] = "trio_asyncio" in sys.modules
    print(json.dumps(result))


# -- the run -------------------------------------------------------------------------------------


def run_path(path: str, dsn: str, units: int, tasks: int, tag: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", path, "--dsn", dsn]
    command += ["--units", str(units), "--tasks", str(tasks), "--tag", tag]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{path} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if PATHS[path][0] == "plain" and result["trio_asyncio_imported"]:
        raise RuntimeError(f"{path}: trio-asyncio was imported, the baseline is not plain")
    return result


def _create_schema(dsn: str) -> None:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(_SCHEMA)
        finally:
            await conn.close()

    asyncio.run(create())


def _spread(values: list[float], scale: float, digits: int = 0) -> str:
    low, mid, high = min(values) * scale, statistics.median(values) * scale, max(values) * scale
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def report(
    results: dict[str, list[dict[str, Any]]],
    loads: list[tuple[float, float, float]],
    sizes: Sizes,
    tasks: int,
) -> str:
    ones = [load[0] for load in loads]
    lines = [
        "payment transaction: insert on conflict, guarded update, extension, select"
        " (4 statements, one transaction, async commit)",
        f"{sizes.units} payments per part, {sizes.rounds} interleaved rounds, each path in a"
        f" process of its own; pool of {POOL_SIZE}; median (min-max) over rounds",
        f"load (1 min average) during the run: {min(ones):.2f}-{max(ones):.2f}"
        f" on {os.cpu_count()} CPUs",
    ]
    for part, title in (
        ("sequential", "sequential: one payment after another"),
        ("concurrent", f"concurrent: {tasks} tasks at once"),
    ):
        lines += ["", title]
        lines.append(
            f"  {'path':<25} {'payments/s':>20} {'CPU us/payment':>20} {'ratio/s':>8}"
            f" {'ratio CPU':>9} {'x/unit':>6}"
        )
        base = results[BASELINE]
        base_rate = statistics.median(sizes.units / r["parts"][part]["wall"] for r in base)
        base_cpu = statistics.median(r["parts"][part]["cpu"] / sizes.units for r in base)
        for path, rounds in results.items():
            rates = [sizes.units / r["parts"][part]["wall"] for r in rounds]
            cpus = [r["parts"][part]["cpu"] / sizes.units for r in rounds]
            lines.append(
                f"  {path:<25} {_spread(rates, 1):>20} {_spread(cpus, 1e6):>20}"
                f" {statistics.median(rates) / base_rate:>7.2f}x"
                f" {statistics.median(cpus) / base_cpu:>8.2f}x"
                f" {rounds[0]['crossings']:>6.2f}"
            )
    lines += [
        "",
        "ratio/s: payments per second against plain asyncio (higher is better); ratio CPU:"
        " the client's CPU per payment (both threads) against plain asyncio (lower is"
        " better); x/unit: crossings of the seam per payment",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent payments (16)")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    sys.path.insert(0, str(HERE.parent))
    from _databases import bench_databases

    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    loads = [os.getloadavg()]
    with bench_databases({"bench": ("bench_seam", False)}) as dsns:
        _create_schema(dsns["bench"])
        for round_ in range(sizes.rounds):
            for path in PATHS:
                tag = f"r{round_}-{list(PATHS).index(path)}"
                results[path].append(run_path(path, dsns["bench"], sizes.units, args.tasks, tag))
                loads.append(os.getloadavg())
    print(report(results, loads, sizes, args.tasks))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
