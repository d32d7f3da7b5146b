"""A worker killed between the panel's "created" and our commit: the account is adopted on
restart, never duplicated.

The fake panel runs in the test; the workers are processes of their own
(``activation_proc.py``) on the test's database. The panel creates the user and then holds
its answer, so the first worker is killed (SIGKILL) with the account on the panel and
nothing of it in the database; a second worker claims the job once the dead one's claim
expires.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from starlette.requests import Request
from starlette.responses import Response

from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, job_kinds
from runtime.storage import subscriptions as subs
from runtime.storage.payments import Verdict
from runtime.storage.subscriptions import account_name
from runtime.testing.fakes.marzban import FakeMarzban

from .activation_proc import ADMIN, PASSWORD
from .conftest import Alerts, InChatProvider

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("activation_proc.py")
USER = 4004


class HoldingMarzban(FakeMarzban):
    """Creates the user, then holds the answer to that create for ``hold`` seconds (once):
    the account exists on the panel, and its creator has not heard of it."""

    hold = 0.0

    def __init__(self) -> None:
        super().__init__(admin_username=ADMIN, admin_password=PASSWORD)
        self.created = trio.Event()

    async def _create(self, request: Request) -> Response:
        response = await super()._create(request)
        if response.status_code == 200 and self.hold:
            hold, self.hold = self.hold, 0.0
            self.created.set()
            await trio.sleep(hold)
        return response


class Worker:
    """An activation_proc.py process, read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, dsn: str, url: str, owner: str, *args: str) -> Worker:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = await trio.lowlevel.open_process(
            [sys.executable, str(WORKER), dsn, url, owner, *args],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            with trio.fail_after(60):
                chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError("the worker process ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def lines_until(self, last: str) -> list[Any]:
        found = []
        while (line := await self.line()) != last:
            found.append(json.loads(line))
        return found

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        with trio.fail_after(60):
            await self.process.wait()
        if self.process.stdout is not None:
            await self.process.stdout.aclose()


@pytest.fixture
async def panel() -> AsyncIterator[HoldingMarzban]:
    fake = HoldingMarzban()
    async with fake.running():
        yield fake


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


async def test_a_worker_killed_after_the_panel_created_the_account_is_adopted_on_restart(
    db: Database,
    database_dsn: str,
    catalog: Catalog,
    alerts: Alerts,
    panel: HoldingMarzban,
) -> None:
    billing = Billing(
        db, catalog, {"stars": InChatProvider("stars")}, alerts, balance_currency="RUB"
    )
    checkout = await billing.buy(USER, "month", "stars")
    credited = await billing.confirm(
        ConfirmedPayment("stars", "charge-1", checkout.payment.id, 150, "XTR")
    )
    assert credited.verdict is Verdict.CREDITED and credited.subscription is not None
    subscription = credited.subscription
    name = account_name(USER, subscription.id)
    panel.hold = 30.0

    first = await Worker.start(database_dsn, panel.url, "doomed", "--claim-seconds", "1")
    try:
        assert await first.line() == "ready"
        with trio.fail_after(60):
            await panel.created.wait()
        first.process.send_signal(signal.SIGKILL)
        with trio.fail_after(60):
            await first.process.wait()
        assert first.process.returncode == -signal.SIGKILL
    finally:
        await first.stop()

    # The panel has the account; the database knows nothing of it.
    assert list(panel.users) == [name]
    created = dict(panel.users[name])
    assert created["expire"] == int(subscription.expires_at.timestamp())
    lost = await subs.get(db, subscription.id)
    assert lost is not None
    assert (lost.activation_status, lost.access_url) == ("pending", None)
    [job] = await rows(
        db, "select status, attempts, claimed_by from outbox where kind = $1", job_kinds.ACTIVATE
    )
    assert job == {"status": "pending", "attempts": 1, "claimed_by": "doomed"}

    second = await Worker.start(
        database_dsn, panel.url, "survivor", "--claim-seconds", "30", "--until-done"
    )
    try:
        assert await second.line() == "ready"
        assert await second.lines_until("done") == [{"claimed": 1}]  # once the claim expired
    finally:
        await second.stop()

    assert list(panel.users) == [name]  # adopted, not duplicated
    adopted = panel.users[name]
    assert adopted["proxies"] == created["proxies"]  # the same account, same credentials
    assert adopted["expire"] == int(subscription.expires_at.timestamp())
    assert len(panel.calls("POST", "/api/user")) == 2  # the second answered 409
    assert len(panel.calls("PUT", f"/api/user/{name}")) == 1
    active = await subs.get(db, subscription.id)
    assert active is not None
    assert active.activation_status == "active"
    assert active.vpn_account == name
    assert active.access_url is not None and "/sub/" in active.access_url
    [job] = await rows(
        db,
        "select status, attempts, lost_claims, claimed_by from outbox where kind = $1",
        job_kinds.ACTIVATE,
    )
    # the killed worker's claim was lost, which costs no attempt
    assert job == {"status": "done", "attempts": 1, "lost_claims": 1, "claimed_by": "survivor"}
    notices = await rows(
        db, "select dedup_key, payload from outbox where kind = $1 order by id", job_kinds.NOTIFY
    )
    assert [(n["dedup_key"], n["payload"]["template"]) for n in notices] == [
        (f"notify:payment:{checkout.payment.id}", "payment_received"),
        (f"notify:access:{subscription.id}:payment:{checkout.payment.id}", "access_ready"),
    ]
    assert alerts.alerts == []
