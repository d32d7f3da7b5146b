"""Storage benchmark: outbox throughput, and what one unit of work costs through the bridge.

    .venv/bin/python bench/storage_bench.py [--quick]

Starts its own embedded PostgreSQL in a temporary directory, migrates it, measures, prints
a table and removes everything. Every ratio compares numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import trio
from _databases import bench_databases

from runtime.bridge import asyncio_loop, run_asyncio, stats
from runtime.storage import Connection, Database, outbox

POOL: dict[str, Any] = {"min_size": 4, "max_size": 8, "command_timeout": 30.0}
"""The same pool settings for every path measured (``Database.connect`` takes them too)."""
KIND = "bench.job"
WARM_UP = 50
"""Untimed units before each timed run: connections open, statements prepared."""

DATABASES = {"durable": ("bench", True), "async commit": ("bench_async", False)}
"""The outbox runs on ``durable`` (the default: every commit waits for the disk). The units
run on ``async commit`` (``synchronous_commit = off`` on that database only): the disk wait
is the same on every path and, on a small virtual machine, noisy enough to hide the rest;
without it what is compared is round trips, CPU and the bridge."""


@dataclass(frozen=True)
class Sizes:
    jobs_batch_1: int
    jobs_batch_50: int
    units: int
    rounds: int


FULL = Sizes(jobs_batch_1=1500, jobs_batch_50=5000, units=2400, rounds=6)
QUICK = Sizes(jobs_batch_1=300, jobs_batch_50=1000, units=300, rounds=2)


# -- the outbox --------------------------------------------------------------------------------


async def _reset_outbox(db: Database, jobs: int) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute("truncate outbox")
        await conn.execute(
            "insert into outbox (kind, dedup_key, payload)"
            " select $1, 'bench:' || i, jsonb_build_object('i', i)"
            " from generate_series(1, $2) as i",
            KIND,
            jobs,
        )

    await db.transaction(unit)
    await db.session(_settle)


async def _settle(conn: Connection) -> None:
    """Fresh statistics and no pending checkpoint, so one run does not pay for another."""
    await conn.execute("analyze")
    await conn.execute("checkpoint")


async def outbox_run(db: Database, claimers: int, batch: int, jobs: int) -> dict[str, float]:
    """``claimers`` trio tasks claim and complete batches until the queue is empty."""
    await _reset_outbox(db, jobs)
    done = 0
    crossings_before = stats.crossings

    async def claimer(owner: str) -> None:
        nonlocal done
        while True:
            got = await outbox.claim(db, kinds=[KIND], owner=owner, limit=batch, claim_seconds=60)
            if not got:
                return
            counted = await outbox.complete(db, got, owner=owner)
            done += len(counted)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(claimers):
            nursery.start_soon(claimer, f"bench-{i}")
    elapsed = time.perf_counter() - started
    if done != jobs or (await outbox.counts(db))["done"] != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs done: the queue lost or doubled work")
    return {
        "jobs_per_s": jobs / elapsed,
        "crossings_per_job": (stats.crossings - crossings_before) / jobs,
    }


async def outbox_part(dsn: str, sizes: Sizes) -> dict[tuple[int, int], dict[str, float]]:
    results = {}
    async with asyncio_loop():
        db = await Database.connect(dsn, **POOL)
        try:
            for claimers in (1, 4):
                for batch in (1, 50):
                    jobs = sizes.jobs_batch_1 if batch == 1 else sizes.jobs_batch_50
                    results[claimers, batch] = await outbox_run(db, claimers, batch, jobs)
        finally:
            await db.close()
    return results


# -- one unit of work, three ways ----------------------------------------------------------------

# A small transaction of three statements, like a service call: make sure the user exists,
# change it, read the result.
_UPSERT = "insert into users (telegram_id) values ($1) on conflict do nothing"
_CHANGE = "update users set balance_minor = balance_minor + 1 where telegram_id = $1"
_READ = "select balance_minor from users where telegram_id = $1"


async def three_statements(conn: Connection, user: int) -> int:
    await conn.execute(_UPSERT, user)
    await conn.execute(_CHANGE, user)
    return int(await conn.fetchval(_READ, user))


async def _init(conn: Connection) -> None:  # what Database does for its connections
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _create_pool(dsn: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, init=_init, **POOL)


async def _timed(n: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Seconds per call of ``one(i)`` after a warm-up (asyncio or trio alike)."""
    for i in range(WARM_UP):
        await one(i % 100)
    started = time.perf_counter()
    for i in range(n):
        await one(i % 100)
    return (time.perf_counter() - started) / n


def plain_asyncio(dsn: str, n: int) -> float:
    """The unit on plain asyncio with asyncpg: no trio, no bridge.

    Importing trio-asyncio makes ``asyncio.run`` build trio-asyncio's synchronous loop, so
    the stdlib selector loop is asked for by name.
    """

    async def main() -> float:
        pool = await _create_pool(dsn)
        try:

            async def one(user: int) -> int:
                async with pool.acquire() as conn, conn.transaction():
                    return await three_statements(conn, user)

            return await _timed(n, one)
        finally:
            await pool.close()

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(main())


async def one_crossing_per_unit(dsn: str, n: int) -> tuple[float, float]:
    """The storage layer's way: the whole unit in one crossing."""
    async with asyncio_loop():
        db = await Database.connect(dsn, **POOL)
        try:

            async def one(user: int) -> int:
                async def unit(conn: Connection) -> int:
                    return await three_statements(conn, user)

                return await db.transaction(unit)

            before = stats.crossings
            seconds = await _timed(n, one)
            return seconds, (stats.crossings - before) / (n + WARM_UP)
        finally:
            await db.close()


async def one_crossing_per_query(dsn: str, n: int) -> tuple[float, float]:
    """What the storage layer forbids: trio code driving asyncpg call by call."""
    async with asyncio_loop():
        pool = await run_asyncio(_create_pool, dsn)
        try:

            async def one(user: int) -> int:
                conn = await run_asyncio(pool.acquire)
                try:
                    tx = conn.transaction()
                    await run_asyncio(tx.start)
                    try:
                        await run_asyncio(conn.execute, _UPSERT, user)
                        await run_asyncio(conn.execute, _CHANGE, user)
                        value = int(await run_asyncio(conn.fetchval, _READ, user))
                    except BaseException:
                        await run_asyncio(tx.rollback)
                        raise
                    await run_asyncio(tx.commit)
                    return value
                finally:
                    await run_asyncio(pool.release, conn)

            before = stats.crossings
            seconds = await _timed(n, one)
            return seconds, (stats.crossings - before) / (n + WARM_UP)
        finally:
            await run_asyncio(pool.close)


PATHS = ("plain asyncio + asyncpg", "trio, one crossing per unit", "trio, one crossing per query")


def units_part(dsn: str, sizes: Sizes) -> dict[str, tuple[float, float]]:
    """Each path runs ``rounds`` times, interleaved with the others, so drift in the machine
    or the server (checkpoints, autovacuum) spreads over all of them; the median round counts.
    Returns seconds per unit and crossings per unit, by path.
    """
    n = max(1, sizes.units // sizes.rounds)
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    crossings = dict.fromkeys(PATHS, 0.0)
    for _ in range(sizes.rounds):
        seconds[PATHS[0]].append(plain_asyncio(dsn, n))
        for path, run in ((PATHS[1], one_crossing_per_unit), (PATHS[2], one_crossing_per_query)):
            s, crossings[path] = trio.run(run, dsn, n)
            seconds[path].append(s)
    return {path: (statistics.median(seconds[path]), crossings[path]) for path in PATHS}


# -- the run -------------------------------------------------------------------------------------


def report(
    jobs: dict[tuple[int, int], dict[str, float]],
    units: dict[str, tuple[float, float]],
    sizes: Sizes,
    total: float,
) -> str:
    lines = ["outbox: claim + complete until empty (trio tasks sharing one pool, durable)"]
    lines.append(
        f"  {'claimers':>8} {'batch':>5} {'jobs':>6} {'jobs/s':>8} {'ratio':>7} {'x/job':>6}"
    )
    base = jobs[1, 1]["jobs_per_s"]
    for (claimers, batch), r in jobs.items():
        count = sizes.jobs_batch_1 if batch == 1 else sizes.jobs_batch_50
        lines.append(
            f"  {claimers:>8} {batch:>5} {count:>6} {r['jobs_per_s']:>8.0f}"
            f" {r['jobs_per_s'] / base:>6.2f}x {r['crossings_per_job']:>6.2f}"
        )
    lines.append("  ratio: against 1 claimer, batch 1; x/job: bridge crossings per job")
    lines.append("")
    lines.append(
        f"one unit of work: a transaction of 3 statements (async commit), {sizes.units} per"
        f" path in {sizes.rounds} interleaved rounds, median round"
    )
    lines.append(f"  {'path':<29} {'us/unit':>7} {'units/s':>7} {'ratio':>6} {'crossings':>9}")
    plain = units[PATHS[0]][0]
    for path in PATHS:
        seconds, crossings = units[path]
        lines.append(
            f"  {path:<29} {seconds * 1e6:>7.0f} {1 / seconds:>7.0f}"
            f" {seconds / plain:>5.2f}x {crossings:>9.0f}"
        )
    lines.append("  ratio: time per unit against plain asyncio")
    per_unit, per_query = units[PATHS[1]][0], units[PATHS[2]][0]
    lines.append(
        f"  a crossing per query costs {per_query / per_unit:.2f}x one crossing per unit"
        f" (+{(per_query - per_unit) * 1e6:.0f} us per unit)"
    )
    lines.append("")
    lines.append(f"total {total:.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    sizes = QUICK if parser.parse_args().quick else FULL
    started = time.perf_counter()
    with bench_databases(DATABASES) as dsns:
        units = units_part(dsns["async commit"], sizes)
        jobs = trio.run(outbox_part, dsns["durable"], sizes)
    print(report(jobs, units, sizes, time.perf_counter() - started))


if __name__ == "__main__":
    main()
