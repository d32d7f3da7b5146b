"""Users: who they are, their language, balance and flags. Money in minor units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._database import Connection, Database


@dataclass(frozen=True, slots=True)
class User:
    telegram_id: int
    username: str | None
    language: str
    trial_used_at: datetime | None
    balance_minor: int
    auto_renew: bool
    blocked_bot_at: datetime | None
    banned_at: datetime | None = None
    """Banned by an admin: the bot answers once, then ignores everything but payments."""
    admitted_at: datetime | None = None
    """Passed registration; None while registration is closed to them."""
    rules_accepted: int | None = None
    """The version of the rules they accepted."""
    channel_checked_at: datetime | None = None
    """When they were last found in the required channel."""
    display_name: str | None = None
    """Their first and last name as Telegram last showed them."""


_COLUMNS = (
    "telegram_id, username, language, trial_used_at, balance_minor, auto_renew, blocked_bot_at,"
    " banned_at, admitted_at, rules_accepted, channel_checked_at, display_name"
)

MAX_NAME = 256


def full_name(first: str | None, last: str | None) -> str | None:
    """``first last`` as Telegram shows it, bounded; None when both are empty."""
    name = " ".join(part for part in (first, last) if part).strip()
    return name[:MAX_NAME] or None


async def ensure_user(
    conn: Connection, telegram_id: int, *, username: str | None = None, language: str | None = None
) -> None:
    """Create the user on first contact; later contacts refresh the username only."""
    await conn.execute(
        "insert into users (telegram_id, username, language) values ($1, $2, coalesce($3, 'en'))"
        " on conflict (telegram_id) do update set username = coalesce($2, users.username),"
        " updated_at = now() where users.username is distinct from coalesce($2, users.username)",
        telegram_id,
        username,
        language,
    )


async def lock_user(conn: Connection, telegram_id: int) -> User | None:
    """The user's row, locked to the end of the transaction: serialises money per user."""
    row = await conn.fetchrow(
        f"select {_COLUMNS} from users where telegram_id = $1 for update", telegram_id
    )
    return User(**dict(row)) if row else None


async def get_user(db: Database, telegram_id: int) -> User | None:
    async def unit(conn: Connection) -> User | None:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from users where telegram_id = $1", telegram_id
        )
        return User(**dict(row)) if row else None

    return await db.read(unit)


TOUCH = (
    "insert into users (telegram_id, username, language, display_name, admitted_at)"
    " values ($1, $2, coalesce($3, 'en'), $4, case when $5 then now() end)"
    " on conflict (telegram_id) do update set"
    " username = coalesce($2, users.username), blocked_bot_at = null,"
    " display_name = coalesce($4, users.display_name),"
    " admitted_at = coalesce(users.admitted_at, case when $5 then now() end),"
    " updated_at = case when users.username is distinct from coalesce($2, users.username)"
    " or users.display_name is distinct from coalesce($4, users.display_name)"
    " then now() else users.updated_at end"
    f" returning {_COLUMNS}"
)
"""The upsert of a contact: $1 id, $2 username, $3 language, $4 name, $5 admit."""


async def touch_user(
    db: Database,
    telegram_id: int,
    *,
    username: str | None,
    language: str | None,
    name: str | None = None,
    admit: bool = False,
) -> User:
    """Record a contact (creating the user; a new username or name is kept, and a user who
    wrote has not blocked the bot) and return the user, in one statement. ``admit``: while
    registration is open, the contact admits a user not admitted yet, in the same
    statement."""

    async def unit(conn: Connection) -> User:
        row = await conn.fetchrow(TOUCH, telegram_id, username, language, name, admit)
        assert row is not None
        return User(**dict(row))

    return await db.statement(unit, retry=True)


async def set_language(db: Database, telegram_id: int, language: str) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update users set language = $2, updated_at = now() where telegram_id = $1",
            telegram_id,
            language,
        )

    await db.transaction(unit, retry=True)


async def set_auto_renew(db: Database, telegram_id: int, enabled: bool) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update users set auto_renew = $2, updated_at = now() where telegram_id = $1",
            telegram_id,
            enabled,
        )

    await db.transaction(unit, retry=True)


async def mark_blocked(db: Database, telegram_id: int) -> None:
    """The user blocked the bot: messages to them are dropped until they write again."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update users set blocked_bot_at = now() where telegram_id = $1"
            " and blocked_bot_at is null",
            telegram_id,
        )

    await db.transaction(unit, retry=True)


async def add_balance(conn: Connection, telegram_id: int, amount_minor: int) -> int:
    """Top up inside the caller's transaction; returns the new balance."""
    balance: int = await conn.fetchval(
        "update users set balance_minor = balance_minor + $2, updated_at = now()"
        " where telegram_id = $1 returning balance_minor",
        telegram_id,
        amount_minor,
    )
    return balance


async def spend_balance(conn: Connection, telegram_id: int, amount_minor: int) -> int | None:
    """Spend in one conditional update: never negative, never twice for one balance.

    Returns the new balance, or None when the balance is too low.
    """
    balance: int | None = await conn.fetchval(
        "update users set balance_minor = balance_minor - $2, updated_at = now()"
        " where telegram_id = $1 and balance_minor >= $2 returning balance_minor",
        telegram_id,
        amount_minor,
    )
    return balance
