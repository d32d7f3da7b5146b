"""The bot's aiogram routers, in the order the dispatcher tries them."""

from __future__ import annotations

from aiogram import Router

from . import (
    admin,
    admin_actions,
    admin_reports,
    broadcasts,
    limits,
    moderation,
    payments,
    promo,
    referrals,
    user,
)


def routers() -> list[Router]:
    """Fresh routers (aiogram attaches a router to one dispatcher only): payments first
    (they must never fall through), then referrals (which records every ``/start`` and
    passes it on), then the admins' (filtered to admins), then the user flows, then the
    fallbacks for whatever is left."""
    return [
        payments.build_router(),
        referrals.build_router(),
        admin.build_router(),
        broadcasts.build_router(),
        moderation.build_router(),
        admin_actions.build_router(),
        admin_reports.build_router(),
        promo.build_admin_router(),
        promo.build_router(),
        limits.build_router(),
        user.build_router(),
        user.build_fallback(),
    ]
