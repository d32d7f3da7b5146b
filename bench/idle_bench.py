"""Idle benchmark: what a running service costs when nothing happens.

    .venv/bin/python bench/idle_bench.py [--seconds N] [--rounds N] [--quick]

Starts its own embedded PostgreSQL in a temporary directory, a migrated database, the
Telegram emulator, a fake Marzban and a fake Crypto Pay (what `vpnbot sandbox` brings),
then `vpnbot run --config` as a process of its own in polling mode, waits until it is
ready and has settled, and counts over N idle seconds:

- transactions per second on its database (``pg_stat_database``: commits and rollbacks;
  this bench reads them from another database, so its own reads do not count);
- CPU of the service process (user + system time from ``/proc``) as a share of one core;
- which tables the idle service touched (``pg_stat_user_tables``: scans and row writes).

Two configurations run in interleaved rounds: wake-ups on (the default: workers woken by
PostgreSQL notifications, long fallback pauses) and ``[wakeups] enabled = false`` (every
worker polls at its own interval, as before wake-ups existed; the other idle savings of the
same change, such as the less frequent instance ping, apply to both).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _databases import bench_databases
from _service import Peers, Service, peers

from runtime.bridge import asyncio_loop
from runtime.storage import Connection, Database

DATABASE = "bench_idle"
SETTLE_SECONDS = 15.0
"""After ready: the start's own work (commands, takeovers, first scans) is done."""


async def transactions(admin: Database) -> int:
    async def unit(conn: Connection) -> int:
        await conn.execute("select pg_stat_clear_snapshot()")
        return int(
            await conn.fetchval(
                "select xact_commit + xact_rollback from pg_stat_database where datname = $1",
                DATABASE,
            )
        )

    return await admin.read(unit)


async def tables(db: Database) -> dict[str, tuple[int, int]]:
    """Per table: (scans, rows written) so far."""

    async def unit(conn: Connection) -> dict[str, tuple[int, int]]:
        rows = await conn.fetch(
            "select relname, seq_scan + coalesce(idx_scan, 0) as scans,"
            " n_tup_ins + n_tup_upd + n_tup_del as writes from pg_stat_user_tables"
        )
        return {r["relname"]: (int(r["scans"]), int(r["writes"])) for r in rows}

    return await db.read(unit)


async def idle_run(
    dsn: str, admin_dsn: str, found: Peers, workdir: Path, *, wakeups: bool, seconds: float
) -> dict[str, Any]:
    service = Service(workdir, dsn, found, wakeups=wakeups)
    try:
        await service.wait_ready()
        await trio.sleep(SETTLE_SECONDS)
        admin = await Database.connect(admin_dsn, min_size=1, max_size=1)
        own = await Database.connect(dsn, min_size=1, max_size=1)
        try:
            tx0 = await transactions(admin)
            tables0 = await tables(own)  # one transaction of ours: subtracted below
            cpu0, wall0 = service.cpu_seconds(), time.monotonic()
            await trio.sleep(seconds)
            tx1 = await transactions(admin)
            cpu1, wall1 = service.cpu_seconds(), time.monotonic()
            tables1 = await tables(own)
        finally:
            await own.close()
            await admin.close()
    finally:
        await service.stop()
    wall = wall1 - wall0
    touched = {
        name: (scans - tables0.get(name, (0, 0))[0], writes - tables0.get(name, (0, 0))[1])
        for name, (scans, writes) in tables1.items()
    }
    return {
        "tx_per_s": max(0, tx1 - tx0 - 1) / wall,
        "cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "tables": {k: v for k, v in touched.items() if v != (0, 0)},
        "load": os.getloadavg()[0],
    }


async def measure(dsn: str, admin_dsn: str, seconds: float, rounds: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with asyncio_loop(), peers() as found:
        with tempfile.TemporaryDirectory(prefix="vpnbot-idle-") as tmp:
            for number in range(rounds):
                order = (True, False) if number % 2 == 0 else (False, True)
                for wakeups in order:
                    result = await idle_run(
                        dsn, admin_dsn, found, Path(tmp), wakeups=wakeups, seconds=seconds
                    )
                    result.update(round=number + 1, wakeups=wakeups)
                    results.append(result)
                    label = "wake-ups" if wakeups else "polling"
                    print(
                        f"  round {number + 1} {label:8}  {result['tx_per_s']:6.2f} tx/s"
                        f"  {result['cpu_pct']:5.2f}% CPU  load {result['load']:.2f}",
                        flush=True,
                    )
    return results


def summary(results: list[dict[str, Any]], wakeups: bool, key: str) -> tuple[float, float, float]:
    values = [r[key] for r in results if r["wakeups"] is wakeups]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="idle seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 30 s per mode")
    args = parser.parse_args()
    seconds, rounds = (30.0, 1) if args.quick else (args.seconds, args.rounds)
    before = os.getloadavg()
    print(f"vpnbot run, polling mode, idle {seconds:g} s per run, {rounds} interleaved round(s)")
    with bench_databases({"main": (DATABASE, True)}) as dsns:
        dsn = dsns["main"]
        admin_dsn = dsn.replace(f"/{DATABASE}?", "/postgres?", 1)
        results = trio.run(measure, dsn, admin_dsn, seconds, rounds)
    print("\n  mode                               tx/s median (min-max)   CPU % median (min-max)")
    for wakeups, label in ((True, "wake-ups (default)"), (False, "polling only (before)")):
        tx = summary(results, wakeups, "tx_per_s")
        cpu = summary(results, wakeups, "cpu_pct")
        print(
            f"  {label:32}  {tx[0]:6.2f} ({tx[1]:.2f}-{tx[2]:.2f})"
            f"        {cpu[0]:5.2f} ({cpu[1]:.2f}-{cpu[2]:.2f})"
        )
    on, off = summary(results, True, "tx_per_s")[0], summary(results, False, "tx_per_s")[0]
    on_cpu, off_cpu = summary(results, True, "cpu_pct")[0], summary(results, False, "cpu_pct")[0]
    print(
        f"  ratio wake-ups / polling: {on / off if off else float('nan'):.2f}x transactions,"
        f" {on_cpu / off_cpu if off_cpu else float('nan'):.2f}x CPU"
    )
    last = next(r for r in reversed(results) if r["wakeups"])
    print("  tables an idle run with wake-ups touched (scans, rows written):")
    for name, (scans, writes) in sorted(last["tables"].items()):
        print(f"    {name:20} {scans:6} {writes:6}")
    after = os.getloadavg()
    print(
        "  load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in after)
        + f"; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
