"""``/report [day|week|month]`` for admins: the shop over the last day, 7 or 30 days
(``runtime.storage.reports``), with buttons to switch the period."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from runtime.storage.reports import PERIODS, Report

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, answer_quietly, show


def report_text(ctx: BotContext, lang: str, report: Report) -> str:
    currency = ctx.settings.billing.balance_currency
    lines = [
        ctx.t(lang, f"report.title_{report.period}"),
        ctx.t(
            lang,
            "report.people",
            new_users=report.new_users,
            trials=report.trials,
            first_purchases=report.first_purchases,
            from_trial=report.from_trial,
            conversion=_percent(report.from_trial, report.trials),
        ),
        ctx.t(
            lang,
            "report.retention",
            active=report.active_paid,
            churned=report.churned,
            refunds=report.refunds,
        ),
        "",
        ctx.t(lang, "report.income_header"),
    ]
    for income in report.income:
        lines.append(
            ctx.t(
                lang,
                "report.income_line",
                provider=ctx.provider_label(lang, income.provider),
                amount=ctx.money(income.amount_minor, income.currency, lang=lang),
                payments=income.payments,
            )
        )
    if not report.income:
        lines.append(ctx.t(lang, "report.none"))
    lines += ["", ctx.t(lang, "report.grants_header")]
    for grant in report.grants:
        lines.append(
            ctx.t(
                lang,
                "report.grants_line",
                kind=_kind(ctx, lang, grant.kind),
                count=grant.count,
                users=grant.users,
                days=grant.days,
                balance=ctx.money(grant.balance_minor, currency, lang=lang),
            )
        )
    if not report.grants:
        lines.append(ctx.t(lang, "report.none"))
    return "\n".join(lines)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _kind(ctx: BotContext, lang: str, kind: str) -> str:
    key = f"report.kind_{kind}"
    return ctx.t(lang, key) if ctx.translator.has(key) else kind


def _markup(ctx: BotContext, lang: str, period: str) -> InlineKeyboardMarkup:
    row = [
        InlineKeyboardButton(
            text=("• " if name == period else "") + ctx.t(lang, f"report.button_{name}"),
            callback_data=kb.AdminCb(action="report", arg=name).pack(),
        )
        for name in PERIODS
    ]
    return InlineKeyboardMarkup(inline_keyboard=[row, [kb.admin_back_button(ctx, lang)]])


async def report_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    period = (command.args or "week").strip().lower()
    if period not in PERIODS:
        await message.answer(ctx.t(lang, "report.usage"), reply_markup=kb.admin_back(ctx, lang))
        return
    report = await call_trio(ctx.svc.report, period)
    await message.answer(report_text(ctx, lang, report), reply_markup=_markup(ctx, lang, period))


async def report_screen(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    if callback_data.arg not in PERIODS:
        await answer_quietly(query)
        return
    report = await call_trio(ctx.svc.report, callback_data.arg)
    await show(query, bot, report_text(ctx, lang, report), _markup(ctx, lang, callback_data.arg))


def build_router() -> Router:
    router = Router(name="admin_reports")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(report_command, Command("report"))
    router.callback_query.register(report_screen, kb.AdminCb.filter(F.action == "report"))
    return router
