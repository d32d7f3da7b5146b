"""Broadcasts from admins to a segment of users, and the deletion of what they sent.

Messages are outbox jobs (``telegram.notify``, template ``broadcast``) whose dedup key is
``broadcast:<id>:<user>``: the transaction that starts a broadcast enqueues every message,
so a broadcast goes out whole or not at all and at most once per user, and a restart lets
the notifier carry on. The notifier writes the sent message's id into the job's ``result``
in the statement that completes it; a deletion enqueues one job per recorded message
(template ``broadcast_delete``, dedup key ``broadcast:del:<id>:<user>``), which the
notifier works through at the same pace as sending.

Progress is read from the statuses of those jobs, by dedup-key prefix:

- blocked: the job ended (done, skipped by the notifier, or dead) with a last error that
  says the user cannot be written to (blocked the bot, account deactivated: a 403);
- cancelled: dead-lettered by a stop before it was sent;
- delivered: done otherwise; failed: dead for any other reason.

Deletions: deleted (done), too old (Telegram's 400 "message can't be deleted": a bot
cannot delete a message after 48 hours), failed (dead otherwise, or skipped because the
user blocked the bot), pending.

Every change an admin asks for (create, start, stop, delete) is written to the audit log
(``grants.note``) in the transaction that makes it, under a key that names it, so a
handler that runs twice changes nothing the second time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import grants, job_kinds
from ._database import Connection, Database, fetch_one

BROADCAST_TEMPLATE = "broadcast"
DELETE_TEMPLATE = "broadcast_delete"
CANCELLED_ERROR = "broadcast cancelled"
BLOCKED_ERROR = re.compile(r"blocked|forbidden|deactivated", re.IGNORECASE)
"""What a job's last error says when its user cannot be written to (the notifier's
"skipped: the user blocked the bot", a 403 "Forbidden: bot was blocked by the user")."""
TOO_OLD_ERROR = re.compile(r"can't be deleted|cannot be deleted", re.IGNORECASE)
"""Telegram's answer to deleting a message a bot may no longer delete (after 48 hours)."""

# -- segments ------------------------------------------------------------------------------

_ACTIVE = "s.status = 'active' and s.expires_at > now()"


def _has(condition: str) -> str:
    """The user has a subscription that meets ``condition`` (on ``subscriptions s``)."""
    return f"exists (select 1 from subscriptions s where s.user_id = u.telegram_id and {condition})"


@dataclass(frozen=True, slots=True)
class Segment:
    """Users a broadcast can go to: a predicate on ``users u``; ``$1`` is the argument
    when ``arg`` (the pattern a valid argument matches) is set."""

    predicate: str
    arg: re.Pattern[str] | None = None


SEGMENTS: dict[str, Segment] = {
    "all": Segment("true"),
    "active": Segment(_has(_ACTIVE)),
    "inactive": Segment(f"not {_has(_ACTIVE)}"),
    "expired": Segment(f"{_has('true')} and not {_has(_ACTIVE)}"),
    "trial": Segment(  # on a trial now, and not on a paid plan as well
        _has("s.kind = 'trial' and " + _ACTIVE)
        + " and not "
        + _has("s.kind = 'paid' and " + _ACTIVE)
    ),
    "plan": Segment(_has(f"s.plan_id = $1 and {_ACTIVE}"), re.compile(r"[A-Za-z0-9_-]{1,32}")),
    "lang": Segment("u.language = $1", re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})?")),
    "link": Segment(  # came through this acquisition link, or this user's referral link
        "exists (select 1 from user_origins o left join ad_links a on a.id = o.ad_link_id"
        " left join referral_codes c on c.user_id = o.invited_by"
        " where o.user_id = u.telegram_id and (a.code = $1 or c.code = $1))",
        re.compile(r"[a-z0-9]{6,16}"),
    ),
}
"""Named segments. Users who blocked the bot or were banned are never in one."""


def audience_query(segment: str, arg: str | None) -> tuple[str, list[Any]]:
    """The query of the segment's users (column ``telegram_id``) and its arguments;
    ``ValueError`` for an unknown segment or a missing or malformed argument."""
    found = SEGMENTS.get(segment)
    if found is None:
        raise ValueError(f"segment must be one of {sorted(SEGMENTS)}")
    query = (
        "select telegram_id from users u where blocked_bot_at is null and banned_at is null"
        f" and ({found.predicate})"
    )
    if found.arg is None:
        if arg is not None:
            raise ValueError(f"segment {segment!r} takes no argument")
        return query, []
    if arg is None or not found.arg.fullmatch(arg):
        raise ValueError(f"segment {segment!r} needs an argument like {found.arg.pattern}")
    return query, [arg]


async def count_segment(db: Database, segment: str, arg: str | None = None) -> int:
    query, args = audience_query(segment, arg)

    async def unit(conn: Connection) -> int:
        count: int = await conn.fetchval(f"select count(*) from ({query}) a", *args)
        return count

    return await db.read(unit)


# -- broadcasts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    id: int
    created_by: int
    audience: str
    audience_arg: str | None
    text: str
    html: bool
    media_kind: str | None
    media_file_id: str | None
    buttons: list[list[dict[str, str]]]
    status: str
    total: int
    report_chat_id: int | None
    report_message_id: int | None
    created_at: datetime
    started_at: datetime | None
    deletion_requested_at: datetime | None


@dataclass(frozen=True, slots=True)
class BroadcastProgress:
    total: int
    pending: int
    delivered: int
    blocked: int
    failed: int
    cancelled: int = 0

    @property
    def done(self) -> bool:
        return self.pending == 0


@dataclass(frozen=True, slots=True)
class DeletionProgress:
    total: int
    pending: int
    deleted: int
    too_old: int
    failed: int


@dataclass(frozen=True, slots=True)
class Summary:
    """A past broadcast with its counts, for the list."""

    broadcast: Broadcast
    progress: BroadcastProgress
    deletion: DeletionProgress


_COLUMNS = (
    "id, created_by, audience, audience_arg, text, html, media_kind, media_file_id, buttons,"
    " status, total, report_chat_id, report_message_id, created_at, started_at,"
    " deletion_requested_at"
)


def prefix(broadcast_id: int) -> str:
    return f"broadcast:{broadcast_id}:"


def deletion_prefix(broadcast_id: int) -> str:
    return f"broadcast:del:{broadcast_id}:"


def _broadcast(row: asyncpg.Record) -> Broadcast:
    values = dict(row)
    values["buttons"] = list(values["buttons"] or [])
    return Broadcast(**values)


async def _get(conn: Connection, broadcast_id: int) -> Broadcast | None:
    row = await conn.fetchrow(f"select {_COLUMNS} from broadcasts where id = $1", broadcast_id)
    return _broadcast(row) if row else None


def _actor(by: int | None) -> str:
    return grants.admin_actor(by) if by is not None else grants.SYSTEM


async def create_broadcast(
    db: Database,
    *,
    created_by: int,
    audience: str,
    text: str,
    audience_arg: str | None = None,
    html: bool = False,
    media: tuple[str, str] | None = None,
    buttons: list[list[dict[str, str]]] | None = None,
    operation_key: str | None = None,
) -> tuple[Broadcast, int]:
    """A draft broadcast and how many users it would reach now. ``media`` is ``(kind,
    file_id)``. With ``operation_key`` (the admin's update), running it again returns the
    draft the first run made."""
    source, args = audience_query(audience, audience_arg)

    async def unit(conn: Connection) -> tuple[Broadcast, int]:
        row = await conn.fetchrow(
            "insert into broadcasts (created_by, audience, audience_arg, text, html,"
            " media_kind, media_file_id, buttons, operation_key)"
            " values ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
            f" on conflict (operation_key) do nothing returning {_COLUMNS}",
            created_by,
            audience,
            audience_arg,
            text,
            html,
            media[0] if media else None,
            media[1] if media else None,
            buttons or [],
            operation_key,
        )
        if row is None:
            row = await fetch_one(
                conn, f"select {_COLUMNS} from broadcasts where operation_key = $1", operation_key
            )
        broadcast = _broadcast(row)
        await grants.note(
            conn,
            actor=grants.admin_actor(created_by),
            action="broadcast.create",
            key=f"broadcast.create:{broadcast.id}",
            details={"broadcast_id": broadcast.id, "audience": audience, "arg": audience_arg},
        )
        reach: int = await conn.fetchval(f"select count(*) from ({source}) a", *args)
        return broadcast, reach

    return await db.transaction(unit)


async def get_broadcast(db: Database, broadcast_id: int) -> Broadcast | None:
    async def unit(conn: Connection) -> Broadcast | None:
        return await _get(conn, broadcast_id)

    return await db.read(unit)


def job_payload(broadcast: Broadcast) -> dict[str, Any]:
    """What every message job of ``broadcast`` carries besides its ``chat_id``."""
    payload: dict[str, Any] = {
        "template": BROADCAST_TEMPLATE,
        "broadcast_id": broadcast.id,
        "params": {"text": broadcast.text},
    }
    if broadcast.html:
        payload["html"] = True
    if broadcast.media_kind and broadcast.media_file_id:
        payload["media"] = {"kind": broadcast.media_kind, "file_id": broadcast.media_file_id}
    if broadcast.buttons:
        payload["buttons"] = broadcast.buttons
    return payload


async def start_broadcast(
    db: Database,
    broadcast_id: int,
    *,
    report_chat_id: int,
    report_message_id: int | None,
    max_attempts: int = 8,
    by: int | None = None,
) -> Broadcast | None:
    """Start a draft: enqueue one message per user of its audience, in one transaction.

    Safe to run twice: a broadcast already started is returned as it is. None when there
    is no such broadcast or it was cancelled.
    """

    async def unit(conn: Connection) -> Broadcast | None:
        row = await conn.fetchrow(
            "update broadcasts set status = 'sending', started_at = now(),"
            " report_chat_id = $2, report_message_id = $3"
            f" where id = $1 and status = 'draft' returning {_COLUMNS}",
            broadcast_id,
            report_chat_id,
            report_message_id,
        )
        if row is None:
            existing = await _get(conn, broadcast_id)
            if existing is None or existing.status == "cancelled":
                return None
            return existing
        broadcast = _broadcast(row)
        source, args = audience_query(broadcast.audience, broadcast.audience_arg)
        shifted = source.replace("$1", "$5") if args else source
        inserted = await conn.fetch(
            "insert into outbox (kind, dedup_key, payload, max_attempts)"
            " select $1, $2 || a.telegram_id,"
            " $3::jsonb || jsonb_build_object('chat_id', a.telegram_id), $4"
            f" from ({shifted}) a order by a.telegram_id"
            " on conflict (dedup_key) do nothing returning id",
            job_kinds.NOTIFY,
            prefix(broadcast.id),
            job_payload(broadcast),
            max_attempts,
            *args,
        )
        await grants.note(
            conn,
            actor=_actor(by),
            action="broadcast.start",
            key=f"broadcast.start:{broadcast.id}",
            details={"broadcast_id": broadcast.id, "total": len(inserted)},
        )
        total = await fetch_one(
            conn,
            f"update broadcasts set total = $2 where id = $1 returning {_COLUMNS}",
            broadcast.id,
            len(inserted),
        )
        return _broadcast(total)

    return await db.transaction(unit)


async def cancel_broadcast(db: Database, broadcast_id: int, *, by: int | None = None) -> int | None:
    """Cancel a draft, or stop one being sent: exactly its messages not sent yet are
    dropped (dead-lettered as cancelled). A message whose send has started under a live
    claim is left to finish: it may be on its way to Telegram. Returns how many were
    dropped, None if the broadcast is already over."""

    async def unit(conn: Connection) -> int | None:
        status = await conn.fetchval(
            "update broadcasts set status = 'cancelled', finished_at = now() where id = $1"
            " and status in ('draft', 'sending') returning status",
            broadcast_id,
        )
        if status is None:
            return None
        dropped = await conn.fetch(
            "update outbox set status = 'dead', last_error = $2,"
            " claimed_by = null, claim_expires_at = null, updated_at = now()"
            " where dedup_key like $1 || '%' and status = 'pending'"
            " and not (started_at is not null and claim_expires_at > now()) returning id",
            prefix(broadcast_id),
            CANCELLED_ERROR,
        )
        await conn.execute(
            "update broadcasts set cancelled = $2 where id = $1", broadcast_id, len(dropped)
        )
        await grants.note(
            conn,
            actor=_actor(by),
            action="broadcast.stop",
            key=f"broadcast.stop:{broadcast_id}",
            details={"broadcast_id": broadcast_id, "dropped": len(dropped)},
        )
        return len(dropped)

    return await db.transaction(unit)


_PROGRESS = """
select count(*) as total,
       count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status <> 'pending' and blocked) as blocked,
       count(*) filter (where status = 'done' and not blocked) as delivered,
       count(*) filter (where status = 'dead' and last_error = $3) as cancelled,
       count(*) filter (where status = 'dead' and not blocked and last_error is distinct from $3)
           as failed
from (
    select status, last_error, coalesce(last_error ~* $2, false) as blocked
    from outbox where dedup_key like $1 || '%'
) o
"""

_DELETION = """
select count(*) as total,
       count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status = 'done' and not blocked) as deleted,
       count(*) filter (where status = 'dead' and too_old) as too_old,
       count(*) filter (where status <> 'pending' and not too_old
                        and (status = 'dead' or blocked)) as failed
from (
    select status, coalesce(last_error ~* $2, false) as too_old,
           coalesce(last_error ~* $3, false) as blocked
    from outbox where dedup_key like $1 || '%'
) o
"""


async def _progress(conn: Connection, broadcast_id: int) -> BroadcastProgress:
    row = await fetch_one(
        conn, _PROGRESS, prefix(broadcast_id), BLOCKED_ERROR.pattern, CANCELLED_ERROR
    )
    return BroadcastProgress(
        total=row["total"],
        pending=row["pending"],
        delivered=row["delivered"],
        blocked=row["blocked"],
        failed=row["failed"],
        cancelled=row["cancelled"],
    )


async def _deletion(conn: Connection, broadcast_id: int) -> DeletionProgress:
    row = await fetch_one(
        conn,
        _DELETION,
        deletion_prefix(broadcast_id),
        TOO_OLD_ERROR.pattern,
        BLOCKED_ERROR.pattern,
    )
    return DeletionProgress(**dict(row))


async def broadcast_progress(db: Database, broadcast_id: int) -> BroadcastProgress:
    async def unit(conn: Connection) -> BroadcastProgress:
        return await _progress(conn, broadcast_id)

    return await db.read(unit)


async def summary(db: Database, broadcast_id: int) -> Summary | None:
    async def unit(conn: Connection) -> Summary | None:
        found = await _get(conn, broadcast_id)
        if found is None:
            return None
        return Summary(
            found, await _progress(conn, broadcast_id), await _deletion(conn, broadcast_id)
        )

    return await db.read(unit)


async def recent(db: Database, limit: int) -> list[Summary]:
    """The latest broadcasts that were started, newest first, with their counts."""

    async def unit(conn: Connection) -> list[Summary]:
        rows = await conn.fetch(
            f"select {_COLUMNS} from broadcasts where started_at is not null"
            " order by id desc limit $1",
            limit,
        )
        found = []
        for row in rows:
            broadcast = _broadcast(row)
            found.append(
                Summary(
                    broadcast,
                    await _progress(conn, broadcast.id),
                    await _deletion(conn, broadcast.id),
                )
            )
        return found

    return await db.read(unit)


async def sending_broadcasts(db: Database) -> list[Broadcast]:
    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"select {_COLUMNS} from broadcasts where status = 'sending' order by id"
        )

    return [_broadcast(row) for row in await db.read(unit)]


async def finish_broadcast(db: Database, broadcast_id: int, progress: BroadcastProgress) -> bool:
    """Record the final count; True for the one caller that finished it."""

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update broadcasts set status = 'finished', finished_at = now(), delivered = $2,"
            " blocked = $3, failed = $4 where id = $1 and status = 'sending' returning 1",
            broadcast_id,
            progress.delivered,
            progress.blocked,
            progress.failed,
        )
        return row is not None

    return await db.transaction(unit, retry=True)


@dataclass(frozen=True, slots=True)
class DeletionStarted:
    queued: int
    """Deletions queued now (0 when they were queued before: ``repeated``)."""
    repeated: bool


async def delete_messages(
    db: Database, broadcast_id: int, *, by: int, max_attempts: int = 8
) -> DeletionStarted | None:
    """Queue the deletion of every message of the broadcast recorded as sent, once: the
    second request queues nothing. None when there is no such broadcast, or it is still
    a draft or being sent (stop it first)."""

    async def unit(conn: Connection) -> DeletionStarted | None:
        row = await conn.fetchrow(
            "select status, deletion_requested_at from broadcasts where id = $1 for update",
            broadcast_id,
        )
        if row is None or row["status"] not in ("finished", "cancelled"):
            return None
        if not await grants.note(
            conn,
            actor=grants.admin_actor(by),
            action="broadcast.delete",
            key=f"broadcast.delete:{broadcast_id}",
            details={"broadcast_id": broadcast_id},
        ):
            return DeletionStarted(0, repeated=True)
        inserted = await conn.fetch(
            "insert into outbox (kind, dedup_key, payload, max_attempts)"
            " select $1, $2 || (o.payload->>'chat_id'), jsonb_build_object("
            "   'chat_id', o.payload->'chat_id', 'template', $3::text,"
            "   'broadcast_id', $4::bigint, 'message_id', o.result->'message_id'), $5"
            " from outbox o where o.dedup_key like $6 || '%' and o.status = 'done'"
            " and jsonb_typeof(o.result->'message_id') = 'number' order by o.id"
            " on conflict (dedup_key) do nothing returning id",
            job_kinds.NOTIFY,
            deletion_prefix(broadcast_id),
            DELETE_TEMPLATE,
            broadcast_id,
            max_attempts,
            prefix(broadcast_id),
        )
        await conn.execute(
            "update broadcasts set deletion_requested_at = now() where id = $1", broadcast_id
        )
        return DeletionStarted(len(inserted), repeated=False)

    return await db.transaction(unit)
