"""Apply the migrations to the database given as the only argument, from a process of its own.

Prints the versions this process applied, as JSON, on its last line of output.
"""

from __future__ import annotations

import json
import sys

import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database, apply_migrations


async def main(dsn: str) -> None:
    async with asyncio_loop():
        db = await Database.connect(dsn, min_size=0, max_size=1)
        try:
            applied = await apply_migrations(db)
        finally:
            await db.close()
    print(json.dumps([migration.version for migration in applied]), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
