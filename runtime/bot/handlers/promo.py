"""Promo codes in the bot: ``/promo CODE`` and the menu's button for users; for admins
``/promo_new``, ``/promos``, ``/promo_info``, ``/promo_off`` and ``/discount``.

The dispatcher keeps no conversation state, so the button does what the admin's
broadcast does: it asks for the code as the command's argument. A code is normalised
(bounded length, A-Z 0-9 _ -) before anything reaches the database; a text that cannot be
one is answered without a call.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from runtime.promo import BadCommand, CodeInfo, UnknownPlan, parse_new_code, rules
from runtime.storage.discounts import Discount
from runtime.storage.promo import Activation, Kind, PromoCode

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, answer_quietly, show


def price_label(
    ctx: BotContext, lang: str, amount_minor: int, currency: str, discount: Discount | None
) -> str:
    """A list price as the user pays it: with the discount taken off and said."""
    pays = amount_minor
    if discount is not None:
        pays = ctx.svc.billing.discounted(amount_minor, currency, discount)
    text = ctx.money(pays, currency, lang=lang)
    if discount is not None and pays < amount_minor:
        return ctx.t(lang, "promo.discounted_price", price=text, percent=discount.percent)
    return text


# -- users -------------------------------------------------------------------------------


async def prompt(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    key = "promo.prompt" if ctx.settings.promo.enabled else "promo.unavailable"
    await show(query, bot, ctx.t(lang, key), kb.back_home(ctx, lang))


async def promo_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    assert message.from_user is not None
    args = (command.args or "").strip()
    if not ctx.settings.promo.enabled:
        text = ctx.t(lang, "promo.unavailable")
    elif not args:
        text = ctx.t(lang, "promo.prompt")
    elif (code := rules.normalize(args)) is None:
        text = ctx.t(lang, "promo.malformed")
    else:
        result = await call_trio(ctx.svc.promo.activate, message.from_user.id, code)
        text = activation_text(ctx, lang, code, result)
        if result.refusal is None:
            await message.answer(text, reply_markup=kb.to_subscription(ctx, lang))
            return
    await message.answer(text, reply_markup=kb.back_home(ctx, lang))


def activation_text(ctx: BotContext, lang: str, code: str, result: Activation) -> str:
    if result.refusal is not None:
        start = result.code.valid_from if result.code is not None else None
        return ctx.t(
            lang,
            f"promo.{result.refusal.value}",
            code=code,
            start=ctx.date(start, lang=lang) if start else "",
        )
    activated = result.activated
    assert activated is not None
    found = activated.code
    subscription = activated.subscription
    if found.kind is Kind.DAYS and subscription is not None:
        return ctx.t(
            lang,
            "promo.days_added",
            code=code,
            days=ctx.days(lang, int(found.amount or 0)),
            expires=ctx.date(subscription.expires_at, lang=lang),
        )
    if found.kind is Kind.PLAN and subscription is not None:
        plan = ctx.catalog.find(found.plan_id)
        return ctx.t(
            lang,
            "promo.plan_given",
            code=code,
            title=plan.title(lang) if plan else found.plan_id,
            expires=ctx.date(subscription.expires_at, lang=lang),
        )
    currency = ctx.settings.billing.balance_currency
    if found.kind is Kind.BALANCE:
        return ctx.t(
            lang,
            "promo.balance_added",
            code=code,
            amount=ctx.money(int(found.amount or 0), currency, lang=lang),
            balance=ctx.money(activated.balance_minor or 0, currency, lang=lang),
        )
    key = "promo.discount_set" if found.kind is Kind.DISCOUNT else "promo.next_discount_set"
    return ctx.t(lang, key, code=code, percent=activated.percent)


# -- admins ------------------------------------------------------------------------------


def _usage(ctx: BotContext, lang: str) -> str:
    return ctx.t(lang, "promo.admin_usage")


def code_line(ctx: BotContext, lang: str, code: PromoCode) -> str:
    currency = ctx.settings.billing.balance_currency
    amount = int(code.amount or 0)
    what = {
        Kind.DAYS: lambda: ctx.t(lang, "promo.admin_what_days", days=ctx.days(lang, amount)),
        Kind.BALANCE: lambda: ctx.t(
            lang, "promo.admin_what_balance", amount=ctx.money(amount, currency, lang=lang)
        ),
        Kind.PLAN: lambda: ctx.t(lang, "promo.admin_what_plan", plan=code.plan_id),
        Kind.DISCOUNT: lambda: ctx.t(lang, "promo.admin_what_discount", percent=amount),
        Kind.NEXT_DISCOUNT: lambda: ctx.t(lang, "promo.admin_what_next_discount", percent=amount),
    }[code.kind]()
    limit = (
        str(code.max_activations)
        if code.max_activations is not None
        else ctx.t(lang, "promo.admin_unlimited")
    )
    return ctx.t(
        lang,
        "promo.admin_line",
        code=code.code,
        what=what,
        used=code.activations,
        limit=limit,
        state=_state(ctx, lang, code),
    )


def _state(ctx: BotContext, lang: str, code: PromoCode) -> str:
    now = datetime.now(UTC)
    if code.disabled_at is not None:
        return ctx.t(lang, "promo.admin_state_disabled")
    if code.valid_until is not None and code.valid_until <= now:
        return ctx.t(lang, "promo.admin_state_expired")
    if code.valid_from is not None and code.valid_from > now:
        return ctx.t(lang, "promo.admin_state_pending", start=ctx.date(code.valid_from, lang=lang))
    return ctx.t(lang, "promo.admin_state_active")


async def new_code_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    assert message.from_user is not None
    try:
        new = parse_new_code(command.args or "")
    except BadCommand as exc:
        reason = str(exc) if command.args else ""
        text = ctx.t(lang, "promo.admin_bad", reason=reason, usage=_usage(ctx, lang)).strip()
        await message.answer(text, reply_markup=kb.admin_back(ctx, lang))
        return
    try:
        created = await call_trio(ctx.svc.promo.create, new, by=message.from_user.id)
    except UnknownPlan:
        text = ctx.t(lang, "promo.admin_plan_unknown", plan=new.plan_id)
    else:
        if created is None:
            text = ctx.t(lang, "promo.admin_exists", code=new.code)
        else:
            text = ctx.t(lang, "promo.admin_created", line=code_line(ctx, lang, created))
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


async def list_command(message: Message, ctx: BotContext, lang: str) -> None:
    codes = await call_trio(ctx.svc.promo.newest)
    if not codes:
        text = ctx.t(lang, "promo.admin_none", usage=_usage(ctx, lang))
        await message.answer(text, reply_markup=kb.admin_back(ctx, lang))
        return
    lines = [ctx.t(lang, "promo.admin_list_header")]
    lines += [code_line(ctx, lang, code) for code in codes]
    rows = [
        [
            InlineKeyboardButton(
                text=ctx.t(lang, "promo.admin_info_button", code=code.code),
                callback_data=kb.PromoCb(action="info", code=code.code).pack(),
            )
        ]
        for code in codes[:10]
    ]
    rows.append([kb.admin_back_button(ctx, lang)])
    await message.answer("\n".join(lines), reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


def info_text(ctx: BotContext, lang: str, info: CodeInfo) -> str:
    code = info.code
    yes_no = {True: ctx.t(lang, "admin.yes"), False: ctx.t(lang, "admin.no")}
    any_time = ctx.t(lang, "promo.admin_any_time")
    conditions = ctx.t(
        lang,
        "promo.admin_conditions",
        start=ctx.date(code.valid_from, lang=lang) if code.valid_from else any_time,
        until=ctx.date(code.valid_until, lang=lang) if code.valid_until else any_time,
        new_only=yes_no[code.new_users_only],
        no_sub=yes_no[code.without_subscription],
    )
    lines = [
        ctx.t(
            lang,
            "promo.admin_info",
            line=code_line(ctx, lang, code),
            conditions=conditions,
            by=code.created_by,
        )
    ]
    lines += [
        ctx.t(
            lang,
            "promo.admin_activation",
            user=row.user_id,
            at=ctx.date(row.activated_at, lang=lang),
        )
        for row in info.activations
    ]
    if not info.activations:
        lines.append(ctx.t(lang, "promo.admin_no_activations"))
    return "\n".join(lines)


def info_markup(ctx: BotContext, lang: str, code: PromoCode) -> InlineKeyboardMarkup:
    rows = []
    if code.disabled_at is None:
        rows.append(
            [
                InlineKeyboardButton(
                    text=ctx.t(lang, "promo.admin_off_button"),
                    callback_data=kb.PromoCb(action="off", code=code.code).pack(),
                )
            ]
        )
    rows.append([kb.admin_back_button(ctx, lang)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def _info(ctx: BotContext, lang: str, raw: str) -> tuple[str, InlineKeyboardMarkup]:
    code = rules.normalize(raw)
    info = await call_trio(ctx.svc.promo.info, code) if code is not None else None
    if info is None:
        text = ctx.t(lang, "promo.admin_unknown", code=(code or raw.strip())[:40])
        return text, kb.admin_back(ctx, lang)
    return info_text(ctx, lang, info), info_markup(ctx, lang, info.code)


async def _disable(ctx: BotContext, lang: str, raw: str, by: int) -> str:
    code = rules.normalize(raw)
    found = await call_trio(ctx.svc.promo.disable, code, by=by) if code is not None else None
    if found is None:
        return ctx.t(lang, "promo.admin_unknown", code=(code or raw.strip())[:40])
    return ctx.t(lang, "promo.admin_disabled", code=found.code)


async def info_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    if not command.args:
        await message.answer(_usage(ctx, lang), reply_markup=kb.admin_back(ctx, lang))
        return
    text, markup = await _info(ctx, lang, command.args)
    await message.answer(text, reply_markup=markup)


async def off_command(message: Message, command: CommandObject, ctx: BotContext, lang: str) -> None:
    assert message.from_user is not None
    if not command.args:
        await message.answer(_usage(ctx, lang), reply_markup=kb.admin_back(ctx, lang))
        return
    text = await _disable(ctx, lang, command.args, message.from_user.id)
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


async def code_button(
    query: CallbackQuery, callback_data: kb.PromoCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    if callback_data.action == "info":
        text, markup = await _info(ctx, lang, callback_data.code)
        await show(query, bot, text, markup)
    elif callback_data.action == "off":
        text = await _disable(ctx, lang, callback_data.code, query.from_user.id)
        await show(query, bot, text, kb.admin_back(ctx, lang))
    else:
        await answer_quietly(query)


_DISCOUNT = re.compile(r"^(\S{1,40})\s+(\d{1,2})$")


async def discount_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    assert message.from_user is not None
    match = _DISCOUNT.match((command.args or "").strip())
    if match is None:
        text = ctx.t(lang, "promo.discount_usage")
        await message.answer(text, reply_markup=kb.admin_back(ctx, lang))
        return
    who, percent = match[1], int(match[2])
    user_id = await call_trio(ctx.svc.promo.set_discount, who, percent, by=message.from_user.id)
    if user_id is None:
        text = ctx.t(lang, "promo.discount_user_unknown", user=who)
    elif percent == 0:
        text = ctx.t(lang, "promo.discount_removed", user=user_id)
    else:
        text = ctx.t(lang, "promo.discount_done", user=user_id, percent=percent)
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


def build_router() -> Router:
    """The users' part: ``/promo`` and the menu's button, in private chats."""
    router = Router(name="promo")
    router.message.filter(F.chat.type == "private")
    router.message.register(promo_command, Command("promo"))
    router.callback_query.register(prompt, kb.Nav.filter(F.to == "promo"))
    return router


def build_admin_router() -> Router:
    """The admins' part; everyone else falls through to the unknown-command answer and
    the stale-button one."""
    router = Router(name="promo_admin")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(new_code_command, Command("promo_new"))
    router.message.register(list_command, Command("promos"))
    router.message.register(info_command, Command("promo_info"))
    router.message.register(off_command, Command("promo_off"))
    router.message.register(discount_command, Command("discount"))
    router.callback_query.register(code_button, kb.PromoCb.filter())
    return router
