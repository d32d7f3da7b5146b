"""trial_notifications and expiry_notifications: each reminder once per subscription,
offset and expiry, from scans that read only what became due."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, reminders
from runtime.storage.reminders import Reminder, reminders_for
from runtime.workers import reminders as reminder_workers
from runtime.workers.reminders import ReminderScanner

from .conftest import (
    Alerts,
    FlakyDatabase,
    Recorder,
    add_subscription,
    add_user,
    fast,
    fetch,
    jobs,
    make_services,
    supervised,
    wait_until,
)

CTX: Any = None


def scanners(services: Services) -> list[ReminderScanner]:
    return [
        ReminderScanner(services, "trial", reminders_for("trial", [6])),
        ReminderScanner(services, "paid", reminders_for("paid", [72, 24])),
    ]


async def sent(db: Database) -> list[tuple[str, int, int]]:
    """(template, subscription id, offset) of every queued reminder."""
    return sorted(
        (
            j["payload"]["template"],
            j["payload"]["params"]["subscription_id"],
            j["payload"]["params"]["offset_hours"],
        )
        for j in await jobs(db, job_kinds.NOTIFY)
    )


async def test_each_reminder_goes_out_once_at_its_offset(db: Database, services: Services) -> None:
    trial_soon = await add_subscription(db, 1, timedelta(hours=5, minutes=30), kind="trial")
    trial_later = await add_subscription(db, 2, timedelta(hours=7), kind="trial")
    trial_over = await add_subscription(
        db, 3, timedelta(minutes=-10), kind="trial", status="expired"
    )
    three_days = await add_subscription(db, 4, timedelta(hours=71, minutes=30))
    one_day = await add_subscription(db, 5, timedelta(hours=23, minutes=30))
    await add_user(db, 6, auto_renew=True)
    auto = await add_subscription(db, 6, timedelta(hours=23, minutes=40))
    ended = await add_subscription(db, 7, timedelta(minutes=-5))  # not yet cleaned up
    refunded = await add_subscription(db, 8, timedelta(minutes=-5), status="revoked")
    for _ in range(2):  # a restart, a second run: nothing twice
        for scanner in scanners(services):
            await scanner.iteration(CTX)
    assert await sent(db) == sorted(
        [
            ("trial_ending", trial_soon, 6),
            ("trial_ended", trial_over, 0),
            ("expiry_soon", three_days, 72),
            ("expiry_soon", one_day, 24),
            ("expiry_soon_auto", auto, 24),
            ("expired", ended, 0),
        ]
    )
    assert trial_later not in {s for _, s, _ in await sent(db)}
    assert refunded not in {s for _, s, _ in await sent(db)}
    keys = {j["dedup_key"] for j in await jobs(db, job_kinds.NOTIFY)}
    expiry = (await fetch(db, "select expires_at from subscriptions where id = $1", one_day))[0]
    assert reminders.dedup_key(one_day, 24, expiry["expires_at"]) in keys
    assert f"remind:{one_day}:24:{int(expiry['expires_at'].timestamp())}" in keys


async def test_two_scanners_at_once_queue_each_reminder_once(
    db: Database, services: Services
) -> None:
    ids = [await add_subscription(db, 100 + i, timedelta(hours=23, minutes=30)) for i in range(30)]
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            for scanner in scanners(services):
                nursery.start_soon(scanner.iteration, CTX)
    assert sorted(s for _, s, _ in await sent(db)) == sorted(ids)


async def test_a_scan_reads_what_is_due_not_the_table(db: Database) -> None:
    await fetch(
        db,
        "insert into users (telegram_id) select g from generate_series(1000, 2999) g",
    )
    await fetch(
        db,
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
        " activation_status, vpn_backend) select g, 'month', 'paid', now(),"
        " now() + interval '200 hours' + g * interval '1 second', 'active', 'marzban'"
        " from generate_series(1000, 2999) g",
    )
    due = [await add_subscription(db, 10 + i, timedelta(hours=23, minutes=30)) for i in range(3)]
    day = Reminder("paid", 24)
    first = await reminders.scan(db, day)
    assert (first.scanned, first.queued, first.more) == (3, 3, False)
    again = await reminders.scan(db, day)
    assert (again.scanned, again.queued) == (0, 0)
    assert sorted(s for _, s, _ in await sent(db)) == sorted(due)


async def test_the_cursor_follows_the_clock(db: Database) -> None:
    soon = await add_subscription(db, 1, timedelta(hours=6, seconds=1.5), kind="trial")
    six = Reminder("trial", 6)
    assert (await reminders.scan(db, six)).queued == 0
    await trio.sleep(2.0)
    assert (await reminders.scan(db, six)).queued == 1
    assert (await reminders.scan(db, six)).queued == 0
    assert await sent(db) == [("trial_ending", soon, 6)]


async def test_full_batches_carry_on_where_they_stopped(db: Database) -> None:
    ids = [await add_subscription(db, 200 + i, timedelta(hours=23, minutes=30)) for i in range(7)]
    day = Reminder("paid", 24)
    results = [await reminders.scan(db, day, limit=3) for _ in range(4)]
    assert [(r.scanned, r.more) for r in results] == [(3, True), (3, True), (1, False), (0, False)]
    assert sorted(s for _, s, _ in await sent(db)) == sorted(ids)


async def test_no_reminder_for_a_user_whose_access_goes_on(
    db: Database, services: Services
) -> None:
    await add_subscription(db, 1, timedelta(hours=5, minutes=30), kind="trial")
    await add_subscription(db, 1, timedelta(days=20))  # bought a plan during the trial
    await add_subscription(db, 2, timedelta(minutes=-3), kind="trial", status="expired")
    await add_subscription(db, 2, timedelta(days=20))
    for scanner in scanners(services):
        await scanner.iteration(CTX)
    assert await sent(db) == []


async def test_a_late_scan_sends_only_the_closest_reminder(db: Database) -> None:
    sid = await add_subscription(db, 1, timedelta(hours=23, minutes=30))
    for reminder in reminders_for("paid", [72, 24]):
        await reminders.scan(db, reminder, initial_lag=timedelta(days=10))
    assert await sent(db) == [("expiry_soon", sid, 24)]


async def test_a_database_outage_fails_iterations(
    db: Database, settings: Settings, alerts: Alerts
) -> None:
    flaky = FlakyDatabase(db)
    services = make_services(flaky, settings, alerts)
    sid = await add_subscription(db, 1, timedelta(hours=5, minutes=30), kind="trial")
    recorder = Recorder()
    flaky.down = True
    spec = fast(reminder_workers.trial_spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder):
        await trio.sleep(0.5)
        flaky.down = False

        async def queued() -> bool:
            return bool(await jobs(db, job_kinds.NOTIFY))

        await wait_until(queued)
    assert await sent(db) == [("trial_ending", sid, 6)]
    assert recorder.failures and {f[1] for f in recorder.failures} == {"infra_error"}
