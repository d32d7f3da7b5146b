"""The admin's user editor on a real PostgreSQL: each action once per key, also when
twenty attempts of the same key race, with its audit entry, panel job and message queued
in the same transaction; refusals record nothing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from runtime.storage import Connection, Database, grants, job_kinds, users
from runtime.storage import admin_actions as store
from runtime.storage.admin_actions import Edited
from runtime.storage.subscriptions import Subscription, Terms, create_trial, extend_or_create

USER = 4004
ACTOR = grants.admin_actor(900)
RACERS = 20
MONTH = Terms("month", "marzban", timedelta(days=30), 100 * 2**30, 3)
BIG = Terms("big", "marzban", timedelta(days=90), None, 5)
ELSEWHERE = Terms("far", "remnawave", timedelta(days=30), None, None)
TRIAL = Terms("trial", "marzban", timedelta(hours=24), None, None)


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def user(db: Database, uid: int = USER) -> None:
    await users.touch_user(db, uid, username=f"user{uid}", language="en")


async def bought(db: Database, terms: Terms = MONTH, uid: int = USER) -> Subscription:
    """A subscription as a purchase leaves it."""

    async def unit(conn: Connection) -> Subscription:
        return await extend_or_create(conn, uid, terms)

    await user(db, uid)
    return await db.transaction(unit)


async def race(attempt: Callable[[], Awaitable[Edited | None]]) -> list[Edited]:
    """Twenty attempts of the same action at once; what each returned."""
    results: list[Edited] = []

    async def one() -> None:
        done = await attempt()
        assert done is not None
        results.append(done)

    async with trio.open_nursery() as nursery:
        for _ in range(RACERS):
            nursery.start_soon(one)
    return results


def applied_once(results: list[Edited]) -> Edited:
    (first,) = [r for r in results if not r.repeated]
    assert len(results) == RACERS
    assert all(not r.changed for r in results if r.repeated)
    return first


async def jobs(db: Database, kind: str) -> list[dict[str, Any]]:
    return await rows(db, "select dedup_key, payload from outbox where kind = $1 order by id", kind)


async def audit(db: Database) -> list[dict[str, Any]]:
    found = await rows(
        db, "select actor, action, grant_key, reason, details from audit_log order by id"
    )
    for row in found:
        if isinstance(row["details"], str):
            row["details"] = json.loads(row["details"])
    return found


async def subscription(db: Database, subscription_id: int) -> dict[str, Any]:
    (row,) = await rows(db, "select * from subscriptions where id = $1", subscription_id)
    return row


# -- set the expiry ------------------------------------------------------------------------


async def test_an_expiry_is_set_once_when_twenty_race(db: Database) -> None:
    sub = await bought(db)
    target = datetime(2031, 5, 17, 23, 59, 59, tzinfo=UTC)

    first = applied_once(
        await race(
            lambda: store.set_expiry(
                db, USER, target, backend="marzban", actor=ACTOR, key="update:7", reason="support"
            )
        )
    )

    assert first.changed and first.subscription is not None and not first.created
    assert first.subscription.id == sub.id and first.subscription.expires_at == target
    row = await subscription(db, sub.id)
    assert row["expires_at"] == target and row["activation_status"] == "pending"
    assert row["period_started_at"] == sub.period_started_at  # no new traffic period
    assert [j["dedup_key"] for j in await jobs(db, job_kinds.ACTIVATE)] == [
        f"activate:{sub.id}:update:7"
    ]
    (told,) = await jobs(db, job_kinds.NOTIFY)
    assert told["payload"]["template"] == "admin_actions_expiry_set"
    assert told["payload"]["params"]["expires_at"] == target.isoformat()
    (entry,) = await audit(db)
    assert entry["actor"] == ACTOR and entry["action"] == "subscription.set_expiry"
    assert entry["grant_key"] == "update:7" and entry["reason"] == "support"


async def test_an_expiry_can_shorten_and_a_past_one_ends_access_like_a_revocation(
    db: Database,
) -> None:
    sub = await bought(db)
    sooner = datetime.now(UTC) + timedelta(days=2)
    done = await store.set_expiry(db, USER, sooner, backend="marzban", actor=ACTOR, key="k1")
    assert done is not None and done.changed
    assert (await subscription(db, sub.id))["expires_at"] == sooner

    past = datetime.now(UTC) - timedelta(days=1)
    results = await race(
        lambda: store.set_expiry(db, USER, past, backend="marzban", actor=ACTOR, key="k2")
    )
    ended = applied_once(results)
    assert ended.changed and ended.ended == (sub.id,)
    row = await subscription(db, sub.id)
    assert row["status"] == "revoked" and row["expires_at"] <= datetime.now(UTC)
    assert [j["dedup_key"] for j in await jobs(db, job_kinds.REVOKE)] == [f"revoke:{sub.id}:k2"]
    templates = [j["payload"]["template"] for j in await jobs(db, job_kinds.NOTIFY)]
    assert templates == ["admin_actions_expiry_set", "access_revoked"]

    nothing = await store.set_expiry(db, USER, past, backend="marzban", actor=ACTOR, key="k3")
    assert nothing == Edited(changed=False)
    assert [e["grant_key"] for e in await audit(db)] == ["k1", "k2", "k3"]


async def test_a_user_without_a_subscription_gets_one_until_the_date(db: Database) -> None:
    await user(db)
    target = datetime(2030, 1, 1, 23, 59, 59, tzinfo=UTC)
    first = applied_once(
        await race(
            lambda: store.set_expiry(db, USER, target, backend="marzban", actor=ACTOR, key="k")
        )
    )
    assert first.created and first.subscription is not None
    (row,) = await rows(db, "select * from subscriptions")
    assert row["expires_at"] == target and row["vpn_backend"] == "marzban"
    assert row["plan_id"] == grants.GRANT_PLAN_ID and row["vpn_account"] == f"u{USER}_s{row['id']}"
    assert len(await jobs(db, job_kinds.ACTIVATE)) == 1
    assert await jobs(db, job_kinds.NOTIFY) == []  # the first activation says "access ready"


async def test_an_unknown_user_is_none_and_nothing_is_written(db: Database) -> None:
    moment = datetime.now(UTC) + timedelta(days=3)
    assert await store.set_expiry(db, 1, moment, backend="m", actor=ACTOR, key="k") is None
    assert await store.set_plan(db, 1, MONTH, actor=ACTOR, key="k") is None
    assert await store.give_plan(db, 1, MONTH, actor=ACTOR, key="k") is None
    assert await store.reset_traffic(db, 1, actor=ACTOR, key="k") is None
    assert await audit(db) == [] and await rows(db, "select * from outbox") == []


# -- change the plan -----------------------------------------------------------------------


async def test_a_plan_is_changed_once_when_twenty_race_and_the_expiry_stays(
    db: Database,
) -> None:
    sub = await bought(db)
    first = applied_once(
        await race(lambda: store.set_plan(db, USER, BIG, actor=ACTOR, key="update:9"))
    )
    assert first.changed and first.subscription is not None
    row = await subscription(db, sub.id)
    assert row["plan_id"] == "big" and row["expires_at"] == sub.expires_at
    assert row["period_started_at"] == sub.period_started_at
    assert [j["dedup_key"] for j in await jobs(db, job_kinds.ACTIVATE)] == [
        f"activate:{sub.id}:update:9"
    ]
    (told,) = await jobs(db, job_kinds.NOTIFY)
    assert told["payload"]["template"] == "admin_actions_plan_changed"
    (entry,) = await audit(db)
    assert entry["details"] == {"subscription_id": sub.id, "plan_id": "big", "was": "month"}

    same = await store.set_plan(db, USER, BIG, actor=ACTOR, key="update:10")
    assert same is not None and not same.changed and not same.repeated
    assert len(await jobs(db, job_kinds.ACTIVATE)) == 1


async def test_a_plan_change_is_refused_without_a_paid_subscription_or_across_backends(
    db: Database,
) -> None:
    await user(db)

    async def trial(conn: Connection) -> Subscription | None:
        return await create_trial(conn, USER, TRIAL)

    await db.transaction(trial)
    refused = await store.set_plan(db, USER, BIG, actor=ACTOR, key="k1")
    assert refused == Edited(changed=False, refused=store.NO_SUBSCRIPTION)
    await bought(db)
    other = await store.set_plan(db, USER, ELSEWHERE, actor=ACTOR, key="k2")
    assert other is not None and other.refused == store.OTHER_BACKEND
    entries = await audit(db)
    assert [e["action"] for e in entries] == ["trial.start"]  # refusals record nothing


# -- give a plan ---------------------------------------------------------------------------


async def test_a_plan_is_given_once_when_twenty_race_as_a_purchase_gives_it(
    db: Database,
) -> None:
    sub = await bought(db)

    async def linked(conn: Connection) -> None:
        await conn.execute(
            "update subscriptions set access_url = 'vless://x' where id = $1", sub.id
        )

    await db.transaction(linked)
    first = applied_once(
        await race(
            lambda: store.give_plan(db, USER, MONTH, actor=ACTOR, key="update:3", reason="gift")
        )
    )
    assert first.changed and not first.created and first.subscription is not None
    row = await subscription(db, sub.id)
    assert row["expires_at"] == sub.expires_at + timedelta(days=30)  # extended once
    assert row["period_started_at"] > sub.period_started_at  # a new period, as bought
    assert [j["dedup_key"] for j in await jobs(db, job_kinds.ACTIVATE)] == ["grant:update:3"]
    (told,) = await jobs(db, job_kinds.NOTIFY)
    assert told["payload"]["template"] == "access_extended"
    assert told["payload"]["params"]["access_url"] == "vless://x"
    (entry,) = await audit(db)
    assert (entry["action"], entry["reason"]) == ("plan.give", "gift")
    assert entry["details"] == {"plan_id": "month"}


async def test_a_plan_given_to_a_newcomer_starts_a_subscription(db: Database) -> None:
    await user(db)
    done = await store.give_plan(db, USER, BIG, actor=ACTOR, key="k")
    assert done is not None and done.created and done.subscription is not None
    assert done.subscription.plan_id == "big" and done.subscription.kind == "paid"
    assert await jobs(db, job_kinds.NOTIFY) == []  # the first activation says "access ready"
    again = await store.give_plan(db, USER, BIG, actor=ACTOR, key="k")
    assert again == Edited(changed=False, repeated=True)
    assert len(await rows(db, "select id from subscriptions")) == 1


# -- reset traffic -------------------------------------------------------------------------


async def test_traffic_is_reset_once_when_twenty_race(db: Database) -> None:
    sub = await bought(db)
    first = applied_once(
        await race(lambda: store.reset_traffic(db, USER, actor=ACTOR, key="update:5"))
    )
    assert first.subscription is not None
    row = await subscription(db, sub.id)
    assert row["period_started_at"] > sub.period_started_at
    assert row["period_started_at"] == first.subscription.period_started_at
    assert row["expires_at"] == sub.expires_at
    assert [j["dedup_key"] for j in await jobs(db, job_kinds.ACTIVATE)] == [
        f"activate:{sub.id}:update:5"
    ]
    (told,) = await jobs(db, job_kinds.NOTIFY)
    assert told["payload"]["template"] == "admin_actions_traffic_reset"
    (entry,) = await audit(db)
    assert entry["action"] == "traffic.reset"


async def test_a_traffic_reset_without_a_subscription_records_nothing(db: Database) -> None:
    await user(db)
    done = await store.reset_traffic(db, USER, actor=ACTOR, key="k")
    assert done == Edited(changed=False, refused=store.NO_SUBSCRIPTION)
    assert await audit(db) == []


# -- device resets -------------------------------------------------------------------------


async def test_a_device_reset_is_recorded_and_told_once_when_twenty_race(db: Database) -> None:
    sub = await bought(db)
    recorded: list[bool] = []

    async def one() -> None:
        recorded.append(await store.devices_reset(db, sub, 2, actor=ACTOR, key="update:4"))

    async with trio.open_nursery() as nursery:
        for _ in range(RACERS):
            nursery.start_soon(one)
    assert sorted(recorded) == [False] * (RACERS - 1) + [True]
    (entry,) = await audit(db)
    assert entry["action"] == "devices.reset" and entry["details"]["deleted"] == 2
    (told,) = await jobs(db, job_kinds.NOTIFY)
    assert told["payload"]["template"] == "admin_actions_devices_reset"
    assert await rows(db, "select * from device_resets") == []  # the user's cool-down untouched
