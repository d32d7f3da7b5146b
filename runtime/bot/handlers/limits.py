"""Plans' limits in the bot: the traffic line of "My subscription", extra traffic for the
current period, and the devices of a subscription (where its panel keeps them).

Each handler parses, makes one trio call (``ctx.svc.traffic``), and replies. Callback
data carries a subscription id and a package id: both are checked against the user's own
running subscriptions and the configured packages before anything happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import trio
from aiogram import Bot, Router
from aiogram.types import CallbackQuery, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from runtime.failures import DependencyError, DomainError
from runtime.logs import get_logger, log_failure
from runtime.plugin_api.limits import Device

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import answer_quietly, show
from ._limits_view import DevicesCb, DevicesResetCb, TrafficBuyCb, TrafficCb, back_button, button
from .user import checkout_in_chat

_log = get_logger("bot")

LABEL_LENGTH = 60
"""A device's label as the panel reports it, cut to this many characters."""
SHOWN_DEVICES = 20
PANEL_FAILURES = (DependencyError, trio.TooSlowError)
"""What a panel's device call may fail with: the user is asked to try again later."""


# -- extra traffic -----------------------------------------------------------------------


async def packages(
    query: CallbackQuery, callback_data: TrafficCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    service = ctx.svc.traffic
    subscription = await call_trio(service.running_of, query.from_user.id, callback_data.sub)
    if subscription is None:
        await show(query, bot, ctx.t(lang, "limits.gone"), kb.to_subscription(ctx, lang))
        return
    if service.base_limit(subscription) is None:
        await show(query, bot, ctx.t(lang, "limits.not_limited"), kb.to_subscription(ctx, lang))
        return
    builder = InlineKeyboardBuilder()
    for package in service.packages():
        providers = service.providers_for(package)
        if not providers:
            continue
        ((currency, amount),) = package.prices[providers[0]].items()
        label = ctx.t(
            lang,
            "limits.package_item",
            gb=package.gb,
            price=ctx.money(amount, currency, lang=lang),
        )
        builder.row(button(label, TrafficBuyCb(sub=subscription.id, pkg=package.id)))
    if not builder.buttons:
        await show(query, bot, ctx.t(lang, "limits.packages_none"), kb.to_subscription(ctx, lang))
        return
    builder.row(back_button(ctx, lang))
    await show(query, bot, ctx.t(lang, "limits.packages_title"), builder.as_markup())


async def buy_package(
    query: CallbackQuery, callback_data: TrafficBuyCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    service = ctx.svc.traffic
    try:
        package = service.package(callback_data.pkg)
    except DomainError:
        await show(query, bot, ctx.t(lang, "limits.packages_none"), kb.to_subscription(ctx, lang))
        return
    providers = service.providers_for(package)
    provider = callback_data.provider or (providers[0] if len(providers) == 1 else "")
    if not provider:
        builder = InlineKeyboardBuilder()
        for name in providers:
            ((currency, amount),) = package.prices[name].items()
            label = ctx.t(
                lang,
                "plans.pay_with",
                provider=ctx.provider_label(lang, name),
                price=ctx.money(amount, currency, lang=lang),
            )
            data = TrafficBuyCb(sub=callback_data.sub, pkg=package.id, provider=name)
            builder.row(button(label, data))
        builder.row(back_button(ctx, lang))
        text = ctx.t(lang, "limits.package_providers", gb=package.gb)
        await show(query, bot, text, builder.as_markup())
        return
    await answer_quietly(query)
    title = ctx.t(lang, "limits.package_invoice_title", gb=package.gb)
    user_id = query.from_user.id
    await checkout_in_chat(
        bot,
        ctx,
        lang,
        user_id,
        lambda: call_trio(
            service.buy_for, user_id, callback_data.sub, package.id, provider, title=title
        ),
        title=title,
        provider=provider,
    )


# -- devices -----------------------------------------------------------------------------


def devices_text(ctx: BotContext, lang: str, found: Sequence[Device], limit: int | None) -> str:
    if not found:
        return ctx.t(lang, "limits.devices_none")
    if limit:
        head = ctx.t(lang, "limits.devices_title", count=len(found), limit=limit)
    else:
        head = ctx.t(lang, "limits.devices_title_unlimited", count=len(found))
    lines = [
        ctx.t(lang, "limits.device_item", number=number, label=_printable(device.label))
        for number, device in enumerate(found[:SHOWN_DEVICES], start=1)
    ]
    return "\n".join([head, *lines])


def _printable(label: str) -> str:
    """A panel's label as a line: no line breaks, bounded."""
    flat = " ".join(label.split())
    return flat[:LABEL_LENGTH] or "?"


async def _say(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str, key: str) -> None:
    await show(query, bot, ctx.t(lang, key), kb.to_subscription(ctx, lang))


async def devices(
    query: CallbackQuery, callback_data: DevicesCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    service = ctx.svc.traffic
    try:
        found = await call_trio(service.devices_of, query.from_user.id, callback_data.sub)
    except PANEL_FAILURES as exc:
        log_failure(_log, exc, operation="devices.list")
        await _say(query, bot, ctx, lang, "limits.devices_unavailable")
        return
    if found is None:
        await _say(query, bot, ctx, lang, "limits.devices_unsupported")
        return
    subscription, listed = found
    terms = ctx.svc.access.terms_of(subscription)
    text = devices_text(ctx, lang, listed, terms.device_limit if terms else None)
    rows = [[back_button(ctx, lang)]]
    if listed:
        reset = button(ctx.t(lang, "limits.reset_button"), DevicesResetCb(sub=subscription.id))
        rows.insert(0, [reset])
    await show(query, bot, text, InlineKeyboardMarkup(inline_keyboard=rows))


async def reset_devices(
    query: CallbackQuery, callback_data: DevicesResetCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    service = ctx.svc.traffic
    try:
        result = await call_trio(service.reset_devices_of, query.from_user.id, callback_data.sub)
    except PANEL_FAILURES as exc:
        log_failure(_log, exc, operation="devices.reset")
        await _say(query, bot, ctx, lang, "limits.devices_unavailable")
        return
    if result is None:
        text = ctx.t(lang, "limits.devices_unsupported")
    elif result.done:
        text = ctx.t(lang, "limits.reset_done", count=result.deleted)
    else:
        when = result.next_at or datetime.now(UTC)
        text = ctx.t(lang, "limits.reset_wait", when=ctx.date(when, lang=lang))
    await show(query, bot, text, kb.to_subscription(ctx, lang))


def build_router() -> Router:
    router = Router(name="limits")
    router.callback_query.register(packages, TrafficCb.filter())
    router.callback_query.register(buy_package, TrafficBuyCb.filter())
    router.callback_query.register(devices, DevicesCb.filter())
    router.callback_query.register(reset_devices, DevicesResetCb.filter())
    return router
