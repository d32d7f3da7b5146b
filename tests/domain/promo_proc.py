"""A process activating promo codes, driven by tests/domain/test_promo_processes.py.

    python promo_proc.py DSN CODE FIRST_USER COUNT

Run with the project root on PYTHONPATH. Prints ``ready`` once connected and waits for a
line on stdin, so racers start together; then activates CODE for users FIRST_USER ..
FIRST_USER + COUNT - 1, all at once, and prints one JSON line: how many activations each
outcome had (``"activated"`` or a refusal). Then it prints ``done`` and waits to be told
to exit (a line on stdin), or killed: a test may kill it at any point.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database
from runtime.storage import promo as store
from runtime.storage.subscriptions import Terms


def say(message: object) -> None:
    print(message if isinstance(message, str) else json.dumps(message), flush=True)


async def main(args: argparse.Namespace) -> None:
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=4)
        try:
            say("ready")
            await trio.to_thread.run_sync(sys.stdin.readline)
            outcomes: Counter[str] = Counter()
            plans: dict[str, Terms] = {}

            async def activate(user_id: int) -> None:
                result = await store.activate(
                    db, args.code, user_id, plans=plans, backend="marzban"
                )
                outcomes[result.refusal.value if result.refusal else "activated"] += 1

            async with trio.open_nursery() as nursery:
                for user_id in range(args.first, args.first + args.count):
                    nursery.start_soon(activate, user_id)
            say(dict(outcomes))
            say("done")
            await trio.to_thread.run_sync(sys.stdin.readline)
        finally:
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("code")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    trio.run(main, parser.parse_args())
