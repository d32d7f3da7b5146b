"""Admin statistics, lookups, granted days and broadcasts on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runtime.storage import Connection, Database, admin, grants, job_kinds, users
from runtime.storage import subscriptions as subs
from runtime.storage.subscriptions import Terms

TERMS = Terms("month", "marzban", timedelta(days=30), None, None)


async def execute(db: Database, sql: str, *args: Any) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


async def add_user(db: Database, user_id: int, username: str | None = None) -> None:
    await users.touch_user(db, user_id, username=username, language="en")


async def paid_subscription(db: Database, user_id: int) -> subs.Subscription:
    async def unit(conn: Connection) -> subs.Subscription:
        return await subs.extend_or_create(conn, user_id, TERMS)

    await add_user(db, user_id)
    return await db.transaction(unit)


async def payment(
    db: Database, user_id: int, provider: str, amount: int, currency: str, *, days_ago: float = 0
) -> None:
    await execute(
        db,
        "insert into payments (user_id, provider, external_id, amount_minor, currency, status,"
        " purpose, plan_id, finalized_at, paid_at) values ($1, $2, $3, $4, $5, 'finalized',"
        " 'subscription', 'month', now() - make_interval(secs => $6), now())",
        user_id,
        provider,
        f"{provider}-{user_id}-{amount}-{days_ago}",
        amount,
        currency,
        days_ago * 86400,
    )


async def test_statistics_count_users_access_and_revenue(db: Database) -> None:
    for uid in (1, 2, 3):
        await add_user(db, uid)
    await paid_subscription(db, 1)
    await subs.start_trial(db, 2, TERMS, max_attempts=3)
    await users.mark_blocked(db, 3)
    await payment(db, 1, "stars", 150, "XTR")
    await payment(db, 1, "stars", 150, "XTR", days_ago=3)
    await payment(db, 2, "card", 19900, "RUB", days_ago=20)
    await payment(db, 2, "card", 19900, "RUB", days_ago=40)  # outside every window
    stats = await admin.statistics(db)
    assert (stats.users, stats.blocked, stats.active_paid, stats.active_trials) == (3, 1, 1, 1)
    assert stats.trials_started == 1 and stats.new_today == 3
    by_provider = {(r.provider, r.currency): r for r in stats.revenue}
    stars = by_provider[("stars", "XTR")]
    assert (stars.today_minor, stars.week_minor, stars.month_minor) == (150, 300, 300)
    card = by_provider[("card", "RUB")]
    assert (card.today_minor, card.week_minor, card.month_minor, card.month_count) == (
        0,
        0,
        19900,
        1,
    )


async def test_find_a_user_by_id_or_username(db: Database) -> None:
    await add_user(db, 42, "Alice_K")
    await paid_subscription(db, 42)
    await payment(db, 42, "stars", 150, "XTR")
    by_id = await admin.find_user(db, "42")
    by_name = await admin.find_user(db, "@alice_k")
    assert by_id is not None and by_name is not None
    assert by_id.user.telegram_id == by_name.user.telegram_id == 42
    assert len(by_id.subscriptions) == 1 and len(by_id.payments) == 1
    assert await admin.find_user(db, "@nobody") is None
    assert await admin.find_user(db, "drop table users;") is None


async def test_granting_extends_from_the_expiry_and_queues_activation(db: Database) -> None:
    current = await paid_subscription(db, 5)
    result = await admin.adjust_days(db, 5, 10, operation_key="u1", backend="marzban")
    assert result is not None and result.subscription is not None
    assert result.subscription.id == current.id
    assert result.subscription.expires_at - current.expires_at == timedelta(days=10)
    again = await admin.adjust_days(db, 5, 10, operation_key="u1", backend="marzban")
    assert again is not None and again.repeated
    assert again.subscription is not None
    assert again.subscription.expires_at == result.subscription.expires_at  # not twice
    jobs = await fetch(db, "select kind, dedup_key from outbox where dedup_key like 'admin:%'")
    assert jobs == [{"kind": job_kinds.ACTIVATE, "dedup_key": "admin:u1"}]


async def test_granting_to_a_user_without_access_starts_a_subscription(db: Database) -> None:
    await add_user(db, 6)
    result = await admin.adjust_days(db, 6, 3, operation_key="u2", backend="marzban")
    assert result is not None and result.subscription is not None
    sub = result.subscription
    assert sub.plan_id == grants.GRANT_PLAN_ID and sub.vpn_account == f"u6_s{sub.id}"
    left = sub.expires_at - datetime.now(UTC)
    assert timedelta(days=2, hours=23) < left <= timedelta(days=3)
    assert await admin.adjust_days(db, 404, 3, operation_key="u3", backend="marzban") is None


async def test_taking_days_shortens_or_revokes(db: Database) -> None:
    await paid_subscription(db, 7)
    shorter = await admin.adjust_days(db, 7, -10, operation_key="t1", backend="marzban")
    assert shorter is not None and not shorter.revoked
    gone = await admin.adjust_days(db, 7, -30, operation_key="t2", backend="marzban")
    assert gone is not None and gone.revoked and gone.subscription is not None
    assert gone.subscription.status == "revoked"
    jobs = await fetch(db, "select kind from outbox where dedup_key like 'admin:%' order by id")
    assert [j["kind"] for j in jobs] == [job_kinds.ACTIVATE, job_kinds.REVOKE]
    nothing = await admin.adjust_days(db, 7, -1, operation_key="t3", backend="marzban")
    assert nothing is not None and nothing.subscription is None


async def test_a_broadcast_is_enqueued_once_and_counted_by_status(db: Database) -> None:
    for uid in range(1, 6):
        await add_user(db, uid)
    await paid_subscription(db, 1)
    await users.mark_blocked(db, 5)  # known blocked: not written to
    draft, reach = await admin.create_broadcast(db, created_by=900, audience="all", text="Hi")
    assert reach == 4
    started = await admin.start_broadcast(db, draft.id, report_chat_id=900, report_message_id=1)
    assert started is not None and started.total == 4 and started.status == "sending"
    again = await admin.start_broadcast(db, draft.id, report_chat_id=900, report_message_id=1)
    assert again is not None and again.total == 4
    jobs = await fetch(db, "select dedup_key, payload from outbox order by id")
    assert [j["dedup_key"] for j in jobs] == [f"broadcast:{draft.id}:{u}" for u in (1, 2, 3, 4)]
    assert jobs[0]["payload"] == {
        "chat_id": 1,
        "template": "broadcast",
        "broadcast_id": draft.id,
        "params": {"text": "Hi"},
    }
    progress = await admin.broadcast_progress(db, draft.id)
    assert (progress.total, progress.pending) == (4, 4)
    # the notifier's outcomes: delivered, skipped (blocked), dead, dead with a 403
    await execute(db, "update outbox set status = 'done' where dedup_key like '%:1'")
    await execute(
        db,
        "update outbox set status = 'done', last_error = 'skipped: the user blocked the bot'"
        " where dedup_key like '%:2'",
    )
    await execute(
        db,
        "update outbox set status = 'dead', last_error = 'chat not found'"
        " where dedup_key like '%:3'",
    )
    await execute(
        db,
        "update outbox set status = 'dead', last_error = 'ChatBlocked: Forbidden: bot was"
        " blocked by the user' where dedup_key like '%:4'",
    )
    progress = await admin.broadcast_progress(db, draft.id)
    assert (progress.delivered, progress.blocked, progress.failed, progress.pending) == (
        1,
        2,
        1,
        0,
    )
    assert progress.done
    assert await admin.finish_broadcast(db, draft.id, progress)
    assert not await admin.finish_broadcast(db, draft.id, progress)
    assert await admin.sending_broadcasts(db) == []


async def test_the_active_audience_and_cancelling(db: Database) -> None:
    for uid in (1, 2):
        await add_user(db, uid)
    await paid_subscription(db, 2)
    draft, reach = await admin.create_broadcast(db, created_by=900, audience="active", text="x")
    assert reach == 1
    started = await admin.start_broadcast(db, draft.id, report_chat_id=900, report_message_id=None)
    assert started is not None and started.total == 1
    assert await admin.cancel_broadcast(db, draft.id) == 1
    assert await admin.cancel_broadcast(db, draft.id) is None
    rows = await fetch(db, "select status from outbox where dedup_key like 'broadcast:%'")
    assert rows == [{"status": "dead"}]
    cancelled, _ = await admin.create_broadcast(db, created_by=900, audience="all", text="y")
    assert await admin.cancel_broadcast(db, cancelled.id) == 0
    assert (
        await admin.start_broadcast(db, cancelled.id, report_chat_id=900, report_message_id=None)
        is None
    )
    with pytest.raises(ValueError):
        await admin.create_broadcast(db, created_by=900, audience="nobody", text="z")
