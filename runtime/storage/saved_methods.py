"""Payment methods saved for auto-renewal, with the user's consent, revocable at any time.

A method is saved from a credited payment whose intent carried the user's explicit choice
(``payments.save_method``): never because a provider says it saved one. A user has one
method in use: a new one replaces the old. Saving it turns auto-renew on (the user chose
"save for auto-renewal"). Removing it, or the provider reporting it unusable, revokes it
for good: the row stays, so a late or repeated delivery of the payment that saved it
cannot bring it back, and nothing charges a revoked method
(``runtime.storage.card_renewals`` checks under the user's lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._database import Connection, Database, fetch_one
from .users import lock_user

MAX_REF = 128
MAX_TITLE = 64


@dataclass(frozen=True, slots=True)
class SavedMethod:
    id: int
    user_id: int
    provider: str
    method_ref: str
    title: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


COLUMNS = "id, user_id, provider, method_ref, title, created_at, revoked_at, revoked_reason"


def method_of(row: asyncpg.Record) -> SavedMethod:
    return SavedMethod(**dict(row))


def clean_title(title: str) -> str:
    """A title as shown in the bot: printable, bounded (it came from a peer)."""
    text = "".join(c for c in title if c.isprintable()).strip()
    return text[:MAX_TITLE] or "•"


async def save(
    db: Database,
    *,
    user_id: int,
    provider: str,
    method_ref: str,
    title: str,
    consent_payment_id: str,
) -> SavedMethod | None:
    """Keep the method a consented payment saved; None when the ref cannot be stored or
    this method was saved (or revoked) before: a repeated delivery changes nothing."""
    if not 0 < len(method_ref) <= MAX_REF:
        return None

    async def unit(conn: Connection) -> SavedMethod | None:
        await lock_user(conn, user_id)
        known = await conn.fetchval(
            "select 1 from saved_payment_methods where provider = $1 and method_ref = $2",
            provider,
            method_ref,
        )
        if known:
            return None
        await conn.execute(
            "update saved_payment_methods set revoked_at = now(), revoked_reason = 'replaced'"
            " where user_id = $1 and revoked_at is null",
            user_id,
        )
        row = await fetch_one(
            conn,
            "insert into saved_payment_methods (user_id, provider, method_ref, title,"
            f" consent_payment_id) values ($1, $2, $3, $4, $5::uuid) returning {COLUMNS}",
            user_id,
            provider,
            method_ref,
            clean_title(title),
            consent_payment_id,
        )
        await conn.execute(
            "update users set auto_renew = true, updated_at = now()"
            " where telegram_id = $1 and not auto_renew",
            user_id,
        )
        return method_of(row)

    return await db.transaction(unit, retry=True)


async def in_use(db: Database, user_id: int) -> SavedMethod | None:
    """The user's method in use (not revoked), if any."""

    async def unit(conn: Connection) -> SavedMethod | None:
        row = await conn.fetchrow(
            f"select {COLUMNS} from saved_payment_methods"
            " where user_id = $1 and revoked_at is null",
            user_id,
        )
        return method_of(row) if row else None

    return await db.read(unit)


async def revoke(db: Database, user_id: int, method_id: int, *, reason: str) -> bool:
    """Revoke ``method_id`` if it is ``user_id``'s and in use; True when revoked now."""

    async def unit(conn: Connection) -> bool:
        await lock_user(conn, user_id)
        done = await conn.fetchval(
            "update saved_payment_methods set revoked_at = now(), revoked_reason = $3"
            " where id = $1 and user_id = $2 and revoked_at is null returning true",
            method_id,
            user_id,
            reason[:64],
        )
        return bool(done)

    return await db.transaction(unit, retry=True)
