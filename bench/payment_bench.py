"""Payment benchmark: crediting a confirmed payment, vpnbot against plain asyncpg and
SQLAlchemy's async ORM, in the same run.

    .venv/bin/python bench/payment_bench.py [--quick] [--rounds N] [--payments N]

Starts its own embedded PostgreSQL in a temporary directory with one migrated database per
path (the same schema, durable commits), and before every run fills that path's database
with the same intents: a quarter as many users as payments, each with four open invoices,
so that the first payment of a user starts a subscription and the next three extend it.
Each run is a fresh Python process that finalizes every intent once, one at a time
(sequential) or from 8 tasks at once (concurrent), on a pool of 8 connections.

The business transaction is the same on every path: lock the intent and its owner, refuse
a charge id used by another payment, check payer, amount and currency, extend the user's
active subscription on the plan's backend from max(now, expiry) or start one, move the
intent to paid then finalized, and write the activation job and the user's notification
to the outbox, all in one transaction. vpnbot runs its real path (``Billing.confirm``,
JSON logs written to /dev/null); the peers run on plain asyncio.

Prints payments/s and p50/p99 latency (median, and min-max over the rounds), the client
CPU per payment, the ratio to plain asyncpg, and the machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("vpnbot", "asyncpg", "sqlalchemy")
MODES = {"sequential": 1, "concurrent": 8}
POOL_SIZE = 8
PROVIDER = "stars"
CURRENCY = "XTR"
PRICE = 150
PLAN = "month"
BACKEND = "marzban"
DURATION = timedelta(days=30)
FIRST_USER = 10_000


@dataclass(frozen=True)
class Intent:
    id: str
    user_id: int


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    latencies: list[float]


async def _each(
    intents: Sequence[Intent], tasks: int, pay: Callable[[Intent], Awaitable[Any]]
) -> Run:
    """``pay`` every intent from ``tasks`` asyncio tasks; latency of each, wall and CPU."""
    queue = list(reversed(intents))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            intent = queue.pop()
            started = time.perf_counter()
            await pay(intent)
            latencies.append(time.perf_counter() - started)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return Run(time.perf_counter() - started, time.process_time() - cpu, latencies)


# -- vpnbot --------------------------------------------------------------------------------


def vpnbot_run(dsn: str, intents: Sequence[Intent], tasks: int) -> Run:
    """``Billing.confirm``, as the webhook door and the bot call it, from trio tasks."""
    import trio

    from runtime.billing import Billing
    from runtime.bridge import asyncio_loop
    from runtime.catalog import Catalog, Plan, Price
    from runtime.logs import configure_logging
    from runtime.plugin_api.payments import ConfirmedPayment
    from runtime.storage import Database
    from runtime.storage.payments import Verdict

    configure_logging(fmt="json", level="info", stream=open(os.devnull, "w"))  # noqa: SIM115
    catalog = Catalog(
        {
            PLAN: Plan(
                id=PLAN,
                titles={"en": "1 month"},
                duration=DURATION,
                backend=BACKEND,
                prices=(Price(PROVIDER, CURRENCY, PRICE),),
                traffic_limit_bytes=None,
                device_limit=None,
            )
        },
        trial=None,
    )

    class NoAlerts:
        def submit(self, alert: object) -> None:
            raise AssertionError(f"a bench payment was refused: {alert}")

    async def main() -> Run:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
            billing = Billing(db, catalog, {}, NoAlerts(), balance_currency="RUB")
            queue = list(reversed(intents))
            latencies: list[float] = []

            async def worker() -> None:
                while queue:
                    intent = queue.pop()
                    started = time.perf_counter()
                    result = await billing.confirm(
                        ConfirmedPayment(
                            PROVIDER,
                            f"charge-{intent.id}",
                            intent.id,
                            PRICE,
                            CURRENCY,
                            intent.user_id,
                        )
                    )
                    latencies.append(time.perf_counter() - started)
                    if result.verdict is not Verdict.CREDITED:
                        raise RuntimeError(f"not credited: {result}")

            try:
                cpu, started = time.process_time(), time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(tasks):
                        nursery.start_soon(worker)
                return Run(time.perf_counter() - started, time.process_time() - cpu, latencies)
            finally:
                await db.close()

    result: Run = trio.run(main)
    return result


# -- plain asyncpg -------------------------------------------------------------------------


def asyncpg_run(dsn: str, intents: Sequence[Intent], tasks: int) -> Run:
    """A pool, ``async with conn.transaction():`` and the statements, as asyncpg's users
    write them."""
    import asyncpg

    async def finalize(pool: asyncpg.Pool, intent: Intent, charge: str, payer: int) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "select user_id from payments where id = $1", uuid.UUID(intent.id)
            )
            await conn.execute("select 1 from users where telegram_id = $1 for update", owner)
            payment = await conn.fetchrow(
                "select * from payments where id = $1 for update", uuid.UUID(intent.id)
            )
            used = await conn.fetchval(
                "select 1 from payments where provider = $1 and external_id = $2 and id <> $3",
                PROVIDER,
                charge,
                payment["id"],
            )
            if (
                used
                or payment["status"] not in ("created", "invoiced", "expired")
                or payer != owner
                or (payment["amount_minor"], payment["currency"]) != (PRICE, CURRENCY)
            ):
                return False
            subscription = await conn.fetchrow(
                "select id from subscriptions where user_id = $1 and vpn_backend = $2"
                " and kind = 'paid' and status = 'active'"
                " order by expires_at desc limit 1 for update",
                owner,
                BACKEND,
            )
            if subscription is not None:
                subscription = await conn.fetchrow(
                    "update subscriptions set expires_at = greatest(now(), expires_at) + $2,"
                    " plan_id = $3, period_started_at = now(), activation_status = 'pending',"
                    " next_attempt_at = now(), activation_attempts = 0, last_error = null,"
                    " updated_at = now() where id = $1 returning id, expires_at",
                    subscription["id"],
                    DURATION,
                    PLAN,
                )
            else:
                subscription = await conn.fetchrow(
                    "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
                    " vpn_backend, next_attempt_at) values ($1, $2, 'paid', now(), now() + $3,"
                    " $4, now()) returning id, expires_at",
                    owner,
                    PLAN,
                    DURATION,
                    BACKEND,
                )
                await conn.execute(
                    "update subscriptions set vpn_account = $2 where id = $1",
                    subscription["id"],
                    f"u{owner}_s{subscription['id']}",
                )
            await conn.execute(
                "insert into outbox (kind, dedup_key, payload, max_attempts)"
                " values ('vpn.activate', $1, $2, 10) on conflict (dedup_key) do nothing",
                f"activate:{subscription['id']}:payment:{intent.id}",
                json.dumps({"subscription_id": subscription["id"]}),
            )
            await conn.execute(
                "update payments set status = 'paid', external_id = $2, paid_at = now()"
                " where id = $1",
                payment["id"],
                charge,
            )
            await conn.execute(
                "update payments set status = 'finalized', finalized_at = now(),"
                " subscription_id = $2 where id = $1",
                payment["id"],
                subscription["id"],
            )
            await conn.execute(
                "insert into outbox (kind, dedup_key, payload) values ('telegram.notify', $1, $2)"
                " on conflict (dedup_key) do nothing",
                f"notify:payment:{intent.id}",
                json.dumps(_notice(owner, subscription["expires_at"])),
            )
            return True

    async def main() -> Run:
        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:

            async def pay(intent: Intent) -> None:
                if not await finalize(pool, intent, f"charge-{intent.id}", intent.user_id):
                    raise RuntimeError(f"not credited: {intent}")

            return await _each(intents, tasks, pay)
        finally:
            await pool.close()

    return asyncio.run(main())


def _notice(user_id: int, expires_at: datetime) -> dict[str, Any]:
    return {
        "chat_id": user_id,
        "template": "payment_received",
        "params": {
            "amount_minor": PRICE,
            "currency": CURRENCY,
            "balance_minor": None,
            "plan_id": PLAN,
            "expires_at": expires_at.isoformat(),
        },
    }


def sqlalchemy_run(dsn: str, intents: Sequence[Intent], tasks: int) -> Run:
    from _payment_orm import run

    return run(dsn, intents, tasks)


RUNNERS: dict[str, Callable[[str, Sequence[Intent], int], Run]] = {
    "vpnbot": vpnbot_run,
    "asyncpg": asyncpg_run,
    "sqlalchemy": sqlalchemy_run,
}


# -- the rounds ------------------------------------------------------------------------------


async def _prepare(dsn: str, payments: int) -> list[Intent]:
    """Empty the tables, add the users and their open invoices, and settle the server."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        from _databases import truncate

        await truncate(conn, "outbox, payments, subscriptions, users")
        users = max(1, payments // 4)
        await conn.execute(
            "insert into users (telegram_id) select $1 + i from generate_series(0, $2 - 1) i",
            FIRST_USER,
            users,
        )
        rows = await conn.fetch(
            "insert into payments (user_id, provider, amount_minor, currency, status, purpose,"
            " plan_id, expires_at)"
            " select $1 + i % $2, $3, $4, $5, 'invoiced', 'subscription', $6,"
            " now() + interval '1 hour'"
            " from generate_series(0, $7 - 1) i returning id::text, user_id",
            FIRST_USER,
            users,
            PROVIDER,
            PRICE,
            CURRENCY,
            PLAN,
            payments,
        )
        await conn.execute("vacuum analyze")
        await conn.execute("checkpoint")
    finally:
        await conn.close()
    return [Intent(r["id"], r["user_id"]) for r in rows]


def _child(path: str, dsn: str, intents: Sequence[Intent], tasks: int) -> Run:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--dsn", dsn, "--tasks", str(tasks)],
        input=json.dumps([[i.id, i.user_id] for i in intents]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {path} run failed:\n{out.stderr[-3000:]}")
    return Run(**json.loads(out.stdout.strip().splitlines()[-1]))


async def _check(dsn: str, payments: int) -> None:
    """Every path ends in the same state: every intent finalized, two jobs each."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        finalized = await conn.fetchval("select count(*) from payments where status = 'finalized'")
        jobs = await conn.fetchval("select count(*) from outbox")
        days = await conn.fetchval(
            "select sum(extract(epoch from expires_at - starts_at)) / 86400 from subscriptions"
        )
    finally:
        await conn.close()
    if (finalized, jobs, round(days)) != (payments, 2 * payments, 30 * payments):
        raise RuntimeError(f"{finalized} finalized, {jobs} jobs, {days} days of {payments}")


def measure(dsns: dict[str, str], payments: int, rounds: int) -> dict[tuple[str, str], list[Run]]:
    results: dict[tuple[str, str], list[Run]] = {}
    for number in range(rounds):
        for mode, tasks in MODES.items():
            order = PATHS if number % 2 == 0 else PATHS[::-1]
            for path in order:
                intents = asyncio.run(_prepare(dsns[path], payments))
                run = _child(path, dsns[path], intents, tasks)
                asyncio.run(_check(dsns[path], payments))
                results.setdefault((mode, path), []).append(run)
                print(
                    f"  round {number + 1}: {path:<10} {mode:<10}"
                    f" {payments / run.seconds:6.0f} payments/s  load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
    return results


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(results: dict[tuple[str, str], list[Run]], payments: int, rounds: int) -> str:
    lines = [
        f"payment finalization: {payments} payments per run, durable commits,"
        f" {rounds} interleaved rounds; median (min-max) over the rounds",
        f"  {'mode':<10} {'path':<10} {'payments/s':>10} {'min-max':>11} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'CPU ms':>7} {'ratio':>6}",
    ]
    for mode in MODES:
        peer = statistics.median(payments / r.seconds for r in results[mode, "asyncpg"])
        for path in PATHS:
            runs = results[mode, path]
            rates = [payments / r.seconds for r in runs]
            median = statistics.median(rates)
            p50 = statistics.median(_percentile(r.latencies, 0.5) for r in runs)
            p99 = statistics.median(_percentile(r.latencies, 0.99) for r in runs)
            cpu = statistics.median(r.cpu_seconds / payments for r in runs)
            lines.append(
                f"  {mode:<10} {path:<10} {median:>10.0f} {min(rates):>5.0f}-{max(rates):<5.0f}"
                f" {p50 * 1e3:>7.2f} {p99 * 1e3:>7.2f} {cpu * 1e3:>7.2f} {median / peer:>5.2f}x"
            )
    lines.append("  ratio: median payments/s against plain asyncpg's in the same run")
    lines.append("  CPU ms: the client process's CPU per payment, PostgreSQL excluded")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 payments, 2 rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--payments", type=int)
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        intents = [Intent(i, u) for i, u in json.loads(sys.stdin.read())]
        run = RUNNERS[args.child](args.dsn, intents, args.tasks)
        print(json.dumps(run.__dict__))
        return
    payments = args.payments or (200 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 5)

    sys.path.insert(0, str(ROOT))
    from _databases import bench_databases

    load_before = os.getloadavg()
    started = time.perf_counter()
    with bench_databases({path: (f"bench_pay_{path}", True) for path in PATHS}) as dsns:
        results = measure(dsns, payments, rounds)
    print(report(results, payments, rounds))
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after,"
        f" on {os.cpu_count()} CPUs; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
