"""Codes from the configuration (``[promo.codes.<CODE>]``), created at start when missing."""

from __future__ import annotations

from runtime.config._model import PromoCodeSettings, PromoSettings
from runtime.logs import get_logger, log_failure
from runtime.storage import Connection, Database
from runtime.storage import promo as store
from runtime.storage.promo import Kind, NewCode

CONFIG_ACTOR = "config"


def new_code(name: str, code: PromoCodeSettings) -> NewCode:
    plan = code.kind == "plan"
    return NewCode(
        code=name,
        kind=Kind(code.kind),
        amount=None if plan else int(code.value),
        plan_id=str(code.value) if plan else None,
        max_activations=code.max_activations,
        valid_from=code.valid_from,
        valid_until=code.valid_until,
        new_users_only=code.new_users_only,
        without_subscription=code.without_subscription,
    )


async def seed_codes(db: Database, settings: PromoSettings) -> list[str]:
    """Create the configured codes that do not exist yet, in one unit of work; returns
    the codes created. A failure is logged and costs only the seeding."""
    if not settings.codes:
        return []
    wanted = [new_code(name, code) for name, code in settings.codes.items()]

    async def unit(conn: Connection) -> list[str]:
        created = []
        for new in wanted:
            if await store.insert(conn, new, actor=CONFIG_ACTOR) is not None:
                created.append(new.code)
        return created

    log = get_logger("promo")
    try:
        created = await db.transaction(unit, retry=True)
    except Exception as exc:
        log_failure(log, exc, operation="promo.seed")
        return []
    if created:
        log.info(
            "promo codes created from the configuration",
            operation="promo.seed",
            codes=created,
            outcome="success",
        )
    return created
