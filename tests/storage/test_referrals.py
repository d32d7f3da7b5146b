"""Referrals on a real PostgreSQL: a user's origin recorded once (no self-referral, no
re-assignment, no cycle, with the database refusing what the code would not do), and
rewards granted once per (payment, level) and taken back once per refund, however many
run them at once."""

from __future__ import annotations

import random

import asyncpg
import pytest
import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Connection, Database, job_kinds, load_migrations, users
from runtime.storage import referrals as store
from runtime.storage.referrals import Level
from runtime.testing.postgres import TestPostgres
from tests.storage.referral_setup import (
    RUB,
    balance,
    chain,
    pay,
    referral_entries,
    refund,
    rows,
    rules,
    started,
    value,
)

FIXED_100 = Level("fixed", 100)
EVERY_50 = Level("fixed", 50, every_payment=True)


async def execute(db: Database, sql: str, *args: object) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


# -- origins ------------------------------------------------------------------------------


async def test_concurrent_first_starts_of_one_user_record_one_origin(db: Database) -> None:
    for inviter in (1, 2, 3):
        await started(db, inviter)
    codes = [await store.code_of(db, inviter) for inviter in (1, 2, 3)]
    ad = await store.create_ad_link(db, "spring", by=900, operation_key="op-1")
    await users.touch_user(db, 10, username=None, language="en")
    results: list[store.Origin | None] = []

    async def start(n: int) -> None:
        if n % 4 == 3:
            results.append(await store.record_start(db, 10, ad_code=ad.code))
        else:
            results.append(await store.record_start(db, 10, referral_code=codes[n % 4]))

    async with trio.open_nursery() as nursery:
        for n in range(32):
            nursery.start_soon(start, n)
    won = [r for r in results if r is not None]
    assert len(won) == 1 and len(results) == 32
    (row,) = await rows(db, "select invited_by, ad_link_id from user_origins where user_id = 10")
    assert (row["invited_by"], row["ad_link_id"]) == (won[0].invited_by, won[0].ad_link_id)
    assert (row["invited_by"] is None) != (row["ad_link_id"] is None)


async def test_a_user_cannot_invite_themselves(db: Database) -> None:
    await started(db, 1)
    own = await store.code_of(db, 1)
    assert await store.record_start(db, 1, referral_code=own) is None
    assert await store.inviter_of(db, 1) is None
    await users.touch_user(db, 2, username=None, language="en")
    with pytest.raises(asyncpg.CheckViolationError):
        await execute(db, "insert into user_origins (user_id, invited_by) values (2, 2)")


async def test_an_origin_is_never_reassigned(db: Database) -> None:
    await chain(db, 1, 2)
    await started(db, 3)
    other = await store.code_of(db, 3)
    assert await store.record_start(db, 2, referral_code=other) is None
    assert await store.inviter_of(db, 2) == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="recorded once"):
        await execute(db, "update user_origins set invited_by = 3 where user_id = 2")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await execute(db, "delete from user_origins where user_id = 2")


async def test_no_cycle_can_form(db: Database) -> None:
    await chain(db, 1, 2, 3)
    for later in (2, 3):  # the invited cannot invite who came before them
        code = await store.code_of(db, later)
        assert await store.record_start(db, 1, referral_code=code) is None
    assert await store.inviter_of(db, 1) is None
    # the database: an inviter must have started already, and an origin is written once
    await users.touch_user(db, 4, username=None, language="en")
    await users.touch_user(db, 5, username=None, language="en")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await execute(db, "insert into user_origins (user_id, invited_by) values (4, 5)")


async def test_unknown_codes_record_a_start_without_source(db: Database) -> None:
    await users.touch_user(db, 7, username=None, language="en")
    origin = await store.record_start(db, 7, referral_code="zzzzzzzz", ad_code="yyyyyyyy")
    assert origin == store.Origin(None, None)
    assert await store.record_start(db, 7) is None


async def test_a_user_who_wrote_before_their_first_start_is_still_attributed(db: Database) -> None:
    # the origin is written by the first /start, not by the first contact
    await started(db, 1)
    code = await store.code_of(db, 1)
    await users.touch_user(db, 2, username=None, language="en")
    assert await value(db, "select count(*) from user_origins where user_id = 2") == 0
    assert (await store.record_start(db, 2, referral_code=code)) == store.Origin(1, None)


async def test_a_referral_code_is_stable_and_unique(db: Database) -> None:
    await started(db, 1)
    await started(db, 2)
    first = await store.code_of(db, 1)
    assert await store.code_of(db, 1) == first
    assert await store.code_of(db, 2) != first
    assert len(first) == store.CODE_LENGTH and "1" not in first


# -- rewards ------------------------------------------------------------------------------


async def test_a_payment_queues_its_rewards_job_only_for_an_invited_payer(db: Database) -> None:
    await chain(db, 1, 2)
    lone = await pay(db, 1)
    invited = await pay(db, 2)
    jobs = await rows(
        db, "select kind, dedup_key, payload from outbox where kind like 'referral.%'"
    )
    assert jobs == [
        {
            "kind": store.REWARD,
            "dedup_key": f"referral:reward:{invited}",
            "payload": {"payment_id": invited},
        }
    ]
    assert lone != invited


async def test_rewards_are_granted_once_per_payment_and_level_when_forty_race(
    db: Database,
) -> None:
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3, amount=20000)
    levels = rules(Level("percent", 10), FIXED_100)
    results: list[list[store.Reward]] = []

    async def racer() -> None:
        results.append(await store.reward_payment(db, payment, levels))

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(racer)
    granted = [reward for result in results for reward in result]
    assert sorted(granted, key=lambda r: r.level) == [
        store.Reward(1, 2, balance_minor=2000),
        store.Reward(2, 1, balance_minor=100),
    ]
    assert await balance(db, 2) == 2000 and await balance(db, 1) == 100
    assert await referral_entries(db) == [
        (f"referral:{payment}:1", 2, None, 2000),
        (f"referral:{payment}:2", 1, None, 100),
    ]
    notes = await rows(
        db,
        "select payload from outbox where kind = $1 and dedup_key like 'notify:referral:%'"
        " order by dedup_key",
        job_kinds.NOTIFY,
    )
    assert [(n["payload"]["chat_id"], n["payload"]["template"]) for n in notes] == [
        (2, "referral_reward_balance"),
        (1, "referral_reward_balance"),
    ]
    assert notes[0]["payload"]["params"] == {
        "amount_minor": 2000,
        "currency": RUB,
        "balance_minor": 2000,
        "level": 1,
    }


async def test_a_refund_takes_the_rewards_back_once(db: Database) -> None:
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3)
    levels = rules(FIXED_100, EVERY_50)
    assert len(await store.reward_payment(db, payment, levels)) == 2
    await refund(db, payment)
    queued = await value(
        db, "select count(*) from outbox where dedup_key = $1", f"referral:clawback:{payment}"
    )
    assert queued == 1
    results: list[list[store.Reward]] = []

    async def racer() -> None:
        results.append(await store.claw_back(db, payment, balance_currency=RUB))

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(racer)
    taken = sorted((r for result in results for r in result), key=lambda r: r.level)
    assert taken == [store.Reward(1, 2, balance_minor=100), store.Reward(2, 1, balance_minor=50)]
    assert await balance(db, 2) == 0 and await balance(db, 1) == 0
    told = await rows(
        db,
        "select payload from outbox where dedup_key like 'notify:referral-clawback:%'"
        " order by dedup_key",
    )
    assert [(t["payload"]["chat_id"], t["payload"]["params"]["amount_minor"]) for t in told] == [
        (2, 100),
        (1, 50),
    ]
    assert {t["payload"]["template"] for t in told} == {"referral_reward_taken_back_balance"}
    assert [e[0] for e in await referral_entries(db)] == [
        f"referral-clawback:{payment}:1",
        f"referral-clawback:{payment}:2",
        f"referral:{payment}:1",
        f"referral:{payment}:2",
    ]
    # and a reward job run late changes nothing
    assert await store.reward_payment(db, payment, levels) == []


async def test_a_clawback_never_takes_more_than_the_balance_holds(db: Database) -> None:
    await chain(db, 1, 2)
    payment = await pay(db, 2)
    await store.reward_payment(db, payment, rules(FIXED_100))

    async def spend(conn: Connection) -> None:
        assert await users.spend_balance(conn, 1, 70) is not None

    await db.transaction(spend)
    await refund(db, payment)
    assert await store.claw_back(db, payment, balance_currency=RUB) == [
        store.Reward(1, 1, balance_minor=30)
    ]
    assert await balance(db, 1) == 0


async def test_nothing_is_granted_for_a_payment_refunded_before_the_reward_ran(
    db: Database,
) -> None:
    await chain(db, 1, 2)
    payment = await pay(db, 2)
    await refund(db, payment)
    assert await store.claw_back(db, payment, balance_currency=RUB) == []
    assert await store.reward_payment(db, payment, rules(FIXED_100)) == []
    assert await referral_entries(db) == []
    assert await balance(db, 1) == 0


async def test_a_refund_racing_the_reward_leaves_nothing_granted_in_the_end(
    db: Database,
) -> None:
    await chain(db, 1, 2)
    levels = rules(EVERY_50)
    payments = [await pay(db, 2) for _ in range(20)]
    async with trio.open_nursery() as nursery:
        for payment in payments:
            nursery.start_soon(store.reward_payment, db, payment, levels)
            nursery.start_soon(refund, db, payment)
    for payment in payments:  # the clawback jobs the refunds queued, run after them
        await store.claw_back(db, payment, balance_currency=RUB)
    assert await balance(db, 1) == 0
    keys = {entry[0] for entry in await referral_entries(db)}
    for payment in payments:  # each reward was not granted, or granted and taken back
        granted = f"referral:{payment}:1" in keys
        assert granted == (f"referral-clawback:{payment}:1" in keys)


async def test_first_payment_only_and_every_payment(db: Database) -> None:
    await chain(db, 1, 2, 3)
    levels = rules(FIXED_100, EVERY_50)
    first, second = await pay(db, 3), await pay(db, 3)
    # the second payment's job may run first: "first" is the payment credited first
    assert await store.reward_payment(db, second, levels) == [store.Reward(2, 1, balance_minor=50)]
    assert await store.reward_payment(db, first, levels) == [
        store.Reward(1, 2, balance_minor=100),
        store.Reward(2, 1, balance_minor=50),
    ]
    assert await balance(db, 2) == 100 and await balance(db, 1) == 100


async def test_a_percentage_of_a_payment_in_another_currency_is_nothing(db: Database) -> None:
    await chain(db, 1, 2)
    stars = await pay(db, 2, amount=150, currency="XTR", provider="stars")
    assert await store.reward_payment(db, stars, rules(Level("percent", 20))) == []
    rubles = await pay(db, 2, amount=999)
    every = rules(Level("percent", 20, every_payment=True))
    assert await store.reward_payment(db, rubles, every) == [store.Reward(1, 1, balance_minor=199)]
    fixed = await pay(db, 2, amount=150, currency="XTR", provider="stars")
    assert await store.reward_payment(db, fixed, rules(EVERY_50)) == [
        store.Reward(1, 1, balance_minor=50)
    ]


async def test_days_are_granted_then_taken_back(db: Database) -> None:
    await chain(db, 1, 2)
    payment = await pay(db, 2)
    assert await store.reward_payment(db, payment, rules(Level("days", 10))) == [
        store.Reward(1, 1, days=10)
    ]
    (sub,) = await rows(
        db, "select id, expires_at - starts_at as length from subscriptions where user_id = 1"
    )
    assert sub["length"].days == 10
    await refund(db, payment)
    assert await store.claw_back(db, payment, balance_currency=RUB) == [store.Reward(1, 1, days=10)]
    assert await store.claw_back(db, payment, balance_currency=RUB) == []
    (after,) = await rows(db, "select status from subscriptions where id = $1", sub["id"])
    assert after["status"] == "revoked"
    revoke = await value(
        db,
        "select count(*) from outbox where kind = $1 and dedup_key like '%referral-clawback%'",
        job_kinds.REVOKE,
    )
    assert revoke == 1


async def test_balance_charges_earn_nothing(db: Database) -> None:
    await chain(db, 1, 2)
    await execute(
        db,
        "insert into payments (user_id, provider, external_id, amount_minor, currency, status,"
        " purpose, paid_at, finalized_at) values (2, 'balance', 'x', 100, 'RUB', 'finalized',"
        " 'renewal', now(), now())",
    )
    assert await value(db, "select count(*) from outbox where kind like 'referral.%'") == 0


async def test_statistics_and_summary(db: Database) -> None:
    await chain(db, 1, 2, 3)
    await started(db, 4, 1)
    payment = await pay(db, 2)
    await store.reward_payment(db, payment, rules(FIXED_100, Level("days", 3)))
    await pay(db, 3)
    summary = await store.summary(db, 1)
    assert summary == store.Summary(invited=2, paying=1, earned_minor=100, earned_days=0)
    stats = await store.statistics(db)
    assert (stats.invited, stats.paying) == (3, 2)
    assert [(k.action, k.count, k.balance_minor) for k in stats.by_kind] == [
        (store.ACTION_BALANCE, 1, 100)
    ]
    assert [(t.user_id, t.invited, t.paying) for t in stats.top] == [(1, 2, 1), (2, 1, 1)]


# -- acquisition links ----------------------------------------------------------------------


async def test_an_ad_link_counts_first_touches_trials_and_payments(db: Database) -> None:
    link = await store.create_ad_link(db, "autumn", by=900, operation_key="update:1")
    assert await store.create_ad_link(db, "autumn", by=900, operation_key="update:1") == link
    await started(db, 1)
    referral = await store.code_of(db, 1)
    await users.touch_user(db, 2, username=None, language="en")
    await users.touch_user(db, 3, username=None, language="en")
    assert await store.record_start(db, 2, ad_code=link.code) == store.Origin(None, link.id)
    assert await store.record_start(db, 3, referral_code=referral) == store.Origin(1, None)
    assert await store.record_start(db, 3, ad_code=link.code) is None  # first touch wins
    await execute(db, "update users set trial_used_at = now() where telegram_id = 2")
    await pay(db, 2, amount=5000)
    await pay(db, 2, amount=150, currency="XTR", provider="stars")
    refunded = await pay(db, 2, amount=700)
    await refund(db, refunded)
    report = await store.ad_link_report(db, link.code)
    assert report is not None
    assert (report.totals.started, report.totals.trials, report.totals.paying) == (1, 1, 1)
    assert report.revenue == (store.Revenue(RUB, 5000, 1), store.Revenue("XTR", 150, 1))
    (today,) = report.days
    assert (today.started, today.trials, today.payments) == (1, 1, 2)
    assert today.revenue == report.revenue
    listed = await store.ad_links(db)
    assert [(t.link, t.started, t.trials, t.paying) for t in listed] == [(link, 1, 1, 1)]
    assert await store.ad_link_report(db, "nosuchcode") is None
    audit = await rows(db, "select actor, action from audit_log where action = 'adlink.create'")
    assert audit == [{"actor": "admin:900", "action": "adlink.create"}]


async def test_ad_link_codes_are_unique(db: Database) -> None:
    made = [
        await store.create_ad_link(db, f"link {n}", by=900, operation_key=f"op-{n}")
        for n in range(20)
    ]
    assert len({link.code for link in made}) == 20
    random.shuffle(made)
    for link in made[:3]:
        assert (await store.ad_link_report(db, link.code)) is not None


# -- the migration --------------------------------------------------------------------------


async def test_users_from_before_the_migration_can_never_be_attributed(
    postgres: TestPostgres,
) -> None:
    migrations = load_migrations()
    (ours,) = [m for m in migrations if m.name.endswith("referrals")]
    async with asyncio_loop():
        blank = await Database.connect(postgres.new_database(migrated=False), max_size=2)
        try:

            async def before(conn: Connection) -> None:
                for migration in migrations[: migrations.index(ours)]:
                    await conn.execute(migration.sql)
                await conn.execute("insert into users (telegram_id) values (1), (2)")
                for migration in migrations[migrations.index(ours) :]:
                    await conn.execute(migration.sql)

            await blank.transaction(before)
            assert await store.record_start(blank, 2) is None
            await started(blank, 3)
            code = await store.code_of(blank, 3)
            assert await store.record_start(blank, 1, referral_code=code) is None
            assert await store.inviter_of(blank, 1) is None
            found = await rows(blank, "select user_id from user_origins order by user_id")
            assert [r["user_id"] for r in found] == [1, 2, 3]
        finally:
            await blank.close()
