"""An admin's hand on one user: ban and unban, balance corrections, revoking access.

Each action is one transaction that writes its audit entry (``grants``) under the
operation's key (the admin's update id), so an action retried after a crash, or the same
update handled twice, changes nothing the second time. A revocation queues the panel call
(``REVOKE``) in the same transaction, as a refund does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from . import grants, job_kinds
from ._database import Connection, Database, Work
from .outbox import enqueue
from .users import lock_user

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Applied:
    """What an action did: ``changed`` is False when it had nothing to do (already banned,
    nothing to revoke) or ran before under the same key (``repeated``)."""

    changed: bool
    repeated: bool = False
    balance_minor: int | None = None
    amount_minor: int = 0
    """For balance corrections: the amount actually added (> 0) or taken (< 0)."""
    subscription_ids: tuple[int, ...] = ()
    """For revocations: the subscriptions revoked."""


async def set_ban(
    db: Database,
    user_id: int,
    *,
    banned: bool,
    actor: str,
    key: str,
    reason: str | None = None,
) -> Applied | None:
    """Ban (or lift the ban on) a user; None for an unknown user. A new ban queues the one
    message the user gets (template ``account_banned``)."""

    async def unit(conn: Connection) -> Applied | None:
        if await lock_user(conn, user_id) is None:
            return None
        changed = await conn.fetchval(
            "update users set banned_at = case when $2 then now() end, updated_at = now()"
            " where telegram_id = $1 and (banned_at is not null) <> $2"
            " returning true",
            user_id,
            banned,
        )
        written = await grants.note(
            conn,
            actor=actor,
            action="user.ban" if banned else "user.unban",
            user_id=user_id,
            key=key,
            reason=reason,
            details={"changed": bool(changed)},
        )
        if not written:
            raise Repeated
        if changed and banned:
            await enqueue(
                conn,
                kind=job_kinds.NOTIFY,
                dedup_key=f"notify:ban:{key}",
                payload={"chat_id": user_id, "template": "account_banned", "params": {}},
            )
        return Applied(changed=bool(changed))

    return await _once(db, unit)


async def adjust_balance(
    db: Database,
    user_id: int,
    amount_minor: int,
    *,
    actor: str,
    key: str,
    reason: str,
) -> Applied | None:
    """Add (``amount_minor`` > 0) or take (< 0, never below zero) balance, with a reason.
    None for an unknown user."""
    if amount_minor == 0:
        raise ValueError("the amount must not be zero")

    async def unit(conn: Connection) -> Applied | None:
        if await lock_user(conn, user_id) is None:
            return None
        if amount_minor > 0:
            balance = await grants.grant_balance(
                conn,
                user_id=user_id,
                amount_minor=amount_minor,
                key=key,
                actor=actor,
                action="balance.add",
                reason=reason,
            )
            if balance is None:
                raise Repeated
            return Applied(changed=True, balance_minor=balance, amount_minor=amount_minor)
        taken = await grants.take_balance(
            conn,
            user_id=user_id,
            amount_minor=-amount_minor,
            key=key,
            actor=actor,
            action="balance.take",
            reason=reason,
        )
        if taken is None:
            raise Repeated
        balance = await conn.fetchval(
            "select balance_minor from users where telegram_id = $1", user_id
        )
        return Applied(changed=taken > 0, balance_minor=balance, amount_minor=-taken)

    return await _once(db, unit)


async def revoke_access(
    db: Database,
    user_id: int,
    *,
    actor: str,
    key: str,
    reason: str | None = None,
    max_attempts: int = 10,
) -> Applied | None:
    """End every active subscription of the user now and queue their panel revocations.
    None for an unknown user."""

    async def unit(conn: Connection) -> Applied | None:
        if await lock_user(conn, user_id) is None:
            return None
        ids = await end_access(conn, user_id, key=key, max_attempts=max_attempts)
        if not await grants.note(
            conn,
            actor=actor,
            action="access.revoke",
            user_id=user_id,
            key=key,
            reason=reason,
            details={"subscription_ids": list(ids)},
        ):
            raise Repeated
        return Applied(changed=bool(ids), subscription_ids=ids)

    return await _once(db, unit)


async def end_access(
    conn: Connection, user_id: int, *, key: str, max_attempts: int = 10
) -> tuple[int, ...]:
    """End every active subscription of the user now, inside the caller's unit (which holds
    the user's lock): queue the user's message and each panel revocation under ``key``.
    Returns the subscriptions ended."""
    rows = await conn.fetch(
        "update subscriptions set status = 'revoked', revoked_at = now(),"
        " expires_at = least(expires_at, now()), updated_at = now()"
        " where user_id = $1 and status = 'active' returning id",
        user_id,
    )
    ids = tuple(sorted(r["id"] for r in rows))
    if ids:
        await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=f"notify:revoke:{key}",
            payload={"chat_id": user_id, "template": "access_revoked", "params": {}},
        )
    for subscription_id in ids:
        await enqueue(
            conn,
            kind=job_kinds.REVOKE,
            dedup_key=f"revoke:{subscription_id}:{key}",
            payload={"subscription_id": subscription_id},
            max_attempts=max_attempts,
        )
    return ids


class Repeated(Exception):
    """The action's key is in the audit log already: roll back whatever the unit did."""


async def once(db: Database, unit: Work[_T], repeated: _T) -> _T:
    """Run an admin action's unit; ``repeated`` when it raised ``Repeated``."""
    try:
        return await db.transaction(unit)
    except Repeated:
        return repeated


async def _once(db: Database, unit: Work[Applied | None]) -> Applied | None:
    return await once(db, unit, Applied(changed=False, repeated=True))
