"""An activation worker in a process of its own, driven by tests/domain/test_crash_adoption.py.

    python activation_proc.py DSN PANEL_URL OWNER [--claim-seconds S] [--until-done]

Run with the project root on PYTHONPATH. It builds ``Access`` with the Marzban backend for
the panel at PANEL_URL (the test's fake, whose admin is ``ADMIN``/``PASSWORD`` below),
prints ``ready`` once connected, then runs ``activate_batch`` in a loop, printing one JSON
line per batch that claimed something (``{"claimed": n}``); logs go to stderr. With
``--until-done`` it stops once no activation job is pending and prints ``done``; without,
it runs until killed.
"""

from __future__ import annotations

import argparse
import json

import trio

from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.access import Access
from runtime.alerts import Alert
from runtime.bridge import asyncio_loop
from runtime.catalog import Catalog
from runtime.logs import configure_logging
from runtime.storage import Connection, Database, job_kinds
from tests.domain.conftest import SETTINGS

ADMIN = "crash-admin"
PASSWORD = "crash-pa55word"


def say(message: object) -> None:
    print(message if isinstance(message, str) else json.dumps(message), flush=True)


class PrintedAlerts:
    def submit(self, alert: Alert) -> None:
        say({"alert": alert.key})


async def pending_activations(db: Database) -> int:
    async def unit(conn: Connection) -> int:
        found = await conn.fetchval(
            "select count(*) from outbox where kind = $1 and status = 'pending'",
            job_kinds.ACTIVATE,
        )
        return int(found or 0)

    return await db.read(unit)


async def main(args: argparse.Namespace) -> None:
    configure_logging(fmt="json", level="info", secrets=[PASSWORD])  # stderr: stdout is ours
    settings = MarzbanSettings.model_validate(
        {
            "base_url": args.panel_url,
            "username": ADMIN,
            "password": PASSWORD,
            "timeout_seconds": 60.0,  # a held answer is waited for, not timed out
        }
    )
    backend = MarzbanBackend(settings)
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=4)
        try:
            access = Access(
                db, Catalog.from_settings(SETTINGS), {"marzban": backend}, PrintedAlerts()
            )
            say("ready")
            while True:
                claimed = await access.activate_batch(args.owner, claim_seconds=args.claim_seconds)
                if claimed:
                    say({"claimed": claimed})
                elif args.until_done and await pending_activations(db) == 0:
                    break
                await trio.sleep(0.05)
            say("done")
        finally:
            await db.close()
            await backend.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("panel_url")
    parser.add_argument("owner")
    parser.add_argument("--claim-seconds", type=float, default=1.0)
    parser.add_argument("--until-done", action="store_true")
    trio.run(main, parser.parse_args())
