"""Outbox parts: where a run of ``outbox_bench.py`` goes, each part against plain asyncpg.

    .venv/bin/python bench/outbox_parts_bench.py [--rounds N] [--quick]

The two phases of an outbox run, sent three ways on the same embedded PostgreSQL:

- *enqueue*: 500 batches of 10 jobs, one durable statement each, one after another. Plain
  asyncpg on uvloop sends the outbox's own statement (``outbox.enqueue_many`` on a plain
  connection); vpnbot sends it through ``outbox.enqueue_jobs`` from trio (the crossing to
  the asyncio thread, the pool, the retry); pgqueuer through its ``Queries.enqueue``.
- *consume*: 5,000 queued jobs settled by the statements ``outbox_lanes.drain`` sends (each
  completes the jobs claimed before and claims the next ``limit``), 40 and 200 jobs a
  statement, until none is left. Plain asyncpg sends them from one connection and from four
  at once; vpnbot through ``outbox.complete_and_claim`` from trio, jobs parsed as it does.

Each run is a process of its own with a freshly emptied, vacuumed and checkpointed table; the
ways take turns round after round. Prints the median and min-max per part, the ratio to
plain asyncpg, and the machine load. What it shows: how much of each phase is the client
(the difference to plain asyncpg) and how much is the server (what is left).
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
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KIND = "bench.job"
ENQUEUES, ENQUEUE_BATCH = 500, 10
QUEUED = 5000
CLAIM_SECONDS = 60.0
PARTS: dict[str, tuple[str, int]] = {
    "enqueue: plain asyncpg": ("enqueue-plain", 0),
    "enqueue: vpnbot": ("enqueue-vpnbot", 0),
    "enqueue: pgqueuer": ("enqueue-pgqueuer", 0),
    "consume 40: plain asyncpg": ("consume-plain", 40),
    "consume 40: plain, 4 connections": ("consume-plain-4", 40),
    "consume 40: vpnbot": ("consume-vpnbot", 40),
    "consume 200: plain asyncpg": ("consume-plain", 200),
    "consume 200: vpnbot": ("consume-vpnbot", 200),
}
BASELINES = {
    "enqueue": "enqueue: plain asyncpg",
    "consume 40": "consume 40: plain asyncpg",
    "consume 200": "consume 200: plain asyncpg",
}


def _batch(number: int, size: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"bench:{number * size + i}", {"i": number * size + i}) for i in range(size)]


async def _plain_connection(dsn: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


async def _fresh(dsn: str, *, queued: int) -> None:
    """An empty outbox, or one holding ``queued`` due jobs; vacuumed and checkpointed."""
    from runtime.storage import outbox

    conn = await _plain_connection(dsn)
    try:
        await conn.execute("truncate outbox")
        for number in range(queued // 50):
            await outbox.enqueue_many(conn, kind=KIND, jobs=_batch(number, 50))
        await conn.execute("vacuum analyze outbox")
        await conn.execute("checkpoint")
    finally:
        await conn.close()


# -- the parts, each in a process of its own ------------------------------------------------


async def enqueue_plain(dsn: str) -> float:
    from runtime.storage import outbox

    await _fresh(dsn, queued=0)
    conn = await _plain_connection(dsn)
    try:
        started = time.perf_counter()
        for number in range(ENQUEUES):
            await outbox.enqueue_many(conn, kind=KIND, jobs=_batch(number, ENQUEUE_BATCH))
        return time.perf_counter() - started
    finally:
        await conn.close()


def enqueue_vpnbot(dsn: str) -> float:
    import trio

    from runtime.bridge import asyncio_loop
    from runtime.storage import Database, outbox

    async def main() -> float:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=1, max_size=1)
            try:
                started = time.perf_counter()
                for number in range(ENQUEUES):
                    await outbox.enqueue_jobs(db, kind=KIND, jobs=_batch(number, ENQUEUE_BATCH))
                return time.perf_counter() - started
            finally:
                await db.close()

    asyncio.run(_fresh(dsn, queued=0))
    seconds: float = trio.run(main)
    return seconds


async def enqueue_pgqueuer(dsn: str) -> float:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("truncate pgqueuer, pgqueuer_log")
        await conn.execute("checkpoint")
        queries = Queries(AsyncpgDriver(conn))
        started = time.perf_counter()
        for number in range(ENQUEUES):
            payloads = [json.dumps(p).encode() for _, p in _batch(number, ENQUEUE_BATCH)]
            await queries.enqueue([KIND] * ENQUEUE_BATCH, payloads, [0] * ENQUEUE_BATCH)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def consume_plain(dsn: str, limit: int, connections: int = 1) -> float:
    """The statements of ``outbox.complete_and_claim``, from plain connections."""
    from runtime.storage.outbox import _CLAIM_QUERIES  # the exact statements it sends

    await _fresh(dsn, queued=QUEUED)
    conns = [await _plain_connection(dsn) for _ in range(connections)]
    claim = timedelta(seconds=CLAIM_SECONDS)

    async def consumer(conn: Any, owner: str) -> int:
        done = 0
        rows = await conn.fetch(_CLAIM_QUERIES[True, False], KIND, limit, owner, claim, True)
        while claimed := [row for row in rows if row["outcome"] == "claimed"]:
            rows = await conn.fetch(
                _CLAIM_QUERIES[True, True],
                *(KIND, limit, owner, claim, True),
                [row["id"] for row in claimed],
                [row["claims"] for row in claimed],
            )
            done += sum(row["outcome"] == "done" for row in rows)
        return done

    try:
        started = time.perf_counter()
        done = await asyncio.gather(*(consumer(c, f"bench-{i}") for i, c in enumerate(conns)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    if sum(done) != QUEUED:
        raise RuntimeError(f"{sum(done)} of {QUEUED} jobs completed")
    return seconds


def consume_vpnbot(dsn: str, limit: int) -> float:
    import trio

    from runtime.bridge import asyncio_loop
    from runtime.storage import Database, outbox

    async def main() -> float:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=1, max_size=1)
            try:
                started = time.perf_counter()
                done = 0
                claimed = await outbox.claim(
                    db, kinds=[KIND], owner="bench-0", limit=limit, claim_seconds=CLAIM_SECONDS
                )
                while claimed:
                    counted, claimed = await outbox.complete_and_claim(
                        db,
                        claimed,
                        kinds=[KIND],
                        owner="bench-0",
                        limit=limit,
                        claim_seconds=CLAIM_SECONDS,
                    )
                    done += len(counted)
                seconds = time.perf_counter() - started
            finally:
                await db.close()
        if done != QUEUED:
            raise RuntimeError(f"{done} of {QUEUED} jobs completed")
        return seconds

    asyncio.run(_fresh(dsn, queued=QUEUED))
    seconds: float = trio.run(main)
    return seconds


def _uvloop_run(main: Any) -> float:
    """On uvloop when installed, as pgqueuer's CLI and the plain side choose."""
    try:
        import uvloop
    except ImportError:
        return float(asyncio.run(main))
    return float(uvloop.run(main))


CHILDREN: dict[str, Callable[[str, int], float]] = {
    "enqueue-plain": lambda dsn, _: _uvloop_run(enqueue_plain(dsn)),
    "enqueue-vpnbot": lambda dsn, _: enqueue_vpnbot(dsn),
    "enqueue-pgqueuer": lambda dsn, _: _uvloop_run(enqueue_pgqueuer(dsn)),
    "consume-plain": lambda dsn, limit: _uvloop_run(consume_plain(dsn, limit)),
    "consume-plain-4": lambda dsn, limit: _uvloop_run(consume_plain(dsn, limit, 4)),
    "consume-vpnbot": consume_vpnbot,
}


# -- the rounds ------------------------------------------------------------------------------


def _child(part: str, dsn: str) -> float:
    child, limit = PARTS[part]
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    out = subprocess.run(
        [sys.executable, __file__, "--child", child, "--dsn", dsn, "--limit", str(limit)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


async def _install_pgqueuer(dsn: str) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


def report(results: dict[str, list[float]], rounds: int) -> str:
    lines = [
        f"outbox parts, {rounds} interleaved rounds: enqueue = {ENQUEUES} batches of"
        f" {ENQUEUE_BATCH} (µs per statement); consume = {QUEUED} jobs at 40 and 200 a"
        " statement (seconds)",
        f"  {'part':<34} {'median':>9} {'min-max':>17} {'to plain':>9}",
    ]
    for part, runs in results.items():
        phase = part.split(":")[0]
        scale = 1e6 / ENQUEUES if phase == "enqueue" else 1.0
        digits = 0 if phase == "enqueue" else 3
        median = statistics.median(runs) * scale
        plain = statistics.median(results[BASELINES[phase]]) * scale
        spread = f"{min(runs) * scale:.{digits}f}-{max(runs) * scale:.{digits}f}"
        lines.append(f"  {part:<34} {median:>9.{digits}f} {spread:>17} {median / plain:>8.2f}x")
    lines.append(
        "  to plain: the part's median over plain asyncpg's in the same run (lower is faster)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(CHILDREN[args.child](args.dsn, args.limit))
        return
    rounds = 2 if args.quick else args.rounds

    sys.path.insert(0, str(ROOT))
    from _databases import bench_databases

    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, list[float]] = {}
    with bench_databases(
        {"vpnbot": ("bench_outbox_parts", True), "pgqueuer": ("bench_pgq_parts", True)}
    ) as dsns:
        asyncio.run(_install_pgqueuer(dsns["pgqueuer"]))
        for number in range(rounds):
            order = list(PARTS) if number % 2 == 0 else list(PARTS)[::-1]
            for part in order:
                dsn = dsns["pgqueuer" if "pgqueuer" in part else "vpnbot"]
                results.setdefault(part, []).append(_child(part, dsn))
                print(f"  round {number + 1}: {part}", file=sys.stderr)
    print(report({part: results[part] for part in PARTS}, rounds))
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after,"
        f" on {os.cpu_count()} CPUs; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
