"""Referral and acquisition links in the bot.

- a user's first ``/start`` is recorded with its source (``ref_<code>``, ``ad_<code>``;
  anything else is no source) by the handler boundary, before the usual handlers answer
  it: the menu, or the screen a deep link opens. A payload that is malformed, unknown,
  too long, or the user's own code changes nothing the user can see;
- ``/referrals`` and the menu's Referrals button: the user's link, how many they invited,
  how many of those paid, and what they earned;
- for admins: ``/refstats`` (and the admin menu's button): invited users, paying invited
  users, rewards by kind, top referrers; ``/adlink new <name>``, ``/adlink list``,
  ``/adlink <code>``: tracked start links and their figures by day.
"""

from __future__ import annotations

import re

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, Update

from runtime.referrals import ad_link, referral_link
from runtime.storage import referrals as store

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, show

_CODE = re.compile(r"[a-z0-9]{6,16}")
MAX_NAME = store.MAX_NAME
TOP_SHOWN = 10
DAYS_SHOWN = 14


async def _bot_username(bot: Bot) -> str | None:
    """aiogram asks Telegram once per bot and keeps the answer."""
    return (await bot.me()).username


def _link(username: str | None, code: str, *, ad: bool = False) -> str:
    if username is None:
        return f"/start {'ad_' if ad else 'ref_'}{code}"
    return ad_link(username, code) if ad else referral_link(username, code)


# -- the user's screen ---------------------------------------------------------------------


def rewards_text(ctx: BotContext, lang: str) -> str:
    config = ctx.settings.referrals
    currency = ctx.settings.billing.balance_currency
    lines = []
    for number, level in enumerate(config.levels, 1):
        if level.reward == "days":
            what = ctx.days(lang, level.amount)
        elif level.reward == "percent":
            what = ctx.t(lang, "referrals.reward_percent", percent=level.amount)
        else:
            what = ctx.money(level.amount, currency, lang=lang)
        which = "referrals.on_first" if level.payments == "first" else "referrals.on_every"
        lines.append(
            ctx.t(lang, f"referrals.level_{number}", reward=what, payments=ctx.t(lang, which))
        )
    hours = config.invited_trial_hours
    if hours is not None and hours > ctx.settings.trial.duration_hours:
        lines.append(ctx.t(lang, "referrals.invited_trial", hours=hours))
    return "\n".join(lines)


def earned_text(ctx: BotContext, lang: str, summary: store.Summary) -> str:
    parts = []
    if summary.earned_minor:
        parts.append(
            ctx.money(summary.earned_minor, ctx.settings.billing.balance_currency, lang=lang)
        )
    if summary.earned_days:
        parts.append(ctx.days(lang, summary.earned_days))
    return ", ".join(parts) if parts else ctx.t(lang, "referrals.earned_none")


async def referrals_screen(
    event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str
) -> None:
    user = event.from_user
    assert user is not None
    if not ctx.settings.referrals.enabled:
        text = ctx.t(lang, "referrals.disabled")
    else:
        code, summary = await call_trio(ctx.svc.referral_summary, user.id)
        text = ctx.t(
            lang,
            "referrals.screen",
            link=_link(await _bot_username(bot), code),
            invited=summary.invited,
            paying=summary.paying,
            earned=earned_text(ctx, lang, summary),
            rewards=rewards_text(ctx, lang),
        )
    if isinstance(event, CallbackQuery):
        await show(event, bot, text, kb.back_home(ctx, lang))
    else:
        await event.answer(text, reply_markup=kb.back_home(ctx, lang))


# -- admins: referral statistics -----------------------------------------------------------


def statistics_text(ctx: BotContext, lang: str, stats: store.Statistics) -> str:
    currency = ctx.settings.billing.balance_currency
    lines = [ctx.t(lang, "referrals.admin_stats", invited=stats.invited, paying=stats.paying)]
    for kind in stats.by_kind:
        if kind.days:
            total = ctx.days(lang, abs(kind.days))
        else:
            total = ctx.money(abs(kind.balance_minor), currency, lang=lang)
        name = ctx.t(lang, "referrals.kind_" + kind.action.removeprefix("referral."))
        lines.append(ctx.t(lang, "referrals.admin_kind", kind=name, count=kind.count, total=total))
    lines += ["", ctx.t(lang, "referrals.admin_top")]
    for rank, top in enumerate(stats.top, 1):
        who = f"@{top.username}" if top.username else str(top.user_id)
        lines.append(
            ctx.t(
                lang,
                "referrals.admin_top_line",
                rank=rank,
                who=who,
                user_id=top.user_id,
                invited=top.invited,
                paying=top.paying,
            )
        )
    if not stats.top:
        lines.append(ctx.t(lang, "referrals.admin_top_none"))
    return "\n".join(lines)


async def refstats_command(message: Message, ctx: BotContext, lang: str) -> None:
    stats = await call_trio(ctx.svc.referral_statistics)
    await message.answer(
        statistics_text(ctx, lang, stats), reply_markup=kb.admin_refresh(ctx, lang, "refstats")
    )


async def refstats_screen(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    stats = await call_trio(ctx.svc.referral_statistics)
    await show(
        query, bot, statistics_text(ctx, lang, stats), kb.admin_refresh(ctx, lang, "refstats")
    )


# -- admins: acquisition links -------------------------------------------------------------


def _revenue(ctx: BotContext, lang: str, revenue: tuple[store.Revenue, ...]) -> str:
    if not revenue:
        return ctx.t(lang, "referrals.revenue_none")
    return ", ".join(ctx.money(r.amount_minor, r.currency, lang=lang) for r in revenue)


def report_text(
    ctx: BotContext, lang: str, report: store.AdLinkReport, username: str | None
) -> str:
    totals = report.totals
    lines = [
        ctx.t(
            lang,
            "referrals.adlink_report",
            name=totals.link.name,
            code=totals.link.code,
            link=_link(username, totals.link.code, ad=True),
            started=totals.started,
            trials=totals.trials,
            paying=totals.paying,
            revenue=_revenue(ctx, lang, report.revenue),
        )
    ]
    if report.days:
        lines += ["", ctx.t(lang, "referrals.adlink_days")]
    for day in report.days:
        lines.append(
            ctx.t(
                lang,
                "referrals.adlink_day",
                day=day.day.isoformat(),
                started=day.started,
                trials=day.trials,
                payments=day.payments,
                revenue=_revenue(ctx, lang, day.revenue),
            )
        )
    return "\n".join(lines)


def list_text(ctx: BotContext, lang: str, links: list[store.AdLinkTotals]) -> str:
    if not links:
        return ctx.t(lang, "referrals.adlink_none")
    lines = [ctx.t(lang, "referrals.adlink_list")]
    for item in links:
        lines.append(
            ctx.t(
                lang,
                "referrals.adlink_line",
                name=item.link.name,
                code=item.link.code,
                started=item.started,
                trials=item.trials,
                paying=item.paying,
            )
        )
    return "\n".join(lines)


async def adlink_command(
    message: Message,
    command: CommandObject,
    event_update: Update,
    bot: Bot,
    ctx: BotContext,
    lang: str,
) -> None:
    words = (command.args or "").strip().split(maxsplit=1)
    first = words[0].lower() if words else ""
    back = kb.admin_back(ctx, lang)
    name = words[1].strip() if len(words) == 2 else ""
    if first == "new" and 0 < len(name) <= MAX_NAME and name.isprintable():
        assert message.from_user is not None
        link = await call_trio(
            ctx.svc.create_ad_link,
            name,
            by=message.from_user.id,
            operation_key=f"update:{event_update.update_id}",
        )
        text = ctx.t(
            lang,
            "referrals.adlink_created",
            name=link.name,
            link=_link(await _bot_username(bot), link.code, ad=True),
        )
    elif first == "list" and len(words) == 1:
        text = list_text(ctx, lang, await call_trio(ctx.svc.ad_links))
    elif len(words) == 1 and _CODE.fullmatch(first):
        report = await call_trio(ctx.svc.ad_link_report, first)
        if report is None:
            text = ctx.t(lang, "referrals.adlink_unknown")
        else:
            text = report_text(ctx, lang, report, await _bot_username(bot))
    else:
        text = ctx.t(lang, "referrals.adlink_usage", max=MAX_NAME)
    await message.answer(text, reply_markup=back)


def build_router() -> Router:
    """The referral screens and admins' link reports. A user's first start and its source
    are recorded with the contact, by the handler boundary."""
    router = Router(name="referrals")
    router.message.filter(F.chat.type == "private")
    router.message.register(referrals_screen, Command("referrals"))
    router.callback_query.register(referrals_screen, kb.Nav.filter(F.to == "ref"))
    router.message.register(refstats_command, Command("refstats"), IsAdmin())
    router.callback_query.register(
        refstats_screen, kb.AdminCb.filter(F.action == "refstats"), IsAdmin()
    )
    router.message.register(adlink_command, Command("adlink"), IsAdmin())
    return router
