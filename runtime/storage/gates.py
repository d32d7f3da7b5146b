"""What access rules remember about a user: admitted, the rules accepted, membership of
the required channel as last checked, and a place on the waitlist while purchases are
paused. Each is one conditional statement, so two processes handling two updates of one
user agree."""

from __future__ import annotations

from . import job_kinds
from ._database import Connection, Database
from .outbox import enqueue

REOPENED_TEMPLATE = "purchases_reopened"


async def admit(db: Database, user_id: int) -> None:
    """The user passed registration (kept once: the first admission's time stays)."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update users set admitted_at = now() where telegram_id = $1 and admitted_at is null",
            user_id,
        )

    await db.transaction(unit, retry=True)


async def admit_invited(db: Database, user_id: int) -> bool:
    """Admit the user if their first start came through a referral or an acquisition
    link (``user_origins``); True when they are admitted."""

    async def unit(conn: Connection) -> bool:
        admitted = await conn.fetchval(
            "update users set admitted_at = coalesce(admitted_at, now())"
            " where telegram_id = $1 and exists (select 1 from user_origins o"
            " where o.user_id = $1 and (o.invited_by is not null or o.ad_link_id is not null))"
            " returning true",
            user_id,
        )
        return bool(admitted)

    return await db.transaction(unit, retry=True)


async def accept_rules(db: Database, user_id: int, version: int) -> bool:
    """Record that the user accepted ``version`` of the rules; False when they had accepted
    it (or a later one) already."""

    async def unit(conn: Connection) -> bool:
        accepted = await conn.fetchval(
            "update users set rules_accepted = $2, rules_accepted_at = now()"
            " where telegram_id = $1 and coalesce(rules_accepted, 0) < $2 returning true",
            user_id,
            version,
        )
        return bool(accepted)

    return await db.transaction(unit, retry=True)


async def membership_seen(db: Database, user_id: int) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update users set channel_checked_at = now() where telegram_id = $1", user_id
        )

    await db.transaction(unit, retry=True)


async def wait_for_purchases(db: Database, user_id: int) -> None:
    """Put the user on the waitlist (again, if they were told before and asked again)."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "insert into purchase_waitlist (user_id) values ($1) on conflict (user_id)"
            " do update set asked_at = now(), notified_at = null"
            " where purchase_waitlist.notified_at is not null",
            user_id,
        )

    await db.transaction(unit, retry=True)


async def announce_reopened(db: Database, *, limit: int = 10_000, max_attempts: int = 10) -> int:
    """Queue "purchases are open again" for up to ``limit`` waiting users and mark them
    told, in one transaction; returns how many. Rows another process holds are skipped:
    it is telling those."""

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "update purchase_waitlist set notified_at = now() where user_id in ("
            " select user_id from purchase_waitlist where notified_at is null"
            " order by asked_at limit $1 for update skip locked)"
            " returning user_id, asked_at",
            limit,
        )
        for row in rows:
            stamp = int(row["asked_at"].timestamp() * 1_000_000)
            await enqueue(
                conn,
                kind=job_kinds.NOTIFY,
                dedup_key=f"notify:reopened:{row['user_id']}:{stamp}",
                payload={"chat_id": row["user_id"], "template": REOPENED_TEMPLATE, "params": {}},
                max_attempts=max_attempts,
            )
        return len(rows)

    return await db.transaction(unit, retry=True)
