"""An admin's hand on one user, for the ids in ``telegram.admin_chat_ids`` only:

- ``/ban <user> [reason]``, ``/unban <user>``: a banned user is told once, then ignored
  (their payments still count);
- ``/credit <user> <+amount|-amount> <reason>``: a balance correction in the balance
  currency's major units (taking never goes below zero);
- ``/revoke <user> [reason]``: ends every active subscription now;
- ``/history <user>`` (and the user card's button): the user's audit log, newest first.

Like the other admin operations, each uses its update id as the key of its audit entry,
so a handler run again after a crash changes nothing the second time.
"""

from __future__ import annotations

import re
from decimal import Decimal

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, Update

from runtime.i18n import currency_exponent
from runtime.storage.grants import AuditEntry
from runtime.storage.moderation import Applied

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, answer_quietly, show

HISTORY_SHOWN = 20
MAX_REASON = 300
_WHO = r"(@?[A-Za-z0-9_]{1,32}|\d{1,19})"
_BAN = re.compile(rf"^{_WHO}(?:\s+(.+))?$", re.DOTALL)
_CREDIT = re.compile(rf"^{_WHO}\s+([+-]?)(\d{{1,9}})(?:[.,](\d{{1,4}}))?\s+(.+)$", re.DOTALL)


def _key(update: Update) -> str:
    return f"update:{update.update_id}"


def _reason(text: str | None) -> str | None:
    text = (text or "").strip()
    return text[:MAX_REASON] or None


def parse_amount(sign: str, whole: str, fraction: str | None, currency: str) -> int | None:
    """Major units as typed (``+150``, ``-20.5``) in minor units; None when the currency
    has fewer decimals than typed or the amount is zero."""
    exponent = currency_exponent(currency)
    if fraction is not None and len(fraction) > exponent:
        return None
    amount = Decimal(f"{whole}.{fraction or '0'}").scaleb(exponent)
    minor = int(amount) * (-1 if sign == "-" else 1)
    return minor or None


async def _answer(message: Message, ctx: BotContext, lang: str, text: str) -> None:
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


async def _apply(
    message: Message,
    update: Update,
    ctx: BotContext,
    action: str,
    who: str,
    reason: str | None,
    amount_minor: int = 0,
) -> tuple[int | None, Applied | None]:
    return await call_trio(
        ctx.svc.moderate,
        action,
        who,
        by=_admin(message),
        key=_key(update),
        reason=_reason(reason),
        amount_minor=amount_minor,
    )


def _unapplied(ctx: BotContext, lang: str, who: str, done: Applied | None) -> str | None:
    """The answer when the action did not run: an unknown user, or a repeated update."""
    if done is None:
        return ctx.t(lang, "admin.user_not_found", query=who)
    if done.repeated:
        return ctx.t(lang, "admin.repeated")
    return None


_BAN_OUTCOMES = {
    (True, True): "banned",
    (True, False): "already_banned",
    (False, True): "unbanned",
    (False, False): "not_banned",
}


async def ban_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    banning = command.command.lower() == "ban"
    match = _BAN.match((command.args or "").strip())
    if match is None or (not banning and match[2]):
        usage = "moderation.ban_usage" if banning else "moderation.unban_usage"
        await _answer(message, ctx, lang, ctx.t(lang, usage))
        return
    who = match[1]
    action = "ban" if banning else "unban"
    user_id, done = await _apply(message, event_update, ctx, action, who, match[2])
    text = _unapplied(ctx, lang, who, done)
    if text is None:
        assert done is not None
        text = ctx.t(lang, f"moderation.{_BAN_OUTCOMES[banning, done.changed]}", user=user_id)
    await _answer(message, ctx, lang, text)


async def credit_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    currency = ctx.settings.billing.balance_currency
    match = _CREDIT.match((command.args or "").strip())
    amount = parse_amount(match[2], match[3], match[4], currency) if match else None
    if match is None or amount is None:
        await _answer(message, ctx, lang, ctx.t(lang, "moderation.credit_usage"))
        return
    who = match[1]
    user_id, done = await _apply(message, event_update, ctx, "balance", who, match[5], amount)
    text = _unapplied(ctx, lang, who, done)
    if text is None:
        assert done is not None
        text = credited_text(ctx, lang, user_id, done, currency)
    await _answer(message, ctx, lang, text)


def credited_text(
    ctx: BotContext, lang: str, user_id: int | None, done: Applied, currency: str
) -> str:
    if not done.changed:
        return ctx.t(lang, "moderation.nothing_taken", user=user_id)
    balance = ctx.money(done.balance_minor or 0, currency, lang=lang)
    amount = ctx.money(abs(done.amount_minor), currency, lang=lang)
    key = "moderation.credited" if done.amount_minor > 0 else "moderation.debited"
    return ctx.t(lang, key, user=user_id, amount=amount, balance=balance)


async def revoke_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    match = _BAN.match((command.args or "").strip())
    if match is None:
        await _answer(message, ctx, lang, ctx.t(lang, "moderation.revoke_usage"))
        return
    who = match[1]
    user_id, done = await _apply(message, event_update, ctx, "revoke", who, match[2])
    text = _unapplied(ctx, lang, who, done)
    if text is None:
        assert done is not None
        text = (
            ctx.t(lang, "moderation.revoked", user=user_id, count=len(done.subscription_ids))
            if done.changed
            else ctx.t(lang, "moderation.nothing_to_revoke", user=user_id)
        )
    await _answer(message, ctx, lang, text)


def _admin(message: Message) -> int:
    return message.from_user.id if message.from_user is not None else 0


# -- history -----------------------------------------------------------------------------


def history_text(
    ctx: BotContext, lang: str, who: str, user_id: int | None, entries: list[AuditEntry]
) -> str:
    if user_id is None:
        return ctx.t(lang, "admin.user_not_found", query=who)
    if not entries:
        return ctx.t(lang, "moderation.history_none", user=user_id)
    currency = ctx.settings.billing.balance_currency
    lines = [ctx.t(lang, "moderation.history_header", user=user_id)]
    for entry in entries:
        change = []
        if entry.days:
            sign = "+" if entry.days > 0 else "-"
            change.append(f"{sign}{ctx.days(lang, abs(entry.days))}")
        if entry.balance_delta_minor:
            sign = "+" if entry.balance_delta_minor > 0 else "-"
            amount = ctx.money(abs(entry.balance_delta_minor), currency, lang=lang)
            change.append(f"{sign}{amount}")
        line = f"{ctx.date(entry.at, lang=lang)} · {action_label(ctx, lang, entry.action)}"
        if change:
            line += f" ({', '.join(change)})"
        line += f" · {entry.actor}"
        if entry.reason:
            line += f" · {entry.reason[:120]}"
        lines.append(line)
    return "\n".join(lines)


def action_label(ctx: BotContext, lang: str, action: str) -> str:
    """The action's name in ``lang`` (``audit.<action>``, dots as underscores), or as
    recorded for actions without a text."""
    key = "audit." + action.replace(".", "_")
    return ctx.t(lang, key) if ctx.translator.has(key) else action


async def history_command(
    message: Message, command: CommandObject, ctx: BotContext, lang: str
) -> None:
    who = (command.args or "").strip()
    if not re.fullmatch(_WHO, who):
        await _answer(message, ctx, lang, ctx.t(lang, "moderation.history_usage"))
        return
    user_id, entries = await call_trio(ctx.svc.audit_history, who, limit=HISTORY_SHOWN)
    await _answer(message, ctx, lang, history_text(ctx, lang, who, user_id, entries))


async def history_screen(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    who = callback_data.arg
    if not re.fullmatch(r"\d{1,19}", who):
        await answer_quietly(query)
        return
    user_id, entries = await call_trio(ctx.svc.audit_history, who, limit=HISTORY_SHOWN)
    await show(query, bot, history_text(ctx, lang, who, user_id, entries), kb.admin_back(ctx, lang))


def build_router() -> Router:
    router = Router(name="moderation")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(ban_command, Command("ban", "unban"))
    router.message.register(credit_command, Command("credit"))
    router.message.register(revoke_command, Command("revoke"))
    router.message.register(history_command, Command("history"))
    router.callback_query.register(history_screen, kb.AdminCb.filter(F.action == "history"))
    return router
