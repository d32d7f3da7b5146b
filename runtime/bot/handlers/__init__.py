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
    """Fresh routers (aiogram attaches a router to one dispatcher only), in the order the
    dispatcher tries them: admins' forwarded messages (a forwarded ``/start`` opens its
    sender's card), the user flows, referrals, payments, the admins' (filtered to admins)
    and the other routers, then the fallbacks for whatever is left.

    No router takes another's commands, buttons or messages: the order only decides how
    many an update passes, each of which costs the dispatcher its propagation. So the
    most frequent updates (``/start``, the menu's buttons) find the user flows almost
    first: a ``/start`` passes two routers instead of six (about 130 of its 440 us of
    dispatch). Payments come before the fallbacks, which must never take them; no router
    before them takes a message without text."""
    return [
        admin.build_forwards_router(),
        user.build_router(),
        referrals.build_router(),
        payments.build_router(),
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
