"""Referral rewards in a process of their own, driven by tests/storage/test_referral_processes.py.

    python referral_proc.py DSN OWNER MODE [--ttl S] [--payer ID]

Run with the project root on PYTHONPATH. It prints ``ready`` once connected and waits for
a line on stdin before it starts, so that several processes start together. The rules are
``RULES`` below. Modes:

``run``         claims and runs reward and clawback jobs (``referral_rewards.run_job``)
                until none is pending, one JSON line per job (``{"job": id, "granted": n}``),
                then ``done``;
``hang``        claims one batch, prints ``{"claimed": [ids]}`` and sleeps until killed:
                a worker killed after the payment committed, before the rewards;
``grant-hang``  claims one batch, runs its jobs (the grants commit), prints
                ``{"granted": n}`` and sleeps until killed: killed before the jobs complete;
``pay-and-die`` credits a payment of ``--payer`` (a top-up), prints its id, and kills
                itself with SIGKILL before anything else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Connection, Database, outbox
from runtime.storage import referrals as store
from runtime.storage.referrals import Level
from runtime.workers.referral_rewards import run_job
from tests.storage.referral_setup import pay, rules

RULES = rules(Level("fixed", 100, every_payment=True), Level("percent", 10, every_payment=True))


def say(message: object) -> None:
    print(message if isinstance(message, str) else json.dumps(message), flush=True)


async def pending(db: Database) -> int:
    async def unit(conn: Connection) -> int:
        found = await conn.fetchval(
            "select count(*) from outbox where kind = any($1::text[]) and status = 'pending'",
            list(store.KINDS),
        )
        return int(found or 0)

    return await db.read(unit)


async def main(args: argparse.Namespace) -> None:
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=4)
        try:
            say("ready")
            await trio.to_thread.run_sync(sys.stdin.readline)
            if args.mode == "pay-and-die":
                say(await pay(db, args.payer, amount=1000))
                os.kill(os.getpid(), signal.SIGKILL)
            if args.mode in ("hang", "grant-hang"):
                jobs = await outbox.claim(
                    db, kinds=store.KINDS, owner=args.owner, limit=10, claim_seconds=args.ttl
                )
                if args.mode == "hang":
                    say({"claimed": [j.id for j in jobs]})
                else:
                    granted = [len(await run_job(db, job, RULES)) for job in jobs]
                    say({"granted": sum(granted)})
                await trio.sleep_forever()
            while True:
                jobs = await outbox.claim(
                    db, kinds=store.KINDS, owner=args.owner, limit=3, claim_seconds=args.ttl
                )
                for job in jobs:
                    granted = await run_job(db, job, RULES)
                    assert await outbox.complete(db, job, owner=args.owner)
                    say({"job": job.id, "granted": len(granted)})
                if not jobs:
                    if await pending(db) == 0:
                        break
                    await trio.sleep(0.05)  # a claim held elsewhere: look again
            say("done")
        finally:
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("owner")
    parser.add_argument("mode", choices=["run", "hang", "grant-hang", "pay-and-die"])
    parser.add_argument("--ttl", type=float, default=60.0)
    parser.add_argument("--payer", type=int, default=0)
    trio.run(main, parser.parse_args())
