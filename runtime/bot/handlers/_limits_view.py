"""What "My subscription" shows of a plan's limits (the traffic line, the buttons to
extra traffic and devices) and the callback data of those buttons; the screens behind
them are in ``limits``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from runtime.storage.subscriptions import Subscription
from runtime.traffic import GIB, TrafficStatus

from .. import keyboards as kb
from .._context import BotContext


class TrafficCb(CallbackData, prefix="ltr"):
    """The traffic packages for subscription ``sub``."""

    sub: int


class TrafficBuyCb(CallbackData, prefix="ltb"):
    sub: int
    pkg: str
    provider: str = ""


class DevicesCb(CallbackData, prefix="ldev"):
    sub: int


class DevicesResetCb(CallbackData, prefix="ldrs"):
    sub: int


# -- "My subscription" -------------------------------------------------------------------


def gigabytes(value: int) -> str:
    return f"{value / GIB:.1f}"


def traffic_line(ctx: BotContext, lang: str, status: TrafficStatus | None) -> str | None:
    """The subscription's traffic as a line of text; None when there is nothing to say."""
    if status is None:
        return None
    if status.limit_bytes is None:
        if status.used_bytes is None:
            return None
        return ctx.t(lang, "limits.traffic_used_unlimited", used=gigabytes(status.used_bytes))
    if status.used_bytes is None:
        return ctx.t(lang, "limits.traffic_unknown", limit=gigabytes(status.limit_bytes))
    return ctx.t(
        lang,
        "limits.traffic_used",
        used=gigabytes(status.used_bytes),
        limit=gigabytes(status.limit_bytes),
        left=gigabytes(status.remaining_bytes or 0),
    )


def limit_buttons(
    ctx: BotContext,
    lang: str,
    active: Sequence[Subscription],
    traffic: Mapping[int, TrafficStatus],
) -> list[list[InlineKeyboardButton]]:
    """The rows "My subscription" gains: extra traffic for limited subscriptions (when
    packages are on sale), devices where the panel keeps them."""
    try:
        service = ctx.svc.traffic
    except RuntimeError:  # not started yet
        return []
    rows = []
    several = len(active) > 1
    packages = bool(service.packages())
    for subscription in active:
        suffix = f" #{subscription.id}" if several else ""
        row = []
        status = traffic.get(subscription.id)
        if packages and status is not None and status.limit_bytes is not None:
            row.append(
                button(
                    ctx.t(lang, "limits.traffic_button") + suffix, TrafficCb(sub=subscription.id)
                )
            )
        if service.device_manager(subscription) is not None:
            row.append(
                button(
                    ctx.t(lang, "limits.devices_button") + suffix, DevicesCb(sub=subscription.id)
                )
            )
        if row:
            rows.append(row)
    return rows


def with_limit_buttons(
    markup: InlineKeyboardMarkup, rows: list[list[InlineKeyboardButton]]
) -> InlineKeyboardMarkup:
    """``markup`` with ``rows`` before its last row (the way home)."""
    if not rows:
        return markup
    keyboard = [list(row) for row in markup.inline_keyboard]
    return InlineKeyboardMarkup(inline_keyboard=[*keyboard[:-1], *rows, *keyboard[-1:]])


def button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def back_button(ctx: BotContext, lang: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text=ctx.t(lang, "limits.back_button"), callback_data=kb.Nav(to="sub").pack()
    )
