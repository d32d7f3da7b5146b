"""Grants on a real PostgreSQL: once per key under concurrency, and an audit log that
cannot be rewritten."""

from __future__ import annotations

import asyncpg
import pytest
import trio

from runtime.storage import Connection, Database, grants, job_kinds, users


async def balance_of(db: Database, user_id: int) -> int:
    user = await users.get_user(db, user_id)
    assert user is not None
    return user.balance_minor


async def give(db: Database, user_id: int, amount: int, key: str) -> int | None:
    async def unit(conn: Connection) -> int | None:
        return await grants.grant_balance(
            conn,
            user_id=user_id,
            amount_minor=amount,
            key=key,
            actor=grants.SYSTEM,
            action="test.reward",
            reason="a test",
        )

    return await db.transaction(unit, retry=True)


async def test_a_balance_grant_happens_once_when_forty_race_for_it(db: Database) -> None:
    await users.touch_user(db, 1, username=None, language="en")
    results: list[int | None] = []

    async def racer() -> None:
        results.append(await give(db, 1, 150, "reward:p1:1"))

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(racer)
    assert sorted(results, key=lambda r: r is None) == [150] + [None] * 39
    assert await balance_of(db, 1) == 150
    entry = await grants.granted(db, "reward:p1:1")
    assert entry is not None and entry.balance_delta_minor == 150
    assert entry.actor == "system" and entry.user_id == 1 and entry.reason == "a test"


async def test_taking_back_never_goes_below_zero_and_records_what_it_took(db: Database) -> None:
    await users.touch_user(db, 2, username=None, language="en")
    assert await give(db, 2, 100, "reward:p2:1") == 100

    async def spend(conn: Connection) -> None:
        await users.spend_balance(conn, 2, 70)

    await db.transaction(spend)

    async def take(conn: Connection) -> int | None:
        return await grants.take_balance(
            conn,
            user_id=2,
            amount_minor=100,
            key="clawback:p2:1",
            actor=grants.SYSTEM,
            action="test.clawback",
        )

    assert await db.transaction(take) == 30
    assert await db.transaction(take) is None
    assert await balance_of(db, 2) == 0
    history = await grants.history(db, 2)
    assert [(e.action, e.balance_delta_minor) for e in history] == [
        ("test.clawback", -30),
        ("test.reward", 100),
    ]
    assert history[0].details == {"asked_minor": 100}


async def test_days_are_granted_once_with_one_activation_job(db: Database) -> None:
    await users.touch_user(db, 3, username=None, language="en")

    async def grant(conn: Connection) -> object:
        return await grants.grant_days(
            conn,
            user_id=3,
            days=7,
            backend="marzban",
            key="promo:WEEK:3",
            actor=grants.user_actor(3),
            action="promo.days",
        )

    first = await db.transaction(grant)
    assert first is not None
    assert await db.transaction(grant) is None

    async def jobs(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "select kind, payload from outbox where dedup_key = 'grant:promo:WEEK:3'"
        )

    rows = await db.read(jobs)
    assert [(r["kind"], r["payload"]) for r in rows] == [
        (job_kinds.ACTIVATE, {"subscription_id": first.id})  # type: ignore[attr-defined]
    ]

    async def subs(conn: Connection) -> int:
        count: int = await conn.fetchval("select count(*) from subscriptions where user_id = 3")
        return count

    assert await db.read(subs) == 1


async def test_a_grant_rolled_back_with_its_transaction_leaves_the_key_free(db: Database) -> None:
    await users.touch_user(db, 4, username=None, language="en")

    class Boom(Exception):
        pass

    async def failing(conn: Connection) -> None:
        await grants.grant_balance(
            conn,
            user_id=4,
            amount_minor=10,
            key="reward:p4:1",
            actor=grants.SYSTEM,
            action="test.reward",
        )
        raise Boom

    with pytest.raises(Boom):
        await db.transaction(failing)
    assert await grants.granted(db, "reward:p4:1") is None
    assert await give(db, 4, 10, "reward:p4:1") == 10


@pytest.mark.parametrize(
    "statement",
    [
        "update audit_log set reason = 'rewritten'",
        "delete from audit_log",
        "truncate audit_log",
    ],
)
async def test_the_audit_log_refuses_to_be_rewritten(db: Database, statement: str) -> None:
    await users.touch_user(db, 5, username=None, language="en")
    assert await give(db, 5, 1, "reward:p5:1") == 1

    async def rewrite(conn: Connection) -> None:
        await conn.execute(statement)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.transaction(rewrite)
    entry = await grants.granted(db, "reward:p5:1")
    assert entry is not None and entry.reason == "a test"
