"""What the bot asks of promo codes and discounts: one unit of work per call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runtime.catalog import Catalog
from runtime.failures import Outcome
from runtime.logs import get_logger
from runtime.storage import Connection, Database, discounts, grants
from runtime.storage import promo as store
from runtime.storage.promo import Activation, ActivationRow, NewCode, PromoCode
from runtime.storage.users import lock_user


class UnknownPlan(ValueError):
    """A plan code names a plan that is not on sale."""


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: PromoCode
    activations: list[ActivationRow]


class Promos:
    """Activation for users; creating, listing, disabling codes and setting personal
    discounts for admins, each written to the audit log as the admin's."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        backend: Callable[[], str],
        activation_max_attempts: int = 10,
    ) -> None:
        """``backend``: where granted days go for a user with no subscription."""
        self._db = db
        self._catalog = catalog
        self._backend = backend
        self._attempts = activation_max_attempts
        self._log = get_logger("promo")

    async def activate(self, user_id: int, code: str) -> Activation:
        """Activate ``code`` (as ``rules.normalize`` gives it) for the user, once. Logged
        with our own ids only: the text a user typed never reaches a log line."""
        result = await store.activate(
            self._db,
            code,
            user_id,
            plans={plan.id: plan.terms for plan in self._catalog.plans},
            backend=self._backend(),
            max_attempts=self._attempts,
        )
        self._log.info(
            "promo code activated" if result.refusal is None else "promo code refused",
            operation="promo.activate",
            user_id=user_id,
            code_id=result.code.id if result.code is not None else None,
            refusal=result.refusal.value if result.refusal is not None else None,
            outcome=Outcome.SUCCESS if result.refusal is None else Outcome.SKIPPED,
        )
        return result

    async def create(self, new: NewCode, *, by: int) -> PromoCode | None:
        """The new code; None when one of that name exists. ``UnknownPlan`` when a plan
        code names no plan on sale."""
        if new.plan_id is not None and self._catalog.find(new.plan_id) is None:
            raise UnknownPlan(new.plan_id)
        return await store.create(self._db, new, actor=grants.admin_actor(by))

    async def newest(self, limit: int = 30) -> list[PromoCode]:
        return await store.newest(self._db, limit=limit)

    async def info(self, code: str) -> CodeInfo | None:
        found = await store.find(self._db, code)
        if found is None:
            return None
        return CodeInfo(found, await store.activations(self._db, found.id))

    async def disable(self, code: str, *, by: int) -> PromoCode | None:
        return await store.disable(self._db, code, actor=grants.admin_actor(by))

    async def set_discount(self, who: str, percent: int, *, by: int) -> int | None:
        """Set the personal discount of the user named by id or @username (0 removes
        it); returns their id, None when unknown."""
        from runtime.storage.admin import find_user  # an admin's, now and then

        card = await find_user(self._db, who)
        if card is None:
            return None
        user_id = card.user.telegram_id
        actor = grants.admin_actor(by)

        async def unit(conn: Connection) -> None:
            await lock_user(conn, user_id)
            await discounts.set_personal(conn, user_id, percent, actor)
            await grants.note(
                conn,
                actor=actor,
                action="discount.set",
                user_id=user_id,
                details={"percent": percent},
            )

        await self._db.transaction(unit, retry=True)
        return user_id
