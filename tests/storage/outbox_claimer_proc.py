"""An outbox claimer in a process of its own, driven by tests/storage/test_outbox.py.

    python outbox_claimer_proc.py DSN OWNER run  --batch N --ttl S
    python outbox_claimer_proc.py DSN OWNER hang --batch N --ttl S
    python outbox_claimer_proc.py DSN INSTANCE poisoned --batch N --ttl S

Run with the project root on PYTHONPATH. Both print ``ready`` once connected and wait for
a line on stdin before claiming, so that several processes start claiming together.

``run`` claims and completes batches until no job is pending, printing one JSON line per
batch (``{"claimed": [...], "completed": [...]}``), then ``done``.
``hang`` claims one batch, prints ``{"hung": [job, ...]}`` and sleeps until killed.
``poisoned`` works as an instance of the runtime does: it takes back the claims its
previous run left (the owner prefix ``INSTANCE:``), claims batches without starting them,
and marks each job started just before doing it; a job whose payload says ``poison``
kills the process with SIGKILL. It prints ``done`` when nothing is pending.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database, outbox

KIND = "test.job"


def say(message: object) -> None:
    print(message if isinstance(message, str) else json.dumps(message), flush=True)


async def main(args: argparse.Namespace) -> None:
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=2)
        try:
            say("ready")
            await trio.to_thread.run_sync(sys.stdin.readline)
            if args.mode == "poisoned":
                await poisoned(db, args)
                say("done")
                return
            if args.mode == "hang":
                jobs = await outbox.claim(
                    db, kinds=[KIND], owner=args.owner, limit=args.batch, claim_seconds=args.ttl
                )
                hung = [
                    {
                        "id": j.id,
                        "kind": j.kind,
                        "dedup_key": j.dedup_key,
                        "payload": j.payload,
                        "attempts": j.attempts,
                        "max_attempts": j.max_attempts,
                        "claimed_by": j.claimed_by,
                        "claim_expires_at": j.claim_expires_at.isoformat(),
                        "claim": j.claim,
                        "steps_done": j.steps_done,
                    }
                    for j in jobs
                ]
                say({"hung": hung})
                await trio.sleep_forever()
            while True:
                jobs = await outbox.claim(
                    db, kinds=[KIND], owner=args.owner, limit=args.batch, claim_seconds=args.ttl
                )
                if not jobs:
                    if (await outbox.counts(db))["pending"] == 0:
                        break
                    await trio.sleep(0.02)
                    continue
                await trio.lowlevel.checkpoint()  # the side effect would happen here
                counted = await outbox.complete(db, jobs, owner=args.owner)
                say({"claimed": [j.id for j in jobs], "completed": sorted(counted)})
            say("done")
        finally:
            await db.close()


async def poisoned(db: Database, args: argparse.Namespace) -> None:
    instance = args.owner
    await outbox.take_back(db, owner_prefix=f"{instance}:")
    owner = f"{instance}:worker:{os.getpid()}"
    while True:
        jobs = await outbox.claim(
            db,
            kinds=[KIND],
            owner=owner,
            limit=args.batch,
            claim_seconds=args.ttl,
            started=False,
        )
        if not jobs and (await outbox.counts(db))["pending"] == 0:
            return
        for job in jobs:
            await outbox.record(db, [outbox.Mark(job, started=True)], owner=owner)
            if job.payload.get("poison"):
                os.kill(os.getpid(), signal.SIGKILL)
            await outbox.complete(db, job, owner=owner)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("owner")
    parser.add_argument("mode", choices=["run", "hang", "poisoned"])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=30.0)
    trio.run(main, parser.parse_args())
