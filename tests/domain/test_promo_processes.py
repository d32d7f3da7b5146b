"""Promo activations across processes on a real PostgreSQL: other processes racing for the
last activations, a process killed (SIGKILL) in the middle of an activation, and one
killed after it, before the panel call its activation queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.access import Access
from runtime.bridge import run_asyncio
from runtime.catalog import Catalog
from runtime.storage import Connection, Database, grants
from runtime.storage import promo as store
from runtime.storage._database import terminate
from runtime.storage.promo import Kind, NewCode, Refusal
from runtime.testing.fakes.marzban import FakeMarzban

from .conftest import Alerts

ROOT = Path(__file__).resolve().parents[2]
RACER = Path(__file__).with_name("promo_proc.py")
PANEL_ADMIN, PANEL_PASSWORD = "promo-admin", "promo-pa55word"


class Racer:
    """A promo_proc.py process, read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, dsn: str, code: str, first: int, count: int) -> Racer:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(RACER), dsn, code, str(first), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        racer = cls(process)
        assert await racer.line() == "ready"
        return racer

    async def go(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            with trio.fail_after(120):
                chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError("the racer process ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def outcomes(self) -> dict[str, int]:
        found: dict[str, int] = json.loads(await self.line())
        assert await self.line() == "done"
        return found

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()  # SIGKILL
        with trio.fail_after(60):
            await self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                await stream.aclose()


@pytest.fixture
async def racers() -> AsyncIterator[list[Racer]]:
    started: list[Racer] = []
    yield started
    for racer in started:
        await racer.kill()


async def value(db: Database, sql: str, *args: Any) -> Any:
    async def unit(conn: Connection) -> Any:
        return await conn.fetchval(sql, *args)

    return await db.read(unit)


async def make(db: Database, code: str, kind: Kind, amount: int, **limits: Any) -> None:
    await store.create(db, NewCode(code, kind, amount, **limits), actor=grants.admin_actor(1))


async def test_two_processes_and_this_one_race_for_the_last_activations(
    db: Database, database_dsn: str, racers: list[Racer]
) -> None:
    await make(db, "RUSH", Kind.DAYS, 3, max_activations=100)
    users = range(10_000, 10_300)  # every process tries the same 300 users
    for _ in range(2):
        racers.append(await Racer.start(database_dsn, "RUSH", users[0], len(users)))
    here: Counter[str] = Counter()

    async def activate(user_id: int) -> None:
        result = await store.activate(db, "RUSH", user_id, plans={}, backend="marzban")
        here[result.refusal.value if result.refusal else "activated"] += 1

    for racer in racers:
        await racer.go()
    async with trio.open_nursery() as nursery:
        for user_id in users:
            nursery.start_soon(activate, user_id)
    totals = Counter(here)
    for racer in racers:
        totals.update(await racer.outcomes())
    assert totals["activated"] == 100
    assert totals["activated"] + totals["exhausted"] + totals["already_used"] == 900
    assert await value(db, "select activations from promo_codes") == 100
    assert await value(db, "select count(distinct user_id) from promo_activations") == 100
    assert await value(db, "select count(*) from subscriptions") == 100
    assert await value(db, "select count(*) from audit_log where action = 'promo.days'") == 100


async def _waiting_on_a_lock(db: Database) -> int:
    return int(
        await value(
            db,
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and wait_event_type = 'Lock'",
        )
    )


async def test_a_process_killed_during_an_activation_leaves_nothing_behind(
    db: Database, database_dsn: str, racers: list[Racer]
) -> None:
    await make(db, "HALT", Kind.BALANCE, 500, max_activations=1)
    session = await db.open_session()
    try:
        await run_asyncio(session.execute, "begin")
        await run_asyncio(session.execute, "select * from promo_codes for update")
        racer = await Racer.start(database_dsn, "HALT", 77, 1)
        racers.append(racer)
        await racer.go()
        with trio.fail_after(60):  # its activation is in, waiting for the code's row
            while await _waiting_on_a_lock(db) == 0:  # noqa: ASYNC110
                await trio.sleep(0.02)
        await racer.kill()
        await run_asyncio(session.execute, "commit")
    finally:
        await run_asyncio(terminate, session)
    with trio.fail_after(60):  # the dead client's backend ends and rolls back
        while await value(  # noqa: ASYNC110
            db,
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and pid <> pg_backend_pid() and state <> 'idle'",
        ):
            await trio.sleep(0.02)
    assert await value(db, "select count(*) from promo_activations") == 0
    assert await value(db, "select activations from promo_codes") == 0
    assert await value(db, "select count(*) from audit_log where action = 'promo.balance'") == 0
    assert await value(db, "select coalesce(sum(balance_minor), 0) from users") == 0
    again = await store.activate(db, "HALT", 77, plans={}, backend="marzban")
    assert again.refusal is None
    assert await value(db, "select balance_minor from users where telegram_id = 77") == 500


@pytest.fixture
async def panel() -> AsyncIterator[FakeMarzban]:
    fake = FakeMarzban(admin_username=PANEL_ADMIN, admin_password=PANEL_PASSWORD)
    async with fake.running():
        yield fake


async def test_a_process_killed_after_an_activation_leaves_its_panel_call_to_the_next(
    db: Database,
    database_dsn: str,
    racers: list[Racer],
    catalog: Catalog,
    alerts: Alerts,
    panel: FakeMarzban,
) -> None:
    await make(db, "AFTER", Kind.DAYS, 5)
    racer = await Racer.start(database_dsn, "AFTER", 88, 1)
    racers.append(racer)
    await racer.go()
    assert await racer.outcomes() == {"activated": 1}
    await racer.kill()  # committed; the panel was never called
    assert panel.users == {}
    backend = MarzbanBackend(
        MarzbanSettings.model_validate(
            {"base_url": panel.url, "username": PANEL_ADMIN, "password": PANEL_PASSWORD}
        )
    )
    try:
        access = Access(db, catalog, {"marzban": backend}, alerts)
        assert await access.activate_batch("after-restart") == 1
        assert await access.activate_batch("after-restart") == 0
    finally:
        await backend.aclose()
    assert len(panel.users) == 1
    assert await value(db, "select count(*) from subscriptions") == 1
    assert await value(db, "select activation_status from subscriptions") == "active"
    assert await value(db, "select count(*) from outbox where kind = 'vpn.activate'") == 1
    repeat = await store.activate(db, "AFTER", 88, plans={}, backend="marzban")
    assert repeat.refusal is Refusal.ALREADY_USED
    assert await value(db, "select count(*) from subscriptions") == 1
    assert alerts.alerts == []


async def test_a_free_plan_goes_the_way_of_a_purchase_to_the_access_message(
    db: Database, catalog: Catalog, alerts: Alerts, panel: FakeMarzban
) -> None:
    await store.create(
        db, NewCode("FREEMONTH", Kind.PLAN, plan_id="month"), actor=grants.admin_actor(1)
    )
    plans = {plan.id: plan.terms for plan in catalog.plans}
    result = await store.activate(db, "FREEMONTH", 99, plans=plans, backend="marzban")
    assert result.activated is not None and result.activated.subscription is not None
    backend = MarzbanBackend(
        MarzbanSettings.model_validate(
            {"base_url": panel.url, "username": PANEL_ADMIN, "password": PANEL_PASSWORD}
        )
    )
    try:
        access = Access(db, catalog, {"marzban": backend}, alerts)
        assert await access.activate_batch("worker") == 1
    finally:
        await backend.aclose()
    [user] = panel.users.values()
    assert user["data_limit"] == 100 * 2**30  # the plan's terms
    notice = await value(
        db, "select payload->>'template' from outbox where kind = 'telegram.notify'"
    )
    assert notice == "access_ready"
    assert await value(db, "select plan_id from subscriptions") == "month"
