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
    passes it on), then admins' forwarded messages (a forwarded ``/start`` opens its
    sender's card), then the user flows, then the admins' (filtered to admins) and the
    other routers, then the fallbacks for whatever is left.

    The user flows come before the admins' and the other routers because no other router
    takes their commands or buttons: the most frequent updates (``/start``, the menu's
    buttons) then pass three routers fewer, each of which cost the dispatcher its
    propagation (about 50 of 440 us of the dispatch of a ``/start``)."""
    return [
        payments.build_router(),
        referrals.build_router(),
        admin.build_forwards_router(),
        user.build_router(),
        _admins(
            admin.build_router(),
            broadcasts.build_router(),
            moderation.build_router(),
            admin_actions.build_router(),
            admin_reports.build_router(),
            promo.build_admin_router(),
        ),
        promo.build_router(),
        limits.build_router(),
        user.build_fallback(),
    ]


def _admins(*children: Router) -> Router:
    """The admins' routers under one that lets only admins' messages and buttons in: any
    other user's update passes them all at one check instead of one per router (each
    router it enters costs the dispatcher its propagation). Each keeps its own filter."""
    router = Router(name="admins")
    router.message.filter(admin.IsAdmin())
    router.callback_query.filter(admin.IsAdmin())
    router.include_routers(*children)
    return router
