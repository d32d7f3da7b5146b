"""The bot's aiogram routers, in the order the dispatcher tries them."""

from __future__ import annotations

from aiogram import F, Router

from . import limits, payments, promo, referrals, user
from ._common import IsAdmin
from ._lazy import LazyRouter


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
        _admin_forwards(),
        user.build_router(),
        referrals.build_router(),
        payments.build_router(),
        _admins(),
        promo.build_router(),
        limits.build_router(),
        user.build_fallback(),
    ]


def _admin_forwards() -> Router:
    """An admin's forwarded message; the handler's module is imported on the first one."""
    router = LazyRouter(name="admin_forwards_lazy", build=_build_forwards, update_types=["message"])
    router.message.filter(F.forward_origin, IsAdmin())
    return router


def _build_forwards() -> list[Router]:
    from . import admin

    return [admin.build_forwards_router()]


def _admins() -> Router:
    """The admins' routers under one that lets only admins' messages and buttons in: any
    other user's update passes them all at one check instead of one per router (each
    router it enters costs the dispatcher its propagation). Each keeps its own filter.

    Their modules are imported on an admin's first update (``LazyRouter``): an idle
    service does not hold them."""
    router = LazyRouter(name="admins", build=_build_admins)
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    return router


def _build_admins() -> list[Router]:
    from . import admin, admin_actions, admin_reports, broadcasts, moderation

    return [
        admin.build_router(),
        broadcasts.build_router(),
        moderation.build_router(),
        admin_actions.build_router(),
        admin_reports.build_router(),
        promo.build_admin_router(),
    ]
