"""A bot process killed with SIGKILL in the middle of a successful_payment handler loses
nothing: after a restart the payment is credited, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.storage import Connection, Database, inbox, job_kinds

from .conftest import TOKEN, Alerts, make_settings

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("bot_proc.py")
USER = 4242
NOWHERE = "http://127.0.0.1:9"  # no Telegram: this handler needs none


def payment_update(payload: str) -> dict[str, Any]:
    return {
        "update_id": 900001,
        "message": {
            "message_id": 5,
            "date": int(time.time()),
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "K", "language_code": "en"},
            "successful_payment": {
                "currency": "XTR",
                "total_amount": 150,
                "invoice_payload": payload,
                "telegram_payment_charge_id": "charge-killed",
                "provider_payment_charge_id": "",
            },
        },
    }


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


class Child:
    """A bot process, spawned early (importing aiogram takes seconds) and let go later."""

    def __init__(self, dsn: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), dsn, NOWHERE, *extra],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    async def go(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        stdout = self.process.stdout
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(stdout.readline)
        assert line.strip() == b"loaded"
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    async def stop(self, signum: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return await trio.to_thread.run_sync(self.process.wait)


async def wait_for(condition: Any, *, seconds: float = 30.0) -> None:
    """Poll ``condition`` (another process changes what it reads)."""
    with trio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_sigkill_mid_payment_then_restart_credits_once(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    """Killed before crediting, killed again right after crediting committed, then a
    healthy restart: the payment is credited once and the update is processed once."""
    settings = make_settings(NOWHERE)
    catalog = Catalog.from_settings(settings)
    alerts = Alerts()
    client = BotApiPaymentsClient(TOKEN, api_base=NOWHERE)
    billing = Billing(db, catalog, {"stars": StarsProvider(client)}, alerts, balance_currency="RUB")
    checkout = await billing.buy(USER, "month", "stars")
    payload = checkout.payment.id
    # Telegram's update, as the poller or the webhook stored it before acknowledging it
    await inbox.store(db, [payment_update(payload)])

    before, after = tmp_path / "before", tmp_path / "after"
    first = Child(database_dsn, "--hang", "before", "--marker", str(before))
    second = Child(database_dsn, "--hang", "after", "--marker", str(after))
    third = Child(database_dsn)
    children = [first, second, third]
    try:
        await first.go()
        await wait_for(lambda: _exists(before))
        await first.stop(signal.SIGKILL)
        assert await status(db) == "invoiced"
        assert await inbox.pending_count(db) == 1

        await second.go()  # claims it again once the dead process's claim expires
        await wait_for(lambda: _exists(after))
        await second.stop(signal.SIGKILL)
        assert await status(db) == "finalized"  # credited, but the update is not done
        assert await inbox.pending_count(db) == 1

        await third.go()

        async def processed() -> bool:
            return await inbox.pending_count(db) == 0

        await wait_for(processed)
        assert await third.stop(signal.SIGTERM) == 0
    finally:
        for child in children:
            await child.stop(signal.SIGKILL)
        await client.aclose()

    payments = await fetch(db, "select status, external_id from payments")
    assert payments == [{"status": "finalized", "external_id": "charge-killed"}]
    subscriptions = await fetch(db, "select user_id, kind from subscriptions")
    assert subscriptions == [{"user_id": USER, "kind": "paid"}]
    jobs = await fetch(db, "select kind, dedup_key from outbox order by id")
    assert [j["kind"] for j in jobs] == [job_kinds.ACTIVATE, job_kinds.NOTIFY]
    assert jobs[1]["dedup_key"] == f"notify:payment:{payload}"
    (update,) = await fetch(
        db,
        "select attempts, lost_claims, processed_at is not null as done, last_error"
        " from telegram_updates",
    )
    # one claim per process: the killed ones lost theirs, which costs no attempt (a hung
    # handler that outlived its timeout before the kill counts a failed attempt instead)
    assert update["done"] and update["last_error"] is None
    assert update["attempts"] + update["lost_claims"] >= 3


async def _exists(path: Path) -> bool:
    return await trio.Path(path).exists()


async def status(db: Database) -> str:
    rows = await fetch(db, "select status from payments")
    return str(rows[0]["status"])
