"""Commits one notification job in a process of its own, for tests/workers/test_wakeups.py.

    python enqueue_proc.py DSN DEDUP_KEY CHAT_ID TEXT

Run with the project root on PYTHONPATH. It enqueues a ``telegram.notify`` job (a
``broadcast`` template with TEXT) in one transaction, prints ``committed`` and exits.
"""

from __future__ import annotations

import argparse

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database, job_kinds, outbox


async def main(args: argparse.Namespace) -> None:
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=1)
        try:
            await outbox.enqueue_job(
                db,
                kind=job_kinds.NOTIFY,
                dedup_key=args.dedup_key,
                payload={
                    "chat_id": args.chat_id,
                    "template": "broadcast",
                    "params": {"text": args.text},
                },
            )
        finally:
            await db.close()
    print("committed", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("dedup_key")
    parser.add_argument("chat_id", type=int)
    parser.add_argument("text")
    trio.run(main, parser.parse_args())
