"""A process holding an instance id, driven by tests/storage/test_instances.py.

    python instance_proc.py DSN INSTANCE_ID

Run with the project root on PYTHONPATH. Takes the id's lock, keeps it (pinging, as the
runtime does), prints ``held`` and waits to be killed.
"""

from __future__ import annotations

import sys

import trio

from runtime.app._identity import claim_instance, keep_instance
from runtime.bridge import asyncio_loop
from runtime.storage import Database
from runtime.storage.instances import InstanceLock


async def main(dsn: str, instance: str) -> None:
    async with asyncio_loop():
        db = await Database.connect(dsn, min_size=1, max_size=2)
        lock = InstanceLock(db, instance)
        await claim_instance(lock, patience=30)
        print("held", flush=True)
        await keep_instance(lock, lambda reason: print(f"lost {reason}", flush=True))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
