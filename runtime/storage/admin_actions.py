"""The admin's user editor: set an expiry, change or give a plan, reset traffic, record a
device reset.

Each action is one transaction under the user's row lock that writes its audit entry
(``grants``) under the operation's key (the admin's update id) and queues what follows in
the same transaction: the panel update (ACTIVATE, with the absolute expiry and the plan's
limits), a revocation (REVOKE) and the user's message (NOTIFY). An action run again under
the same key (a handler retried after a crash, the same update twice, twenty at once)
finds its key taken and rolls back: it happens once. An action refused (nothing to apply
it to) writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import grants, job_kinds
from ._database import Connection, Database, Work, fetch_one
from .moderation import Repeated, end_access, once
from .outbox import enqueue
from .subscriptions import _COLUMNS as _SUBSCRIPTION_COLUMNS
from .subscriptions import Subscription, Terms, account_name
from .users import lock_user

NO_SUBSCRIPTION = "no_subscription"
"""Refusal: the user has no running subscription (or no running paid one, for a plan)."""
OTHER_BACKEND = "other_backend"
"""Refusal: the plan runs on another VPN backend than the user's subscription."""


@dataclass(frozen=True, slots=True)
class Edited:
    """What an action did. ``changed`` is False when it had nothing to change (the same
    plan again, no subscription to end); ``repeated`` when it ran before under its key;
    ``refused`` names why nothing was done (nothing recorded)."""

    changed: bool
    repeated: bool = False
    subscription: Subscription | None = None
    created: bool = False
    """A subscription was started for a user who had none."""
    ended: tuple[int, ...] = ()
    """An expiry in the past: the subscriptions ended."""
    deleted: int = 0
    """A device reset: the devices deleted."""
    refused: str | None = None


_RUNNING = (
    f"select {_SUBSCRIPTION_COLUMNS} from subscriptions where user_id = $1"
    " and status = 'active' and expires_at > now()"
)


async def _running(conn: Connection, user_id: int) -> Subscription | None:
    """The subscription an admin's action applies to, locked: the user's running paid
    one first (the latest), else their trial."""
    row = await conn.fetchrow(
        f"{_RUNNING} order by (kind = 'paid') desc, expires_at desc limit 1 for update", user_id
    )
    return Subscription(**dict(row)) if row else None


async def _activate(
    conn: Connection, subscription_id: int, key: str, max_attempts: int
) -> Subscription:
    """Mark the subscription for activation and queue its panel update under ``key``."""
    row = await fetch_one(
        conn,
        "update subscriptions set activation_status = 'pending', next_attempt_at = now(),"
        " activation_attempts = 0, last_error = null, updated_at = now()"
        f" where id = $1 returning {_SUBSCRIPTION_COLUMNS}",
        subscription_id,
    )
    await enqueue(
        conn,
        kind=job_kinds.ACTIVATE,
        dedup_key=f"activate:{subscription_id}:{key}",
        payload={"subscription_id": subscription_id},
        max_attempts=max_attempts,
    )
    return Subscription(**dict(row))


async def _tell(
    conn: Connection, user_id: int, key: str, template: str, params: dict[str, Any]
) -> None:
    await enqueue(
        conn,
        kind=job_kinds.NOTIFY,
        dedup_key=f"notify:edit:{key}",
        payload={"chat_id": user_id, "template": template, "params": params},
    )


async def _noted(conn: Connection, *, key: str, **entry: Any) -> None:
    if not await grants.note(conn, key=key, **entry):
        raise Repeated


async def set_expiry(
    db: Database,
    user_id: int,
    expires_at: datetime,
    *,
    backend: str,
    actor: str,
    key: str,
    reason: str | None = None,
    max_attempts: int = 10,
) -> Edited | None:
    """Set the expiry of the user's running subscription to ``expires_at`` (absolute,
    later or earlier), or start one on ``backend`` for a user who has none. A moment
    already past ends every active subscription now, as a revocation does. None for an
    unknown user."""

    async def unit(conn: Connection) -> Edited | None:
        if await lock_user(conn, user_id) is None:
            return None
        entry: dict[str, Any] = {
            "actor": actor,
            "action": "subscription.set_expiry",
            "user_id": user_id,
            "reason": reason,
        }
        target = {"expires_at": expires_at.isoformat()}
        if await conn.fetchval("select $1::timestamptz <= now()", expires_at):
            ended = await end_access(conn, user_id, key=key, max_attempts=max_attempts)
            await _noted(conn, key=key, **entry, details={**target, "ended": list(ended)})
            return Edited(changed=bool(ended), ended=ended)
        current = await _running(conn, user_id)
        if current is None:
            created = await _start(conn, user_id, expires_at, backend)
            await _noted(conn, key=key, **entry, details={**target, "subscription_id": created})
            subscription = await _activate(conn, created, key, max_attempts)
            return Edited(changed=True, subscription=subscription, created=True)
        await conn.execute(
            "update subscriptions set expires_at = $2 where id = $1", current.id, expires_at
        )
        await _noted(
            conn,
            key=key,
            **entry,
            details={
                **target,
                "subscription_id": current.id,
                "was": current.expires_at.isoformat(),
            },
        )
        subscription = await _activate(conn, current.id, key, max_attempts)
        await _tell(
            conn,
            user_id,
            key,
            "admin_actions_expiry_set",
            {"subscription_id": current.id, "expires_at": expires_at.isoformat()},
        )
        return Edited(changed=True, subscription=subscription)

    return await _once(db, unit)


async def _start(conn: Connection, user_id: int, expires_at: datetime, backend: str) -> int:
    """A ``grant`` subscription from now to ``expires_at`` on ``backend``; its id."""
    created: int = await conn.fetchval(
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
        " vpn_backend, next_attempt_at) values ($1, $2, 'paid', now(), $3, $4, now())"
        " returning id",
        user_id,
        grants.GRANT_PLAN_ID,
        expires_at,
        backend,
    )
    await conn.execute(
        "update subscriptions set vpn_account = $2 where id = $1",
        created,
        account_name(user_id, created),
    )
    return created


async def set_plan(
    db: Database,
    user_id: int,
    terms: Terms,
    *,
    actor: str,
    key: str,
    reason: str | None = None,
    max_attempts: int = 10,
) -> Edited | None:
    """Put the user's running paid subscription (the one on the plan's backend first) on
    the plan of ``terms``: the expiry and the traffic period stay, the plan's limits reach
    the panel through the activation job. None for an unknown user."""

    async def unit(conn: Connection) -> Edited | None:
        if await lock_user(conn, user_id) is None:
            return None
        row = await conn.fetchrow(
            f"{_RUNNING} and kind = 'paid'"
            " order by (vpn_backend = $2) desc, expires_at desc limit 1 for update",
            user_id,
            terms.backend,
        )
        if row is None:
            return Edited(changed=False, refused=NO_SUBSCRIPTION)
        current = Subscription(**dict(row))
        if current.vpn_backend != terms.backend:
            return Edited(changed=False, subscription=current, refused=OTHER_BACKEND)
        changed = current.plan_id != terms.plan_id
        await _noted(
            conn,
            key=key,
            actor=actor,
            action="subscription.set_plan",
            user_id=user_id,
            reason=reason,
            details={
                "subscription_id": current.id,
                "plan_id": terms.plan_id,
                "was": current.plan_id,
            },
        )
        if not changed:
            return Edited(changed=False, subscription=current)
        await conn.execute(
            "update subscriptions set plan_id = $2 where id = $1", current.id, terms.plan_id
        )
        subscription = await _activate(conn, current.id, key, max_attempts)
        await _tell(
            conn,
            user_id,
            key,
            "admin_actions_plan_changed",
            {"subscription_id": current.id, "expires_at": current.expires_at.isoformat()},
        )
        return Edited(changed=True, subscription=subscription)

    return await _once(db, unit)


async def give_plan(
    db: Database,
    user_id: int,
    terms: Terms,
    *,
    actor: str,
    key: str,
    reason: str | None = None,
    max_attempts: int = 10,
) -> Edited | None:
    """Give the plan for nothing, as a purchase of it gives it (``grants.grant_plan``, as a
    promo code's plan): a subscription that had its link already is extended and its user
    told so; a new one is told "access ready" by its first activation. None for an
    unknown user."""

    async def unit(conn: Connection) -> Edited | None:
        if await lock_user(conn, user_id) is None:
            return None
        count = "select count(*) from subscriptions where user_id = $1"
        before = await conn.fetchval(count, user_id)
        subscription = await grants.grant_plan(
            conn,
            user_id=user_id,
            terms=terms,
            key=key,
            actor=actor,
            action="plan.give",
            reason=reason,
            max_attempts=max_attempts,
        )
        if subscription is None:
            raise Repeated
        after = await conn.fetchval(count, user_id)
        if subscription.access_url is not None:
            await _tell(
                conn,
                user_id,
                key,
                "access_extended",
                {
                    "subscription_id": subscription.id,
                    "access_url": subscription.access_url,
                    "expires_at": subscription.expires_at.isoformat(),
                },
            )
        return Edited(changed=True, subscription=subscription, created=after > before)

    return await _once(db, unit)


async def reset_traffic(
    db: Database,
    user_id: int,
    *,
    actor: str,
    key: str,
    reason: str | None = None,
    max_attempts: int = 10,
) -> Edited | None:
    """Start a new traffic period of the user's running subscription now; the activation
    job provisions the account for it, and the panel resets its usage for a new period.
    Top-ups of the period that ends stay with it. None for an unknown user."""

    async def unit(conn: Connection) -> Edited | None:
        if await lock_user(conn, user_id) is None:
            return None
        current = await _running(conn, user_id)
        if current is None:
            return Edited(changed=False, refused=NO_SUBSCRIPTION)
        started = await conn.fetchval(
            "update subscriptions set period_started_at = now() where id = $1"
            " returning period_started_at",
            current.id,
        )
        await _noted(
            conn,
            key=key,
            actor=actor,
            action="traffic.reset",
            user_id=user_id,
            reason=reason,
            details={
                "subscription_id": current.id,
                "period_started_at": started.isoformat(),
                "was": current.period_started_at.isoformat(),
            },
        )
        subscription = await _activate(conn, current.id, key, max_attempts)
        await _tell(
            conn, user_id, key, "admin_actions_traffic_reset", {"subscription_id": current.id}
        )
        return Edited(changed=True, subscription=subscription)

    return await _once(db, unit)


async def running(db: Database, user_id: int) -> Subscription | None:
    """The subscription an admin's action applies to (see ``_running``), unlocked."""

    async def unit(conn: Connection) -> Subscription | None:
        row = await conn.fetchrow(
            f"{_RUNNING} order by (kind = 'paid') desc, expires_at desc limit 1", user_id
        )
        return Subscription(**dict(row)) if row else None

    return await db.read(unit)


async def devices_reset(
    db: Database,
    subscription: Subscription,
    deleted: int,
    *,
    actor: str,
    key: str,
    reason: str | None = None,
) -> bool:
    """Record a device reset the panel carried out, and queue the user's message, once per
    ``key``: True when this call recorded it. The panel call comes first and is safe to
    repeat (it deletes whatever devices the account has), so a run after a crash between
    the two does it again and records it once."""

    async def unit(conn: Connection) -> bool:
        if not await grants.note(
            conn,
            actor=actor,
            action="devices.reset",
            user_id=subscription.user_id,
            key=key,
            reason=reason,
            details={"subscription_id": subscription.id, "deleted": deleted},
        ):
            return False
        await _tell(
            conn,
            subscription.user_id,
            key,
            "admin_actions_devices_reset",
            {"subscription_id": subscription.id},
        )
        return True

    return await db.transaction(unit, retry=True)


async def _once(db: Database, unit: Work[Edited | None]) -> Edited | None:
    return await once(db, unit, Edited(changed=False, repeated=True))
