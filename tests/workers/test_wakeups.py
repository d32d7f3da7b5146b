"""Workers woken by committed work: across processes through PostgreSQL notifications, with
polling as the fallback when the listener is lost, and nothing sent for a rollback.

The workers here pause for an hour between looks on their own, so only a wake-up explains
work done within a test's deadline (deadlines are generous: a slow machine only waits
longer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.failures import InfraError
from runtime.plugin_api import Services
from runtime.storage import Connection, Database, job_kinds, outbox
from runtime.storage.wakeups import Listener
from runtime.supervision import ActorSpec, Supervisor
from runtime.testing.telegram import DEFAULT_TOKEN, Limits, SimUser, TelegramEmulator
from runtime.workers import notifier, wakeups_of
from runtime.workers._wakeups import LISTENER, Wakeups, listener_spec

from .conftest import Alerts, add_user, fast, make_services, make_settings, supervised

ROOT = Path(__file__).resolve().parents[2]
ENQUEUE = Path(__file__).with_name("enqueue_proc.py")
HOUR = 3600.0
DEADLINE = 60.0


class SessionGate:
    """The test database, refusing new sessions outside the pool while ``closed``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.closed = False

    async def open_session(self, **kwargs: Any) -> Any:
        if self.closed:
            raise InfraError("the database is not accepting connections (test)")
        return await self._db.open_session(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.fixture
async def emulator() -> Any:
    fake = TelegramEmulator(limits=Limits.off())
    async with fake.running():
        yield fake


def woken_services(db: Any, emulator: TelegramEmulator, alerts: Alerts) -> Services:
    settings = make_settings(
        telegram={"token": DEFAULT_TOKEN, "api_base": emulator.url},
        wakeups={"fallback_interval_seconds": HOUR},
    )
    return make_services(db, settings, alerts)


def sender(services: Services, *, interval: float) -> ActorSpec:
    """The notifier, looking on its own every ``interval`` seconds while nothing wakes it
    (and, while the listener is up, every hour: its lease lasts long enough for that)."""
    return fast(notifier.spec(services, claim_seconds=4 * HOUR), interval=interval)


def broadcast(chat_id: int, text: str) -> dict[str, Any]:
    return {"chat_id": chat_id, "template": "broadcast", "params": {"text": text}}


async def until(check: Any, what: str, seconds: float = DEADLINE) -> None:
    """Wait for a state another task sets (the hub's, the supervisor's)."""
    try:
        with trio.fail_after(seconds):
            while not check():  # noqa: ASYNC110 - plain attributes, not events
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"not {what} within {seconds:g} s") from None


async def message(user: SimUser, text: str) -> None:
    await user.wait_for_message(lambda m: text in (m.content or ""), timeout=DEADLINE)


def status(supervisor: Supervisor, name: str) -> Any:
    return next(s for s in supervisor.statuses if s.name == name)


async def test_a_commit_in_another_process_wakes_the_notifier_at_once(
    db: Database, database_dsn: str, alerts: Alerts, emulator: TelegramEmulator
) -> None:
    services = woken_services(db, emulator, alerts)
    hub = wakeups_of(services)
    user = emulator.create_user(language_code="en")
    await add_user(db, user.id)
    async with supervised(listener_spec(services), sender(services, interval=HOUR)):
        await until(lambda: hub.listening, "listening")
        await outbox.enqueue_job(
            db, kind=job_kinds.NOTIFY, dedup_key="test:first", payload=broadcast(user.id, "one")
        )
        await message(user, "one")
        # The iteration that sent "one" claimed before it sent; the notifier's next look
        # of its own is an hour away. Another process commits "two".
        done = await trio.run_process(
            [sys.executable, str(ENQUEUE), database_dsn, "test:second", str(user.id), "two"],
            capture_stdout=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.stdout.strip() == b"committed"
        await message(user, "two")
        assert hub.delivered >= 2


async def test_a_lost_listener_puts_the_workers_back_on_polling_and_says_so(
    db: Database, alerts: Alerts, emulator: TelegramEmulator
) -> None:
    gate = SessionGate(db)
    services = woken_services(gate, emulator, alerts)
    hub = wakeups_of(services)
    user = emulator.create_user(language_code="en")
    await add_user(db, user.id)
    specs = (listener_spec(services), sender(services, interval=0.2))
    async with supervised(*specs) as supervisor:
        await until(lambda: hub.listening, "listening")
        gate.closed = True  # the listener cannot come back
        ended = await _terminate_listener(db)
        assert ended == 1
        await until(lambda: not hub.listening, "the listener lost", seconds=3 * DEADLINE)
        reason = status(supervisor, LISTENER).degraded_reason or ""
        assert "wake-up listener lost" in reason
        # Nobody listens: only the notifier's own short interval can find this job.
        await outbox.enqueue_job(
            db, kind=job_kinds.NOTIFY, dedup_key="test:polled", payload=broadcast(user.id, "polled")
        )
        await message(user, "polled")
        gate.closed = False
        await until(lambda: hub.listening, "listening again", seconds=3 * DEADLINE)
        await until(lambda: status(supervisor, LISTENER).degraded_reason is None, "recovered")


async def _terminate_listener(db: Database) -> int:
    async def unit(conn: Connection) -> int:
        return int(
            await conn.fetchval(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                " where datname = current_database() and application_name like 'vpnbot wakeups%'"
            )
        )

    return await db.transaction(unit)


class _RolledBack(Exception):
    pass


async def test_a_rolled_back_transaction_wakes_nobody(db: Database) -> None:
    received: list[str] = []
    marker = trio.Event()

    def deliver(payload: str) -> None:
        received.append(payload)
        if payload == "test.marker":
            marker.set()

    listener = await Listener.open(db, deliver)
    try:

        async def rolled_back(conn: Connection) -> None:
            await outbox.enqueue(conn, kind="test.rolled_back", dedup_key="rb", payload={})
            raise _RolledBack

        with pytest.raises(_RolledBack):
            await db.transaction(rolled_back)
        # Notifications arrive in commit order: had the rollback sent one, it came first.
        await outbox.enqueue_job(db, kind="test.marker", dedup_key="marker", payload={})
        with trio.fail_after(DEADLINE):
            await marker.wait()
        assert received == ["test.marker"]
    finally:
        await listener.close()


async def test_one_statement_of_many_jobs_sends_one_notification_per_kind(db: Database) -> None:
    received: list[str] = []
    marker = trio.Event()

    def deliver(payload: str) -> None:
        received.append(payload)
        if payload == "test.marker":
            marker.set()

    listener = await Listener.open(db, deliver)
    try:

        async def many(conn: Connection) -> None:
            await outbox.enqueue_many(
                conn, kind=job_kinds.REVOKE, jobs=[(f"r:{i}", {"i": i}) for i in range(50)]
            )

        await db.transaction(many)
        await outbox.enqueue_job(db, kind="test.marker", dedup_key="marker", payload={})
        with trio.fail_after(DEADLINE):
            await marker.wait()
        assert received == [job_kinds.REVOKE, "test.marker"]
    finally:
        await listener.close()


def test_pauses_are_long_while_listening_and_never_past_due_work() -> None:
    hub = Wakeups(fallback_interval=30.0)
    wakeup = hub.subscribe([job_kinds.NOTIFY])
    assert hub.idle_pause(1.0) == 1.0  # not listening: the worker's own interval
    hub.set_listening(True)
    assert wakeup.is_set()  # connecting wakes everyone: what was committed meanwhile
    assert hub.idle_pause(1.0) == 30.0
    assert hub.idle_pause(1.0, due_in=4.0) == 4.0
    assert hub.idle_pause(1.0, due_in=-2.0) == 0.0
    assert hub.idle_pause(1.0, at_most=10.0) == 10.0
    wakeup.clear()
    hub.poke(job_kinds.ACTIVATE)
    assert not wakeup.is_set()
    hub.deliver(job_kinds.NOTIFY)
    assert wakeup.is_set() and hub.delivered == 1
    wakeup.clear()
    wakeup.muted = True  # a standby ignores wake-ups
    hub.poke(job_kinds.NOTIFY)
    assert not wakeup.is_set()
