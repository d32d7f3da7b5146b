from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time

from runtime.catalog import Catalog
from runtime.storage import Database, admin, grants
from runtime.storage import admin_actions as store
from runtime.storage.admin_actions import Edited
from runtime.traffic import Traffic

MAX_YEARS_AHEAD = 10
"""The furthest expiry an admin may set, in years from today (a typo's bound)."""
UNSUPPORTED = "unsupported"
"""Refusal: the subscription's panel keeps no devices."""
UNKNOWN_PLAN = "unknown_plan"

Result = tuple[int | None, Edited | None]
"""The user's id (None: unknown) and what the action did (None: unknown user)."""


def expiry_of(day: date) -> datetime:
    """An expiry typed as a date: the end of that day, UTC. A day before today is past."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


class UserEditor:
    """What an admin changes on one user's access, through the same paths as a purchase:
    the database first (one transaction with the audit entry and the queued panel update
    and message, ``runtime.storage.admin_actions``), the panel and the user's message from
    the outbox. The actions take the user as typed (an id or a username)."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        traffic: Callable[[], Traffic],
        *,
        default_backend: Callable[[], str],
        max_attempts: int,
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._traffic = traffic
        self._default_backend = default_backend
        self._max_attempts = max_attempts

    async def _user(self, who: str) -> int | None:
        card = await admin.find_user(self._db, who)
        return card.user.telegram_id if card is not None else None

    async def set_expiry(
        self, who: str, day: date, *, by: int, key: str, reason: str | None = None
    ) -> Result:
        user_id = await self._user(who)
        if user_id is None:
            return None, None
        return user_id, await store.set_expiry(
            self._db,
            user_id,
            expiry_of(day),
            backend=self._default_backend(),
            actor=grants.admin_actor(by),
            key=key,
            reason=reason,
            max_attempts=self._max_attempts,
        )

    async def set_plan(
        self, who: str, plan_id: str, *, by: int, key: str, reason: str | None = None
    ) -> Result:
        return await self._with_plan(store.set_plan, who, plan_id, by=by, key=key, reason=reason)

    async def give_plan(
        self, who: str, plan_id: str, *, by: int, key: str, reason: str | None = None
    ) -> Result:
        return await self._with_plan(store.give_plan, who, plan_id, by=by, key=key, reason=reason)

    async def _with_plan(
        self,
        action: Callable[..., Awaitable[Edited | None]],
        who: str,
        plan_id: str,
        *,
        by: int,
        key: str,
        reason: str | None,
    ) -> Result:
        plan = self._catalog.find(plan_id)
        user_id = await self._user(who)
        if user_id is None:
            return None, None
        if plan is None:
            return user_id, Edited(changed=False, refused=UNKNOWN_PLAN)
        done = await action(
            self._db,
            user_id,
            plan.terms,
            actor=grants.admin_actor(by),
            key=key,
            reason=reason,
            max_attempts=self._max_attempts,
        )
        return user_id, done

    async def reset_traffic(
        self, who: str, *, by: int, key: str, reason: str | None = None
    ) -> Result:
        user_id = await self._user(who)
        if user_id is None:
            return None, None
        return user_id, await store.reset_traffic(
            self._db,
            user_id,
            actor=grants.admin_actor(by),
            key=key,
            reason=reason,
            max_attempts=self._max_attempts,
        )

    async def reset_devices(
        self, who: str, *, by: int, key: str, reason: str | None = None
    ) -> Result:
        """Delete the devices of the user's running subscription on its panel, with no
        cool-down, then record it once per ``key`` (``store.devices_reset``). Raises what
        the panel raises (the admin is asked to try again: a new update, a new key)."""
        user_id = await self._user(who)
        if user_id is None:
            return None, None
        if await grants.granted(self._db, key) is not None:
            return user_id, Edited(changed=False, repeated=True)
        subscription = await store.running(self._db, user_id)
        if subscription is None:
            return user_id, Edited(changed=False, refused=store.NO_SUBSCRIPTION)
        traffic = self._traffic()
        if traffic.device_manager(subscription) is None:
            return user_id, Edited(changed=False, subscription=subscription, refused=UNSUPPORTED)
        deleted = await traffic.delete_devices(subscription)
        recorded = await store.devices_reset(
            self._db,
            subscription,
            deleted,
            actor=grants.admin_actor(by),
            key=key,
            reason=reason,
        )
        return user_id, Edited(
            changed=recorded, repeated=not recorded, subscription=subscription, deleted=deleted
        )
