"""Access rules, applied to every update before the handlers (``[access_rules]``).

In order, for users who are not admins:

1. registration: a user never admitted is admitted (while registration is open, or
   invite-only and their first start came through a referral or acquisition link), or
   told registration is closed (or needs an invitation). A ``/start``'s source is
   recorded before any rule holds it, so it counts once the user passes;
2. the rules: shown with an "I accept" button until the current version is accepted;
3. the channel: a membership not checked within ``channel_recheck_minutes`` is checked
   with getChatMember; a user who is not a member gets a "join" link and an "I joined"
   button. When Telegram cannot say (the bot is not an administrator of the channel, an
   outage), the user is let through and a warning logged: a misconfigured channel must
   not lock every user out;
4. purchases paused: a purchase is answered with "paused" and puts the user on the
   waitlist, told once when purchases reopen (``TelegramBot`` at its start).

Payments are never held: a payment Telegram took is credited whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    TelegramObject,
    Update,
)

from runtime.config import AccessRulesSettings
from runtime.logs import get_logger
from runtime.storage.users import User

from . import keyboards as kb
from ._context import BotContext
from ._middleware import is_payment, start_payload
from ._seam import call_trio
from .handlers._common import answer_quietly
from .handlers.user import menu_text

_log = get_logger("bot.gate")

MEMBER_STATUSES = frozenset({"creator", "administrator", "member"})
PURCHASE_BUTTONS = frozenset(
    {kb.BuyCb.__prefix__, kb.BalanceCb.__prefix__, kb.TopUpCb.__prefix__, kb.PlanCb.__prefix__}
)
PURCHASE_COMMANDS = frozenset({"/buy"})

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AccessGate(BaseMiddleware):
    def __init__(self, ctx: BotContext) -> None:
        self._ctx = ctx

    @staticmethod
    def needed(rules: AccessRulesSettings) -> bool:
        """Whether any rule is on: with none (the default) the gate is left out, and every
        update is spared a middleware."""
        return (
            rules.registration != "open"
            or bool(rules.rules)
            or rules.channel is not None
            or rules.purchases_paused
        )

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        account: User | None = data.get("account")
        if account is None or is_payment(event) or self._ctx.is_admin(account.telegram_id):
            return await handler(event, data)
        rules = self._ctx.settings.access_rules
        bot: Bot = data["bot"]
        lang: str = data["lang"]
        step = _gate_step(event)
        start = start_payload(event)
        if start is not None and not self._ctx.svc.started(account.telegram_id):
            # the first start's source counts even if a rule holds it
            await call_trio(self._ctx.svc.record_start, account.telegram_id, start or None)
        if account.admitted_at is None:
            admitted = await call_trio(
                self._ctx.svc.admit, account.telegram_id, registration=rules.registration
            )
            if not admitted:
                key = "access.closed" if rules.registration == "closed" else "access.invite_only"
                await self._say(event, bot, account, self._ctx.t(lang, key))
                return None
        if rules.rules and (account.rules_accepted or 0) < rules.rules_version:
            if step != "rules":
                await self._say(event, bot, account, *self._rules_screen(lang))
                return None
            await call_trio(self._ctx.svc.accept_rules, account.telegram_id, rules.rules_version)
        if rules.channel is not None and not self._member_recently(account):
            member = await self._is_member(bot, rules.channel, account.telegram_id)
            if member is False:
                await self._say(event, bot, account, *self._join_screen(lang, step == "channel"))
                return None
            if member:
                await call_trio(self._ctx.svc.membership_seen, account.telegram_id)
        if step is not None:  # a gate's button, and every gate passed: the menu
            await self._say(event, bot, account, *self._menu(event, lang, account))
            return None
        if rules.purchases_paused and _is_purchase(event):
            await call_trio(self._ctx.svc.wait_for_purchases, account.telegram_id)
            await self._say(event, bot, account, self._ctx.t(lang, "access.purchases_paused"))
            return None
        return await handler(event, data)

    def _member_recently(self, account: User) -> bool:
        seen = account.channel_checked_at
        recheck = timedelta(minutes=self._ctx.settings.access_rules.channel_recheck_minutes)
        return seen is not None and datetime.now(UTC) - seen < recheck

    async def _is_member(self, bot: Bot, channel: str, user_id: int) -> bool | None:
        """True or False as Telegram says; None when it cannot say."""
        try:
            member = await bot.get_chat_member(chat_id=channel, user_id=user_id)
        except TelegramAPIError as exc:
            _log.warning(
                "channel membership unknown: letting the user through",
                operation="gate.channel",
                error=exc.message[:200],
            )
            return None
        if member.status in MEMBER_STATUSES:
            return True
        return member.status == "restricted" and bool(getattr(member, "is_member", False))

    def _rules_screen(self, lang: str) -> tuple[str, InlineKeyboardMarkup]:
        rules = self._ctx.settings.access_rules.rules
        text = rules.get(lang) or rules.get("en") or next(iter(rules.values()))
        button = InlineKeyboardButton(
            text=self._ctx.t(lang, "access.accept_button"),
            callback_data=kb.GateCb(step="rules").pack(),
        )
        return text, InlineKeyboardMarkup(inline_keyboard=[[button]])

    def _join_screen(self, lang: str, retried: bool) -> tuple[str, InlineKeyboardMarkup]:
        url = self._ctx.settings.access_rules.join_url()
        assert url is not None
        rows = [
            [InlineKeyboardButton(text=self._ctx.t(lang, "access.join_button"), url=url)],
            [
                InlineKeyboardButton(
                    text=self._ctx.t(lang, "access.joined_button"),
                    callback_data=kb.GateCb(step="channel").pack(),
                )
            ],
        ]
        key = "access.still_not_member" if retried else "access.join_channel"
        return self._ctx.t(lang, key), InlineKeyboardMarkup(inline_keyboard=rows)

    def _menu(self, event: Update, lang: str, account: User) -> tuple[str, InlineKeyboardMarkup]:
        query = event.callback_query
        name = query.from_user.first_name if query is not None else ""
        return menu_text(self._ctx, lang, name), kb.main_menu(self._ctx, lang, account)

    async def _say(
        self,
        event: Update,
        bot: Bot,
        account: User,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        if isinstance(event.callback_query, CallbackQuery):
            await answer_quietly(event.callback_query)
        await bot.send_message(account.telegram_id, text, reply_markup=markup)


def _gate_step(event: Update) -> str | None:
    query = event.callback_query
    if query is None or not query.data or not query.data.startswith(kb.GateCb.__prefix__ + ":"):
        return None
    try:
        return kb.GateCb.unpack(query.data).step
    except (TypeError, ValueError):
        return None


def _is_purchase(event: Update) -> bool:
    query = event.callback_query
    if query is not None:
        data = query.data or ""
        return data.split(":", 1)[0] in PURCHASE_BUTTONS or data == kb.Nav(to="plans").pack()
    message = event.message
    if message is not None and message.text:
        command = message.text.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return command in PURCHASE_COMMANDS
    return False
