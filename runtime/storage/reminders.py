"""Reminders before and at the end of subscriptions, each sent once, from scans that read
only what became due.

A reminder is a kind of subscription (``trial`` or ``paid``) and an offset: hours before
the expiry, or 0 for "it has ended". Each has a cursor row in ``scan_cursors``: the
``(expires_at, id)`` up to which subscriptions have been looked at. A scan reads the
subscriptions whose expiry crossed the offset since the previous scan (an index range
from the cursor to ``now() + offset``), queues one notification for each and moves the
cursor, in one transaction. So a scan costs what became due, not the table.

Exactly once, also with several processes and across restarts:

- the cursor row is locked with ``SKIP LOCKED``: two processes never scan one reminder at
  the same time (the second finds it busy and moves on);
- the job's dedup key is ``remind:{subscription_id}:{offset}:{expires_at}`` (the expiry
  in unix seconds), so even a repeated scan queues nothing twice;
- extending a subscription moves its expiry past the cursor: its reminders come again
  for the new expiry, under new keys.

What is left out on purpose: a reminder that would come after the next smaller one is
due (a scan that ran late: the later reminder says the same, closer to the truth), an
"ended" older than a day, subscriptions whose user has another one running longer, and
subscriptions too short to ever reach an offset (a one-day plan gets no three-day notice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from . import job_kinds
from ._database import Connection, Database, fetch_one

MAX_ID = 2**63 - 1
KINDS = ("trial", "paid")

INITIAL_LAG = timedelta(hours=1)
"""A new cursor starts this far behind ``now() + offset``: subscriptions that crossed the
offset within the last hour (a deployment, a configuration change) still hear of it."""
ENDED_STALE_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Reminder:
    kind: str
    offset_hours: int
    """Hours before the expiry; 0: when it has ended."""
    floor_hours: int = 0
    """The next smaller offset of the same kind: a subscription already closer than this
    to its expiry gets that reminder instead of this one."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reminder kind must be one of {KINDS}")
        if self.offset_hours < 0 or not 0 <= self.floor_hours <= self.offset_hours:
            raise ValueError("need 0 <= floor_hours <= offset_hours")

    @property
    def ended(self) -> bool:
        return self.offset_hours == 0

    @property
    def cursor(self) -> str:
        return f"remind:{self.kind}:{'ended' if self.ended else self.offset_hours}"

    def template(self, *, auto_renew: bool) -> str:
        if self.kind == "trial":
            return "trial_ended" if self.ended else "trial_ending"
        if self.ended:
            return "expired"
        return "expiry_soon_auto" if auto_renew else "expiry_soon"


def reminders_for(kind: str, before_hours: Sequence[int], *, at_end: bool = True) -> list[Reminder]:
    """The reminders of one kind for the configured offsets (largest first), each with
    the next smaller offset as its floor, plus the "ended" one."""
    offsets = sorted({h for h in before_hours if h > 0}, reverse=True)
    found = [
        Reminder(kind, hours, offsets[i + 1] if i + 1 < len(offsets) else 0)
        for i, hours in enumerate(offsets)
    ]
    if at_end:
        found.append(Reminder(kind, 0))
    return found


def dedup_key(subscription_id: int, offset_hours: int, expires_at: datetime) -> str:
    return f"remind:{subscription_id}:{offset_hours}:{math.floor(expires_at.timestamp())}"


@dataclass(frozen=True, slots=True)
class ScanResult:
    scanned: int
    """Subscriptions read from the index range."""
    queued: int
    """Reminders queued (new dedup keys)."""
    more: bool
    """The batch was full: more may be due right now."""
    busy: bool = False
    """Another process holds this reminder's cursor."""


_BEFORE = """
select s.id, s.user_id, s.expires_at, s.plan_id, u.auto_renew,
       s.expires_at <= $6 as too_late,
       exists (select 1 from subscriptions o
               where o.user_id = s.user_id and o.id <> s.id and o.kind = 'paid'
                 and o.status = 'active' and o.expires_at > s.expires_at) as covered
from subscriptions s
join users u on u.telegram_id = s.user_id
where s.status = 'active' and s.kind = $1
  and s.expires_at >= $2 and (s.expires_at, s.id) > ($2, $3)
  and s.expires_at <= $4
order by s.expires_at, s.id
limit $5
"""

_ENDED = """
select s.id, s.user_id, s.expires_at, s.plan_id, false as auto_renew,
       s.expires_at <= $6 as too_late,
       exists (select 1 from subscriptions o
               where o.user_id = s.user_id and o.id <> s.id and o.status = 'active'
                 and o.expires_at > $7) as covered
from subscriptions s
where s.status <> 'revoked' and s.kind = $1
  and s.expires_at >= $2 and (s.expires_at, s.id) > ($2, $3)
  and s.expires_at <= $4
order by s.expires_at, s.id
limit $5
"""

_ENQUEUE = """
insert into outbox (kind, dedup_key, payload, max_attempts)
select $1, t.key, t.payload, $4
from unnest($2::text[], $3::jsonb[]) as t(key, payload)
on conflict (dedup_key) do nothing
returning id
"""


async def scan(
    db: Database,
    reminder: Reminder,
    *,
    limit: int = 1000,
    max_attempts: int = 8,
    initial_lag: timedelta = INITIAL_LAG,
) -> ScanResult:
    """Queue ``reminder`` for the subscriptions that became due since the last scan."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    offset = timedelta(hours=reminder.offset_hours)

    async def unit(conn: Connection) -> ScanResult:
        times = await fetch_one(
            conn,
            "select now() as now, now() + $1::interval as upper",
            offset,
        )
        now: datetime = times["now"]
        upper: datetime = times["upper"]
        await conn.execute(
            "insert into scan_cursors (name, position_at) values ($1, $2)"
            " on conflict (name) do nothing",
            reminder.cursor,
            upper - initial_lag,
        )
        cursor = await conn.fetchrow(
            "select position_at, position_id from scan_cursors where name = $1"
            " for update skip locked",
            reminder.cursor,
        )
        if cursor is None:
            return ScanResult(0, 0, more=False, busy=True)
        floor = (
            now - ENDED_STALE_AFTER
            if reminder.ended
            else now + timedelta(hours=reminder.floor_hours)
        )
        args = [reminder.kind, cursor["position_at"], cursor["position_id"], upper, limit, floor]
        if reminder.ended:
            rows = await conn.fetch(_ENDED, *args, now)
        else:
            rows = await conn.fetch(_BEFORE, *args)
        keys: list[str] = []
        payloads: list[dict[str, Any]] = []
        for row in rows:
            if row["too_late"] or row["covered"]:
                continue
            keys.append(dedup_key(row["id"], reminder.offset_hours, row["expires_at"]))
            payloads.append(_payload(reminder, row))
        queued = 0
        if keys:
            inserted = await conn.fetch(_ENQUEUE, job_kinds.NOTIFY, keys, payloads, max_attempts)
            queued = len(inserted)
        more = len(rows) >= limit
        position = (rows[-1]["expires_at"], rows[-1]["id"]) if more else (upper, MAX_ID)
        await conn.execute(
            "update scan_cursors set position_at = $2, position_id = $3, updated_at = now()"
            " where name = $1",
            reminder.cursor,
            *position,
        )
        return ScanResult(len(rows), queued, more=more)

    return await db.transaction(unit)


def _payload(reminder: Reminder, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "chat_id": row["user_id"],
        "template": reminder.template(auto_renew=bool(row["auto_renew"])),
        "params": {
            "subscription_id": row["id"],
            "expires_at": row["expires_at"].isoformat(),
            "offset_hours": reminder.offset_hours,
            "plan_id": row["plan_id"],
        },
    }


async def cursor_position(db: Database, reminder: Reminder) -> tuple[datetime, int] | None:
    """Where ``reminder``'s scans have got to (for tests and operators)."""

    async def unit(conn: Connection) -> tuple[datetime, int] | None:
        row = await conn.fetchrow(
            "select position_at, position_id from scan_cursors where name = $1",
            reminder.cursor,
        )
        return None if row is None else (row["position_at"], row["position_id"])

    return await db.read(unit)
