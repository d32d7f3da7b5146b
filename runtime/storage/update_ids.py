"""The Telegram update ids the inbox has seen, for whoever numbers updates (the sandbox's
Telegram emulator, which must go on after them when it starts again)."""

from __future__ import annotations

from ._database import Connection, Database


async def highest_seen(db: Database) -> int | None:
    """The highest update id the inbox holds (None when it holds none). Processed updates
    stay until ``inbox.prune`` deletes them days later, and the newest go last."""

    async def unit(conn: Connection) -> int | None:
        value = await conn.fetchval("select max(update_id) from telegram_updates")
        return None if value is None else int(value)

    return await db.read(unit)
