"""The bot's aiogram routers, in the order the dispatcher tries them."""

from __future__ import annotations

from aiogram import Router

from . import admin, broadcasts, payments, user


def routers() -> list[Router]:
    """Fresh routers (aiogram attaches a router to one dispatcher only): payments first
    (they must never fall through), then admin and broadcasts (filtered to admins), then the user
    flows, then the fallbacks for whatever is left."""
    return [
        payments.build_router(),
        admin.build_router(),
        broadcasts.build_router(),
        user.build_router(),
        user.build_fallback(),
    ]
