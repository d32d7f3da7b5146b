"""Outbox benchmark: enqueue + claim + complete against pgqueuer, in the same run.

    .venv/bin/python bench/outbox_bench.py [--quick] [--rounds N] [--jobs N]

Starts its own embedded PostgreSQL in a temporary directory, with one database for each
queue (both durable: ``synchronous_commit`` at its default, on), and for every
(consumers, batch) setting runs both queues in interleaved rounds. Each run is a fresh
Python process (so neither side pays for the other's imports or loop patches): it enqueues
the jobs in batches, then its consumers claim and complete them until the queue is empty.
A run ends when every job is committed as done. Prints jobs/s (median and min-max over
the rounds), the client's and PostgreSQL's CPU per job, the enqueue and consuming phases,
the ratios to pgqueuer (the whole run's and the consuming phase's), and the machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIND = "bench.job"
SIDES = ("vpnbot", "vpnbot-1", "pgqueuer")
"""``vpnbot``: ``outbox_lanes.drain`` with four lanes per consumer (their completions
written together); ``vpnbot-1``: the same on one lane; pgqueuer: the peer."""
LANES = {"vpnbot": 4, "vpnbot-1": 1}
SETTINGS = ((1, 10), (4, 10), (1, 50), (4, 50))
"""(consumers, batch): the batch is both the enqueue batch and the claim batch."""


@dataclass(frozen=True)
class Run:
    seconds: float
    enqueue_seconds: float
    cpu_seconds: float
    server_cpu_seconds: float = 0.0
    """PostgreSQL's CPU over the run (every server process), measured from outside."""


# -- one run, in a process of its own -----------------------------------------------------


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def vpnbot_run(dsn: str, consumers: int, batch: int, jobs: int, *, lanes: int = 4) -> Run:
    """The project's outbox through its consumer for a stream of jobs: trio tasks sharing
    one pool of a connection per consumer and one more (the producer's, as pgqueuer's);
    each consumer drains the queue with ``outbox_lanes.drain`` on ``lanes`` lanes. (The
    project's workers claim batches and settle each job in its own unit instead.)"""
    sys.path.insert(0, str(ROOT))
    import trio

    from runtime.bridge import asyncio_loop
    from runtime.storage import Database, outbox, outbox_lanes
    from runtime.storage.outbox import Claimed, Job

    async def main() -> Run:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=consumers + 1, max_size=consumers + 1)
            try:
                cpu, started = time.process_time(), time.perf_counter()
                for chunk in _chunks(jobs, batch):
                    await outbox.enqueue_jobs(
                        db, kind=KIND, jobs=[(f"bench:{i}", {"i": i}) for i in chunk]
                    )
                enqueued = time.perf_counter()
                done = 0

                async def handle(claimed: Claimed) -> list[Job]:
                    return claimed  # the side effect would happen here

                async def consumer(owner: str) -> None:
                    nonlocal done
                    completed = await outbox_lanes.drain(
                        db,
                        handle,
                        kinds=[KIND],
                        owner=owner,
                        limit=batch,
                        claim_seconds=60,
                        lanes=lanes,
                    )
                    done += completed  # not `done += await ...`: it would lose counts

                async with trio.open_nursery() as nursery:
                    for i in range(consumers):
                        nursery.start_soon(consumer, f"bench-{i}")
                ended = time.perf_counter()
                cpu = time.process_time() - cpu
                if done != jobs or (await outbox.counts(db))["done"] != jobs:
                    raise RuntimeError(f"{done} of {jobs} jobs done: lost or doubled work")
                return Run(ended - started, enqueued - started, cpu)
            finally:
                await db.close()

    result: Run = trio.run(main)
    return result


def pgqueuer_run(dsn: str, consumers: int, batch: int, jobs: int) -> Run:
    """pgqueuer as its documentation shows it: ``Queries.enqueue`` with lists, and a
    ``QueueManager`` with an entrypoint per consumer, each on its own connection, in drain
    mode so that ``run`` returns once the queue is empty and the statuses are flushed. The
    loop is uvloop when installed, as pgqueuer's own CLI chooses."""
    import asyncpg
    from pgqueuer import Job, QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def main() -> Run:
        producer = await asyncpg.connect(dsn)
        workers = [await asyncpg.connect(dsn) for _ in range(consumers)]
        done = 0
        try:
            queries = Queries(AsyncpgDriver(producer))
            cpu, started = time.process_time(), time.perf_counter()
            for chunk in _chunks(jobs, batch):
                await queries.enqueue(
                    [KIND] * len(chunk),
                    [json.dumps({"i": i}).encode() for i in chunk],
                    [0] * len(chunk),
                )
            enqueued = time.perf_counter()
            managers = []
            for conn in workers:
                qm = QueueManager(Queries(AsyncpgDriver(conn)))

                @qm.entrypoint(KIND)
                async def handle(job: Job) -> None:
                    nonlocal done
                    done += 1

                managers.append(qm)
            await asyncio.gather(
                *(qm.run(batch_size=batch, mode=QueueExecutionMode.drain) for qm in managers)
            )
            ended = time.perf_counter()
            cpu = time.process_time() - cpu
            left = await producer.fetchval("select count(*) from pgqueuer")
            logged = await producer.fetchval(
                "select count(*) from pgqueuer_log where status = 'successful'"
            )
            if done != jobs or left != 0 or logged != jobs:
                raise RuntimeError(f"{done} handled, {left} left, {logged} logged of {jobs}")
            return Run(ended - started, enqueued - started, cpu)
        finally:
            for conn in (producer, *workers):
                await conn.close()

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    result: Run = uvloop.run(main())
    return result


DATABASE = {"vpnbot": "vpnbot", "vpnbot-1": "vpnbot", "pgqueuer": "pgqueuer"}

RUNNERS: dict[str, Callable[[str, int, int, int], Run]] = {
    "vpnbot": functools.partial(vpnbot_run, lanes=LANES["vpnbot"]),
    "vpnbot-1": functools.partial(vpnbot_run, lanes=LANES["vpnbot-1"]),
    "pgqueuer": pgqueuer_run,
}


# -- the rounds ------------------------------------------------------------------------------


async def _prepare(dsns: dict[str, str]) -> None:
    """Install pgqueuer's schema with its own installer."""
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsns["pgqueuer"])
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def _reset(dsns: dict[str, str]) -> None:
    """Empty queues, fresh statistics and no pending checkpoint, so that one run does not
    pay for another."""
    import asyncpg

    for side, table in (("vpnbot", "outbox"), ("pgqueuer", "pgqueuer, pgqueuer_log")):
        conn = await asyncpg.connect(dsns[side])
        try:
            await conn.execute(f"truncate {table}")
            await conn.execute("vacuum analyze")
            await conn.execute("checkpoint")
        finally:
            await conn.close()


TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _server_cpu(postmaster: int) -> float:
    """CPU so far of the server: the postmaster's own and that of its exited children
    (reaped into its cutime and cstime), plus each live child's."""
    ticks = sum(int(f) for f in _stat(postmaster)[11:15])
    try:
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as found:
            live = [int(child) for child in found.read().split()]
    except OSError:
        live = []
    for pid in live:
        try:
            ticks += sum(int(f) for f in _stat(pid)[11:13])
        except OSError:
            continue  # exited meanwhile: its time is in the postmaster's cutime now
    return ticks / TICKS


async def _postmaster(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        backend: int = await conn.fetchval("select pg_backend_pid()")
        return int(_stat(backend)[1])
    finally:
        await conn.close()


def _python_path() -> str:
    """The project first, then what the caller's ``PYTHONPATH`` adds (the peer's packages,
    say, when they are installed beside the environment rather than in it)."""
    return os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))


def _child(side: str, dsn: str, consumers: int, batch: int, jobs: int, postmaster: int) -> Run:
    server_before = _server_cpu(postmaster)
    out = subprocess.run(
        [
            *(sys.executable, __file__, "--child", side, "--dsn", dsn),
            *("--consumers", str(consumers), "--batch", str(batch), "--jobs", str(jobs)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": _python_path()},
    )
    server = _server_cpu(postmaster) - server_before
    if out.returncode != 0:
        raise RuntimeError(f"the {side} run failed:\n{out.stderr[-3000:]}")
    run = json.loads(out.stdout.strip().splitlines()[-1])
    return Run(**{**run, "server_cpu_seconds": server})


def measure(dsns: dict[str, str], jobs: int, rounds: int) -> dict[tuple[int, int, str], list[Run]]:
    results: dict[tuple[int, int, str], list[Run]] = {}
    postmaster = asyncio.run(_postmaster(dsns["vpnbot"]))
    for number in range(rounds):
        for consumers, batch in SETTINGS:
            order = SIDES if number % 2 == 0 else SIDES[::-1]
            for side in order:
                asyncio.run(_reset(dsns))
                run = _child(side, dsns[DATABASE[side]], consumers, batch, jobs, postmaster)
                results.setdefault((consumers, batch, side), []).append(run)
                print(
                    f"  round {number + 1}: {side:<8} consumers {consumers} batch {batch:>2}:"
                    f" {jobs / run.seconds:6.0f} jobs/s  load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
    return results


def report(results: dict[tuple[int, int, str], list[Run]], jobs: int, rounds: int) -> str:
    lines = [
        f"outbox: enqueue (in batches) + claim + complete of {jobs} jobs, durable commits,"
        f" {rounds} interleaved rounds",
        f"  {'consumers':>9} {'batch':>5} {'queue':<9} {'jobs/s median':>13} {'min-max':>11}"
        f" {'CPU ms/job':>10} {'PG ms/job':>9} {'enqueue s':>9} {'consume s':>9}"
        f" {'ratio':>6} {'consume':>7}",
    ]
    for consumers, batch in SETTINGS:
        peer_runs = results[consumers, batch, "pgqueuer"]
        peer = statistics.median(jobs / r.seconds for r in peer_runs)
        peer_consume = statistics.median(r.seconds - r.enqueue_seconds for r in peer_runs)
        for side in SIDES:
            runs = results[consumers, batch, side]
            rates = [jobs / r.seconds for r in runs]
            median = statistics.median(rates)
            consume = statistics.median(r.seconds - r.enqueue_seconds for r in runs)
            lines.append(
                f"  {consumers:>9} {batch:>5} {side:<9} {median:>13.0f}"
                f" {min(rates):>5.0f}-{max(rates):<5.0f}"
                f" {statistics.median(r.cpu_seconds for r in runs) * 1e3 / jobs:>10.3f}"
                f" {statistics.median(r.server_cpu_seconds for r in runs) * 1e3 / jobs:>9.3f}"
                f" {statistics.median(r.enqueue_seconds for r in runs):>9.2f}"
                f" {consume:>9.2f}"
                f" {median / peer:>5.2f}x {peer_consume / consume:>6.2f}x"
            )
    lines.append("  ratio: median jobs/s against pgqueuer's in the same run (higher is better)")
    lines.append("  consume: the same for the consuming phase alone (the run less its enqueue)")
    lines.append("  CPU ms/job: the client process's CPU (user + system), PostgreSQL excluded")
    lines.append("  PG ms/job: the PostgreSQL server's CPU over the run (every process)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 2 rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--consumers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = RUNNERS[args.child](args.dsn, args.consumers, args.batch, args.jobs)
        print(json.dumps(run.__dict__))
        return
    jobs = args.jobs or (1000 if args.quick else 5000)
    rounds = args.rounds or (2 if args.quick else 5)

    sys.path.insert(0, str(ROOT))
    from _databases import bench_databases

    load_before = os.getloadavg()
    started = time.perf_counter()
    with bench_databases(
        {"vpnbot": ("bench_outbox", True), "pgqueuer": ("bench_pgq", True)}
    ) as dsns:
        asyncio.run(_prepare(dsns))
        results = measure(dsns, jobs, rounds)
    print(report(results, jobs, rounds))
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after,"
        f" on {os.cpu_count()} CPUs; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
