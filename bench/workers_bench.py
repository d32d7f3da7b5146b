"""Workers benchmark: what one due-row scan costs on a million subscriptions, and the
notifier's delivered rate against its configured limit.

    .venv/bin/python bench/workers_bench.py [--quick]

Starts its own embedded PostgreSQL in a temporary directory, migrates two databases (one
with a million subscriptions, one with only the due ones and a few others), measures,
prints a table and removes everything. Every ratio compares numbers measured in the same
run.
"""

from __future__ import annotations

import argparse
import inspect
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _databases import bench_databases

from runtime.alerts import Alert
from runtime.bridge import asyncio_loop
from runtime.config import Settings
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Connection, Database, reminders
from runtime.storage import subscriptions as subs
from runtime.telegram import BotApi
from runtime.testing.telegram import DEFAULT_TOKEN, Limits, TelegramEmulator
from runtime.workers.expiry_cleanup import ExpiryCleanup
from runtime.workers.notifier import Notifier

EXPIRED_DUE = 2000
"""Active subscriptions whose expiry passed within the last hour (the cleanup's work)."""
REMINDER_DUE = 2000
"""Paid subscriptions ending in 23 to 24 hours (the 24-hour reminder's work)."""
RETENTION = timedelta(days=Settings().access.revoked_retention_days)
DELETION_SPAN = 10_000
"""Ended subscriptions among the first this many ids were revoked when they ended (most of
them longer ago than ``RETENTION``: the deletion scan's work); later ones a day ago."""
CLEANUP_BATCH: int = inspect.signature(ExpiryCleanup).parameters["batch"].default
"""The cleanup worker's batch: one iteration expires at most this many."""
SCAN_LIMIT = 1000
"""What ``ReminderScanner`` reads per scan."""
REMINDER = reminders.Reminder("paid", 24)
ENDED = reminders.Reminder("paid", 0)

DATABASES = {"big": ("bench_big", False), "due only": ("bench_small", False)}


@dataclass(frozen=True)
class Sizes:
    big: int
    small: int
    rounds: int
    messages: int
    rate: float


FULL = Sizes(big=1_000_000, small=10_000, rounds=3, messages=500, rate=100.0)
QUICK = Sizes(big=100_000, small=10_000, rounds=2, messages=200, rate=100.0)


# -- seeding -------------------------------------------------------------------------------------

# Subscription i belongs to user i. The first EXPIRED_DUE have just lapsed, the next
# REMINDER_DUE end in 23 to 24 hours; of the rest, a tenth are trials, 30% ended long ago
# (status expired, their account revoked) and the others run 73 hours to 60 days more:
# nothing any scan should read. The revoked accounts older than the retention are all
# among the first DELETION_SPAN ids, so both databases hold the same ones.
_USERS = "insert into users (telegram_id) select i from generate_series(1, $1) as i"
_ENDED = f"i > {EXPIRED_DUE + REMINDER_DUE} and i % 10 < 3"
_SUBSCRIPTIONS = f"""
insert into subscriptions (id, user_id, plan_id, kind, status, starts_at, expires_at,
                           activation_status, revoked_at, vpn_backend, vpn_account)
select i, i, 'month',
       case when i > {EXPIRED_DUE + REMINDER_DUE} and i % 10 = 0 then 'trial' else 'paid' end,
       case when {_ENDED} then 'expired' else 'active' end,
       e - interval '30 days', e,
       case when {_ENDED} then 'revoked' else 'active' end,
       case when not ({_ENDED}) then null
            when i <= {DELETION_SPAN} then e else now() - interval '1 day' end,
       'marzban', 'u' || i
from (
    select i, case
        when i <= {EXPIRED_DUE} then now() - make_interval(secs => i)
        when i <= {EXPIRED_DUE + REMINDER_DUE}
            then now() + interval '23 hours' + make_interval(secs => i - {EXPIRED_DUE})
        when i % 10 < 3
            then now() - interval '2 days' - make_interval(secs => (i::bigint * 7919) % 25920000)
        else now() + interval '73 hours' + make_interval(secs => (i::bigint * 7919) % 4924800)
    end as e
    from generate_series(1, $1) as i
) as t
"""


async def _seed(db: Database, total: int) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(_USERS, total)
        await conn.execute(_SUBSCRIPTIONS, total)
        await conn.execute("select setval('subscriptions_id_seq', $1)", total)

    await db.transaction(unit)
    await db.session(_vacuum)


async def _vacuum(conn: Connection) -> None:
    await conn.execute("vacuum analyze users, subscriptions, outbox, scan_cursors")


async def _reset(db: Database) -> None:
    """Undo one round: the lapsed subscriptions active again, no jobs, no cursors."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update subscriptions set status = 'active' where id <= $1 and status <> 'active'",
            EXPIRED_DUE,
        )
        await conn.execute(
            "update subscriptions set activation_status = 'revoked'"
            " where activation_status = 'deleting'"
        )
        await conn.execute("truncate outbox")
        await conn.execute("delete from scan_cursors")

    await db.transaction(unit)
    await db.session(_vacuum)


# -- the scans -----------------------------------------------------------------------------------


async def _explain(conn: Connection, query: str, *args: Any) -> str:
    rows = await conn.fetch("explain " + query, *args)
    return "\n".join(r[0] for r in rows)


PARTIAL = ("subscriptions_due_expiry", "subscriptions_ended", "subscriptions_revoked")
"""The partial indexes of due subscriptions (migrations 0001, 0002 and 0005)."""


def _verdict(plan: str) -> str:
    """The partial index the plan reads, and whether it reads the table whole."""
    used = [name for name in PARTIAL if re.search(rf"\b{name}\b", plan)]
    seq = "seq scan on subscriptions" if "Seq Scan on subscriptions" in plan else "no seq scan"
    return f"partial index {', '.join(used) if used else 'NOT used'}; {seq}"


async def explain(db: Database) -> dict[str, str]:
    """Which index each scan's query uses on this database (``explain`` with the values a
    first scan would use, as the worker's first executions get a plan for them)."""

    async def unit(conn: Connection) -> dict[str, str]:
        cleanup = await _explain(
            conn,
            "select id from subscriptions where status = 'active' and expires_at <= now()"
            " order by expires_at limit $1 for update skip locked",
            CLEANUP_BATCH,
        )
        deletions = await _explain(
            conn,
            "select id from subscriptions where activation_status = 'revoked'"
            " and revoked_at <= now() - $1::interval order by revoked_at limit $2"
            " for update skip locked",
            RETENTION,
            CLEANUP_BATCH,
        )
        times = await conn.fetchrow("select now() as now, now() + interval '24 hours' as upper")
        assert times is not None
        now, upper = times["now"], times["upper"]
        before = await _explain(
            conn,
            reminders._BEFORE,
            "paid",
            upper - reminders.INITIAL_LAG,
            0,
            upper,
            SCAN_LIMIT,
            now,
        )
        ended = await _explain(
            conn,
            reminders._ENDED,
            "paid",
            now - reminders.INITIAL_LAG,
            0,
            now,
            SCAN_LIMIT,
            now - reminders.ENDED_STALE_AFTER,
            now,
        )
        return {
            "expiry cleanup": _verdict(cleanup),
            "deletions": _verdict(deletions),
            "reminder 24h": _verdict(before),
            "reminder ended": _verdict(ended),
        }

    return await db.transaction(unit)


async def _timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


async def scans_part(dsn: str, total: int, rounds: int) -> dict[str, Any]:
    """Seed, then ``rounds`` times: one cleanup iteration, one 24-hour reminder scan and
    one "ended" scan, each timed, the state reset between rounds; the median round."""
    async with asyncio_loop():
        db = await Database.connect(dsn, min_size=1, max_size=2, command_timeout=300.0)
        try:
            started = time.perf_counter()
            await _seed(db, total)
            seeded = time.perf_counter() - started
            plans = await explain(db)
            seconds: dict[str, list[float]] = {
                "cleanup": [],
                "deletions": [],
                "reminder": [],
                "ended": [],
            }
            counts: dict[str, int] = {}
            for _ in range(rounds):
                await _reset(db)
                s, expired = await _timed(lambda: subs.expire_due(db, limit=CLEANUP_BATCH))
                seconds["cleanup"].append(s)
                counts["cleanup"] = len(expired)
                s, deleting = await _timed(
                    lambda: subs.queue_deletions(db, retention=RETENTION, limit=CLEANUP_BATCH)
                )
                seconds["deletions"].append(s)
                counts["deletions"] = len(deleting)
                s, result = await _timed(lambda: reminders.scan(db, REMINDER, limit=SCAN_LIMIT))
                seconds["reminder"].append(s)
                counts["reminder"] = result.queued
                s, result = await _timed(lambda: reminders.scan(db, ENDED, limit=SCAN_LIMIT))
                seconds["ended"].append(s)
                counts["ended"] = result.queued
            return {
                "seconds": {k: statistics.median(v) for k, v in seconds.items()},
                "counts": counts,
                "plans": plans,
                "seeded": seeded,
            }
        finally:
            await db.close()


# -- the notifier --------------------------------------------------------------------------------


class _Alerts:
    def submit(self, alert: Alert) -> None:
        print(f"alert: {alert.title}", file=sys.stderr)


class _Ctx:
    stop_requested = trio.Event()

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        pass


async def notifier_part(dsn: str, messages: int, rate: float) -> dict[str, float]:
    """``messages`` broadcast messages to as many users, sent by the real notifier at
    ``rate`` per second to the Telegram emulator, whose global limit is 10% above it."""
    emulator = TelegramEmulator(limits=Limits(global_rate=rate * 1.1))
    settings = Settings.model_validate({"telegram": {"token": DEFAULT_TOKEN}})
    async with asyncio_loop(), emulator.running():
        db = await Database.connect(dsn, min_size=1, max_size=8)
        try:
            chats = [emulator.create_user().id for _ in range(messages)]

            async def queue(conn: Connection) -> None:
                await conn.execute("truncate outbox")
                await conn.execute(
                    "insert into users (telegram_id) select unnest($1::bigint[])"
                    " on conflict do nothing",
                    chats,
                )
                await conn.execute(
                    "insert into outbox (kind, dedup_key, payload)"
                    " select 'telegram.notify', 'broadcast:1:' || c, jsonb_build_object("
                    " 'chat_id', c, 'template', 'broadcast',"
                    " 'params', jsonb_build_object('text', 'news #' || c))"
                    " from unnest($1::bigint[]) as c",
                    chats,
                )

            async def pending(conn: Connection) -> int:
                return int(
                    await conn.fetchval("select count(*) from outbox where status = 'pending'")
                )

            await db.transaction(queue)
            services = Services(settings, Metrics(), instance_id="bench")
            services.provide_db(db)
            services.provide_alerts(_Alerts())  # type: ignore[arg-type]
            api = BotApi(DEFAULT_TOKEN, api_base=emulator.url)
            sender = Notifier(services, api, "bench", rate_per_second=rate)
            started = trio.current_time()
            try:
                while True:
                    pause = await sender.iteration(_Ctx())  # type: ignore[arg-type]
                    if not await db.read(pending):
                        break
                    await trio.sleep(pause or 0.01)
            finally:
                await sender.close()
            took = trio.current_time() - started
        finally:
            await db.close()
    delivered = sum(len(emulator.messages(chat, from_bot=True)) for chat in chats)
    return {
        "delivered": delivered,
        "seconds": took,
        "minimum": (messages - 1) / rate,
        "answered_429": emulator.counters["answered.429"],
    }


# -- the run -------------------------------------------------------------------------------------


def report(
    scans: dict[str, dict[str, Any]],
    notify: dict[str, float],
    sizes: Sizes,
    total: float,
) -> str:
    big, small = scans["big"], scans["due only"]
    lines = [
        f"due-row scans: {sizes.big:,} subscriptions against {sizes.small:,} (the same"
        f" {EXPIRED_DUE + REMINDER_DUE:,} due rows), median of {sizes.rounds} rounds",
        f"  {'scan':<34} {'rows':>5} {'big ms':>7} {'due-only ms':>11} {'ratio':>7}",
    ]
    labels = {
        "cleanup": f"expiry cleanup (expire_due, {CLEANUP_BATCH})",
        "deletions": f"deletions (queue_deletions, {CLEANUP_BATCH})",
        "reminder": f"reminder 24h (scan, limit {SCAN_LIMIT})",
        "ended": f"reminder ended (scan, limit {SCAN_LIMIT})",
    }
    for key, label in labels.items():
        b, s = big["seconds"][key], small["seconds"][key]
        lines.append(
            f"  {label:<34} {big['counts'][key]:>5} {b * 1e3:>7.1f} {s * 1e3:>11.1f} {b / s:>6.2f}x"
        )
    lines.append(
        f"  ratio: big table against due-only table ({sizes.big // sizes.small}x the rows);"
        " rows: subscriptions expired, deletions or reminders queued"
    )
    lines.append("  plans on the big table:")
    for scan, verdict in big["plans"].items():
        lines.append(f"    {scan:<16} {verdict}")
    lines.append(f"  seeding {sizes.big:,} users and subscriptions: {big['seeded']:.1f} s")
    lines.append("")
    lines.append(
        f"notifier: {sizes.messages} messages to {sizes.messages} users, configured"
        f" {sizes.rate:.0f}/s, emulator global limit {sizes.rate * 1.1:.0f}/s"
    )
    rate = (notify["delivered"] - 1) / notify["seconds"]
    lines.append(
        f"  {'delivered':>9} {'seconds':>7} {'minimum':>7} {'msg/s':>6} {'of rate':>8} {'429s':>5}"
    )
    lines.append(
        f"  {notify['delivered']:>9.0f} {notify['seconds']:>7.2f} {notify['minimum']:>7.2f}"
        f" {rate:>6.1f} {rate / sizes.rate:>7.1%} {notify['answered_429']:>5.0f}"
    )
    lines.append("  msg/s: (delivered - 1) / seconds, the rate between the first and last start")
    lines.append("")
    lines.append(f"total {total:.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    sizes = QUICK if parser.parse_args().quick else FULL
    started = time.perf_counter()
    with bench_databases(DATABASES) as dsns:  # seeding writes a lot: async commit
        scans = {
            "big": trio.run(scans_part, dsns["big"], sizes.big, sizes.rounds),
            "due only": trio.run(scans_part, dsns["due only"], sizes.small, sizes.rounds),
        }
        notify = trio.run(notifier_part, dsns["due only"], sizes.messages, sizes.rate)
    print(report(scans, notify, sizes, time.perf_counter() - started))


if __name__ == "__main__":
    main()
