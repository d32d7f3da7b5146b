"""Admin commands, for the Telegram ids in ``telegram.admin_chat_ids`` only.

Everyone else never reaches these handlers: the router's filter lets their messages fall
through to the unknown-command answer, and their button presses to the stale-button one.

- ``/admin``: the admin menu; ``/stats``; ``/status`` (the supervisor's actor table);
- ``/user <id|@username|name>`` (or a message of theirs forwarded to the bot): a user with
  their subscriptions and payments, with buttons to grant or take back days, to refund a
  payment and to read their history;
- ``/grant <id|@username> <days>`` (negative days take days back);
- ``/refund <payment id>``;
- broadcasts: see ``broadcasts``;
- ``/ban``, ``/unban``, ``/credit``, ``/revoke``, ``/history``: see ``moderation``;
- ``/failed``: the updates the bot gave up on (a bug in their handling), newest first;
  ``/replay <update id>`` or ``/replay all`` processes them again once the cause is fixed.

Operations that change something use the update id as their idempotency key, so a
handler that runs again after a crash does not apply them twice.
"""

from __future__ import annotations

import re

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    MessageOriginUser,
    Update,
)

from runtime.failures import DomainError
from runtime.plugin_api.payments import RefundNotSupported
from runtime.storage import admin as store
from runtime.storage import inbox
from runtime.storage.payments import Refunded

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, answer_quietly, show


def _operation_key(event_update: Update) -> str:
    return f"update:{event_update.update_id}"


# -- menu, statistics, status ------------------------------------------------------------


async def admin_menu(message: Message, ctx: BotContext, lang: str) -> None:
    await message.answer(ctx.t(lang, "admin.menu"), reply_markup=kb.admin_menu(ctx, lang))


async def admin_menu_screen(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    await show(query, bot, ctx.t(lang, "admin.menu"), kb.admin_menu(ctx, lang))


async def admin_help(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    text = ctx.t(lang, "admin.help") + "\n" + ctx.t(lang, "promo.admin_help")
    await show(query, bot, text, kb.admin_back(ctx, lang))


def stats_text(ctx: BotContext, lang: str, stats: store.Statistics) -> str:
    lines = [
        ctx.t(
            lang,
            "admin.stats",
            users=stats.users,
            new_today=stats.new_today,
            new_week=stats.new_week,
            blocked=stats.blocked,
            active_paid=stats.active_paid,
            active_trials=stats.active_trials,
            trials_started=stats.trials_started,
            refunds=stats.refunds_month,
        ),
        "",
        ctx.t(lang, "admin.revenue_header"),
    ]
    for revenue in stats.revenue:
        lines.append(
            ctx.t(
                lang,
                "admin.revenue_line",
                provider=ctx.provider_label(lang, revenue.provider),
                today=ctx.money(revenue.today_minor, revenue.currency, lang=lang),
                week=ctx.money(revenue.week_minor, revenue.currency, lang=lang),
                month=ctx.money(revenue.month_minor, revenue.currency, lang=lang),
                count=revenue.month_count,
            )
        )
    if not stats.revenue:
        lines.append(ctx.t(lang, "admin.revenue_none"))
    return "\n".join(lines)


async def stats_command(message: Message, ctx: BotContext, lang: str) -> None:
    stats = await call_trio(ctx.svc.statistics)
    await message.answer(
        stats_text(ctx, lang, stats), reply_markup=kb.admin_refresh(ctx, lang, "stats")
    )


async def stats_screen(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    stats = await call_trio(ctx.svc.statistics)
    await show(query, bot, stats_text(ctx, lang, stats), kb.admin_refresh(ctx, lang, "stats"))


def status_text(ctx: BotContext, lang: str) -> str:
    table = ctx.svc.actor_table
    if table is None:
        return ctx.t(lang, "admin.status_unavailable")
    document = table()
    yes_no = {True: ctx.t(lang, "admin.yes"), False: ctx.t(lang, "admin.no")}
    lines = [
        ctx.t(
            lang,
            "admin.status_header",
            state=document.get("state", "?"),
            ready=yes_no[bool(document.get("ready"))],
        )
    ]
    for actor in document.get("actors", []):
        line = ctx.t(
            lang,
            "admin.status_actor",
            name=actor.get("name", "?"),
            state=actor.get("state", "?"),
            restarts=actor.get("restarts", 0),
        )
        if actor.get("degraded"):
            line += "\n  " + ctx.t(lang, "admin.status_degraded", reason=actor["degraded"])
        failure = actor.get("last_failure")
        if failure:
            message = f"{failure.get('type')}: {failure.get('message')}"[:120]
            line += "\n  " + ctx.t(lang, "admin.status_failure", failure=message)
        lines.append(line)
    return "\n".join(lines)


async def status_command(message: Message, ctx: BotContext, lang: str) -> None:
    await message.answer(status_text(ctx, lang), reply_markup=kb.admin_refresh(ctx, lang, "status"))


async def status_screen(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    await show(query, bot, status_text(ctx, lang), kb.admin_refresh(ctx, lang, "status"))


# -- users -------------------------------------------------------------------------------


def user_text(ctx: BotContext, lang: str, card: store.UserCard) -> str:
    user = card.user
    yes_no = {True: ctx.t(lang, "admin.yes"), False: ctx.t(lang, "admin.no")}
    lines = [
        ctx.t(
            lang,
            "admin.user_card",
            id=user.telegram_id,
            username=f"@{user.username}" if user.username else "-",
            lang_code=user.language,
            balance=ctx.money(user.balance_minor, ctx.settings.billing.balance_currency, lang=lang),
            auto_renew=yes_no[user.auto_renew],
            trial=ctx.date(user.trial_used_at, lang=lang) if user.trial_used_at else yes_no[False],
            blocked=ctx.date(user.blocked_bot_at, lang=lang)
            if user.blocked_bot_at
            else yes_no[False],
        ),
        "",
        ctx.t(lang, "admin.subscriptions_header"),
    ]
    for sub in card.subscriptions:
        lines.append(
            ctx.t(
                lang,
                "admin.subscription_line",
                id=sub.id,
                plan=sub.plan_id,
                kind=sub.kind,
                status=sub.status,
                activation=sub.activation_status,
                expires=ctx.date(sub.expires_at, lang=lang),
            )
        )
    if not card.subscriptions:
        lines.append(ctx.t(lang, "admin.none"))
    lines += ["", ctx.t(lang, "admin.payments_header")]
    for payment in card.payments:
        lines.append(
            ctx.t(
                lang,
                "admin.payment_line",
                id=payment.id,
                provider=payment.provider,
                amount=ctx.money(payment.amount_minor, payment.currency, lang=lang),
                status=f"{payment.status} ({payment.refused})"
                if payment.refused
                else payment.status,
                date=ctx.date(payment.created_at, lang=lang),
            )
        )
    if not card.payments:
        lines.append(ctx.t(lang, "admin.none"))
    return "\n".join(lines)


def _user_markup(ctx: BotContext, lang: str, card: store.UserCard) -> InlineKeyboardMarkup:
    refundable = [
        p.id for p in card.payments if p.status == "finalized" or (p.status == "paid" and p.refused)
    ]
    return kb.admin_user(ctx, lang, card.user.telegram_id, refundable)


async def user_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    query = (command.args or "").strip()
    if not query:
        await message.answer(ctx.t(lang, "admin.user_usage"), reply_markup=kb.admin_back(ctx, lang))
        return
    await _send_card(message, ctx, lang, query)


async def user_from_forward(message: Message, ctx: BotContext, lang: str) -> None:
    """A user's message forwarded by an admin opens that user's card."""
    origin = message.forward_origin
    if not isinstance(origin, MessageOriginUser):
        await message.answer(
            ctx.t(lang, "admin.forward_hidden"), reply_markup=kb.admin_back(ctx, lang)
        )
        return
    await _send_card(message, ctx, lang, str(origin.sender_user.id))


async def _send_card(message: Message, ctx: BotContext, lang: str, who: str) -> None:
    card, matches = await call_trio(ctx.svc.lookup, who)
    if card is not None:
        await message.answer(user_text(ctx, lang, card), reply_markup=_user_markup(ctx, lang, card))
    elif matches:
        await message.answer(
            ctx.t(lang, "admin.users_found", query=who[:64]),
            reply_markup=kb.admin_users(ctx, lang, matches),
        )
    else:
        await message.answer(
            ctx.t(lang, "admin.user_not_found", query=who[:64]),
            reply_markup=kb.admin_back(ctx, lang),
        )


async def user_screen(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    card = await call_trio(ctx.svc.find_user, callback_data.arg)
    if card is None:
        await answer_quietly(query, ctx.t(lang, "admin.user_not_found", query=callback_data.arg))
        return
    await show(query, bot, user_text(ctx, lang, card), _user_markup(ctx, lang, card))


def adjusted_text(ctx: BotContext, lang: str, user: str, result: store.DaysAdjusted | None) -> str:
    if result is None:
        return ctx.t(lang, "admin.user_not_found", query=user)
    if result.subscription is None:
        return ctx.t(lang, "admin.nothing_to_take", user=user)
    sub = result.subscription
    if result.revoked:
        text = ctx.t(lang, "admin.days_revoked", id=sub.id, user=user)
    else:
        text = ctx.t(
            lang,
            "admin.days_set",
            id=sub.id,
            user=user,
            expires=ctx.date(sub.expires_at, lang=lang),
        )
    if result.repeated:
        text = ctx.t(lang, "admin.repeated") + "\n" + text
    return text


_GRANT = re.compile(r"^(\S+)\s+([+-]?\d{1,4})$")


async def grant_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    match = _GRANT.match((command.args or "").strip())
    if match is None or int(match[2]) == 0:
        await message.answer(
            ctx.t(lang, "admin.grant_usage"), reply_markup=kb.admin_back(ctx, lang)
        )
        return
    who, days = match[1], int(match[2])
    admin_id = message.from_user.id if message.from_user else 0
    user_id, result = await call_trio(
        ctx.svc.grant_days, who, days, operation_key=_operation_key(event_update), by=admin_id
    )
    await message.answer(
        adjusted_text(ctx, lang, str(user_id or who), result),
        reply_markup=kb.admin_back(ctx, lang),
    )


async def grant_button(
    query: CallbackQuery,
    callback_data: kb.AdminCb,
    event_update: Update,
    bot: Bot,
    ctx: BotContext,
    lang: str,
) -> None:
    if callback_data.n == 0:
        await answer_quietly(query)
        return
    user_id, result = await call_trio(
        ctx.svc.grant_days,
        callback_data.arg,
        callback_data.n,
        operation_key=_operation_key(event_update),
        by=query.from_user.id,
    )
    await answer_quietly(query)
    await bot.send_message(
        query.from_user.id,
        adjusted_text(ctx, lang, str(user_id or callback_data.arg), result),
        reply_markup=kb.admin_back(ctx, lang),
    )


# -- refunds -----------------------------------------------------------------------------


_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


async def refund_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    payment_id = (command.args or "").strip()
    if not _UUID.match(payment_id):
        await message.answer(
            ctx.t(lang, "admin.refund_usage"), reply_markup=kb.admin_back(ctx, lang)
        )
        return
    await message.answer(
        ctx.t(lang, "admin.refund_confirm", payment=payment_id),
        reply_markup=kb.admin_confirm(
            ctx, lang, confirm=kb.AdminCb(action="refund_yes", arg=payment_id)
        ),
    )


async def refund_button(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    await answer_quietly(query)
    await bot.send_message(
        query.from_user.id,
        ctx.t(lang, "admin.refund_confirm", payment=callback_data.arg),
        reply_markup=kb.admin_confirm(
            ctx, lang, confirm=kb.AdminCb(action="refund_yes", arg=callback_data.arg)
        ),
    )


def refunded_text(ctx: BotContext, lang: str, refunded: Refunded) -> str:
    payment = refunded.payment
    text = ctx.t(
        lang,
        "admin.refunded",
        payment=payment.id,
        amount=ctx.money(payment.amount_minor, payment.currency, lang=lang),
    )
    if refunded.access_revoked:
        text += "\n" + ctx.t(lang, "admin.refund_revoked")
    if refunded.balance_taken_minor:
        taken = ctx.money(refunded.balance_taken_minor, payment.currency, lang=lang)
        text += "\n" + ctx.t(lang, "admin.refund_balance_taken", amount=taken)
    return text


async def refund_confirmed(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    payment_id = callback_data.arg
    manual = callback_data.action == "refund_manual"
    markup = kb.admin_back(ctx, lang)
    try:
        refunded = await call_trio(ctx.svc.refund, payment_id, through_provider=not manual)
    except RefundNotSupported:
        text = ctx.t(lang, "admin.refund_not_supported", payment=payment_id)
        markup = kb.admin_confirm(
            ctx, lang, confirm=kb.AdminCb(action="refund_manual", arg=payment_id)
        )
    except DomainError as exc:
        text = ctx.t(lang, "admin.refund_failed", payment=payment_id, reason=str(exc)[:300])
    else:
        text = refunded_text(ctx, lang, refunded)
    await show(query, bot, text, markup)


# -- updates given up -------------------------------------------------------------------

FAILED_SHOWN = 15
"""Given-up updates listed by ``/failed`` (a message holds 4096 characters)."""
REPLAYED_LISTED = 20


def failed_text(ctx: BotContext, lang: str, dead: list[inbox.DeadUpdate]) -> str:
    if not dead:
        return ctx.t(lang, "admin.failed_none")
    lines = [ctx.t(lang, "admin.failed_header", count=len(dead))]
    for update in dead:
        error = " ".join(update.error.split())
        lines.append(
            ctx.t(
                lang,
                "admin.failed_line",
                id=update.update_id,
                kind=update.kind,
                date=ctx.date(update.given_up_at, lang=lang),
                attempts=update.attempts,
                error=error[:150] + ("…" if len(error) > 150 else ""),
            )
        )
    lines += ["", ctx.t(lang, "admin.failed_footer")]
    return "\n".join(lines)


async def failed_command(message: Message, ctx: BotContext, lang: str) -> None:
    dead = await call_trio(inbox.dead_updates, ctx.svc.db, FAILED_SHOWN)
    await message.answer(failed_text(ctx, lang, dead), reply_markup=kb.admin_back(ctx, lang))


_REPLAY = re.compile(r"^(all|\d{1,19})$")
BIGINT_MAX = 2**63 - 1


async def replay_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    match = _REPLAY.match((command.args or "").strip().lower())
    if match is None or (match[1] != "all" and int(match[1]) > BIGINT_MAX):
        await message.answer(
            ctx.t(lang, "admin.replay_usage"), reply_markup=kb.admin_back(ctx, lang)
        )
        return
    wanted = None if match[1] == "all" else [int(match[1])]
    replayed = await call_trio(inbox.replay, ctx.svc.db, wanted)
    if not replayed:
        text = ctx.t(lang, "admin.replay_none", query=match[1])
    elif len(replayed) > REPLAYED_LISTED:
        text = ctx.t(lang, "admin.replayed_many", count=len(replayed))
    else:
        text = ctx.t(lang, "admin.replayed", ids=", ".join(f"#{i}" for i in replayed))
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


def build_router() -> Router:
    router = Router(name="admin")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(admin_menu, Command("admin"))
    router.callback_query.register(admin_menu_screen, kb.AdminCb.filter(F.action == "menu"))
    router.callback_query.register(admin_help, kb.AdminCb.filter(F.action == "help"))
    router.message.register(stats_command, Command("stats"))
    router.callback_query.register(stats_screen, kb.AdminCb.filter(F.action == "stats"))
    router.message.register(status_command, Command("status"))
    router.callback_query.register(status_screen, kb.AdminCb.filter(F.action == "status"))
    router.message.register(user_command, Command("user"))
    router.callback_query.register(user_screen, kb.AdminCb.filter(F.action == "user"))
    router.message.register(grant_command, Command("grant"))
    router.callback_query.register(grant_button, kb.AdminCb.filter(F.action == "grant"))
    router.message.register(refund_command, Command("refund"))
    router.callback_query.register(refund_button, kb.AdminCb.filter(F.action == "refund"))
    router.callback_query.register(
        refund_confirmed, kb.AdminCb.filter(F.action.in_({"refund_yes", "refund_manual"}))
    )
    router.message.register(failed_command, Command("failed"))
    router.message.register(replay_command, Command("replay"))
    return router


def build_forwards_router() -> Router:
    """An admin's forwarded message opens its sender's card, whatever it says (a user's
    ``/start`` too): tried before the user flows, where only the forward check is paid."""
    router = Router(name="admin_forwards")
    router.message.filter(F.forward_origin, IsAdmin())
    router.message.register(user_from_forward, F.chat.type == "private")
    return router
