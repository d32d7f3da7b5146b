"""A process racing for one lease, driven by tests/storage/test_leases.py.

    python lease_proc.py DSN HOLDER --holds N --ttl S --stall-at K --stall S

Run with the project root on PYTHONPATH. Prints ``ready`` once connected and waits for a
line on stdin, so racers start together. Then, until it has held the lease N times:
acquire; under the fence, log the start of the hold in ``lease_log`` (on the database's
clock); hold briefly; under the fence, log its end; release. Hold number K stalls for S
seconds (longer than the ttl) before logging its end, so the lease expires under it: that
end write must be refused. A starved process may outlive a ttl elsewhere too, and is
refused there as well. Prints a JSON summary: holds, refusals, whether the stalled hold's
end was refused, and the holds refused before their first write (never logged).
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Connection, Database, Work
from runtime.storage.leases import Lease, LeaseLost, acquire, check_fence, release

NAME = "race"


async def main(args: argparse.Namespace) -> None:
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=2)
        try:
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            holds = refused = stalled_refused = unlogged = 0
            while holds < args.holds:
                lease = await acquire(db, NAME, args.holder, args.ttl)
                if lease is None:
                    await trio.sleep(0.002)
                    continue
                holds += 1
                try:
                    row = await db.transaction(_start(lease))
                except LeaseLost:  # starved past the ttl before its first write
                    refused += 1
                    unlogged += 1
                else:
                    try:
                        await trio.sleep(args.stall if holds == args.stall_at else 0.01)
                        await db.transaction(_end(lease, row))
                    except LeaseLost:
                        refused += 1
                        stalled_refused += holds == args.stall_at
                await release(db, lease)
                await trio.sleep(0.003)  # let the other racer in
            summary = {
                "holds": holds,
                "refused": refused,
                "stalled_refused": stalled_refused,
                "unlogged": unlogged,
            }
            print(json.dumps(summary), flush=True)
        finally:
            await db.close()


def _start(lease: Lease) -> Work[int]:
    async def unit(conn: Connection) -> int:
        await check_fence(conn, lease)
        return int(
            await conn.fetchval(
                "insert into lease_log (holder, token, started_at)"
                " values ($1, $2, clock_timestamp()) returning id",
                lease.holder,
                lease.token,
            )
        )

    return unit


def _end(lease: Lease, row: int) -> Work[None]:
    async def unit(conn: Connection) -> None:
        await check_fence(conn, lease)
        await conn.execute("update lease_log set ended_at = clock_timestamp() where id = $1", row)

    return unit


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("holder")
    parser.add_argument("--holds", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=0.3)
    parser.add_argument("--stall-at", type=int, default=0)
    parser.add_argument("--stall", type=float, default=0.0)
    trio.run(main, parser.parse_args())
