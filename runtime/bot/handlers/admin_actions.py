"""The rest of the admin's user editor, for the ids in ``telegram.admin_chat_ids`` only:

- ``/setexpiry <user> <YYYY-MM-DD> [reason]``: the running subscription ends at the end of
  that day (UTC); a past date ends access now, as ``/revoke``; a user with no subscription
  gets one on the default backend;
- ``/setplan <user> <plan> [reason]``: the running paid subscription moves to the plan
  (its limits reach the panel, the expiry stays);
- ``/giveplan <user> <plan> [reason]`` (and the user card's button, confirmed): the plan
  for free, as if bought;
- ``/resettraffic <user> [reason]`` (and the card's button, confirmed): a new traffic
  period now;
- ``/resetdevices <user> [reason]`` (and the card's button, confirmed): every device
  signed out, with no cool-down, where the panel keeps devices.

Each uses its update id as the key of its audit entry (for a button, the update that
opened its confirmation: two taps on one Confirm act once), so a handler run again after
a crash changes nothing the second time.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, Update
from aiogram.utils.keyboard import InlineKeyboardBuilder

from runtime.admin_actions import MAX_YEARS_AHEAD, UNSUPPORTED
from runtime.logs import get_logger, log_failure
from runtime.storage.admin_actions import NO_SUBSCRIPTION, OTHER_BACKEND, Edited

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._common import IsAdmin, answer_quietly, show
from .limits import PANEL_FAILURES
from .moderation import MAX_REASON

_log = get_logger("bot")

_WHO = r"(@?[A-Za-z0-9_]{1,32}|\d{1,19})"
_REASON = r"(?:\s+(.+))?"
_EXPIRY = re.compile(rf"^{_WHO}\s+(\d{{4}}-\d{{2}}-\d{{2}}){_REASON}$", re.DOTALL)
_PLAN = re.compile(rf"^{_WHO}\s+([A-Za-z0-9_]{{1,32}}){_REASON}$", re.DOTALL)
_RESET = re.compile(rf"^{_WHO}{_REASON}$", re.DOTALL)
_UID = re.compile(r"^\d{1,19}$")
_PLAN_ID = re.compile(r"^[a-z0-9_]{1,32}$")
BIGINT_MAX = 2**63 - 1

TRAFFIC, TRAFFIC_YES = kb.EDITOR_TRAFFIC, "aety"
DEVICES, DEVICES_YES = kb.EDITOR_DEVICES, "aedy"
GIVE = kb.EDITOR_GIVE


class GiveCb(CallbackData, prefix="ag"):
    """A plan to give to user ``uid``: chosen from the list (``screen`` 0), then confirmed
    on the screen that the choice opened (``screen``: that press's update id). At most
    2 + 33 + 17 + 11 bytes (a plan id, a Telegram user id of 52 bits, an update id)."""

    plan: str
    uid: int
    screen: int = 0


def _key(update: Update) -> str:
    return f"update:{update.update_id}"


def _screen_key(screen: int) -> str | None:
    """The key of an action confirmed on a screen: the update id of the press that opened
    the confirmation, so two taps on one Confirm button act once."""
    return f"update:{screen}" if 0 < screen <= BIGINT_MAX else None


def _reason(text: str | None) -> str | None:
    text = (text or "").strip()
    return text[:MAX_REASON] or None


def _admin(message: Message) -> int:
    return message.from_user.id if message.from_user is not None else 0


def parse_day(text: str, *, today: date | None = None) -> date | None:
    """A ``YYYY-MM-DD`` date no further than ``MAX_YEARS_AHEAD`` years ahead (any past
    date is fine: it ends access); None when it is no such date."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    today = today or datetime.now(UTC).date()
    if day.year < 2000 or day > today.replace(year=today.year + MAX_YEARS_AHEAD, day=1):
        return None
    return day


def _plans(ctx: BotContext) -> str:
    return ", ".join(plan.id for plan in ctx.catalog.plans) or "-"


def _t(ctx: BotContext, lang: str, key: str, **params: Any) -> str:
    return ctx.t(lang, f"admin_actions.{key}", **params)


def outcome_text(
    ctx: BotContext,
    lang: str,
    what: str,
    who: str,
    user_id: int | None,
    done: Edited | None,
    plan: str = "",
) -> str:
    """The admin's answer to ``what`` (``expiry``, ``set_plan``, ``give``, ``traffic``,
    ``devices``) on the user typed as ``who``."""
    if done is None or user_id is None:
        return ctx.t(lang, "admin.user_not_found", query=who)
    if done.repeated:
        return ctx.t(lang, "admin.repeated")
    sub = done.subscription
    if done.refused == "unknown_plan":
        return _t(ctx, lang, "unknown_plan", plan=plan, plans=_plans(ctx))
    if done.refused == NO_SUBSCRIPTION:
        return _t(ctx, lang, "no_paid" if what == "set_plan" else "no_subscription", user=user_id)
    if done.refused == OTHER_BACKEND and sub is not None:
        found = ctx.catalog.find(plan)
        return _t(
            ctx,
            lang,
            "plan_other_backend",
            plan=plan,
            backend=found.backend if found else "?",
            id=sub.id,
            user=user_id,
            current=sub.vpn_backend,
        )
    if done.refused == UNSUPPORTED and sub is not None:
        return _t(ctx, lang, "devices_unsupported", id=sub.id, user=user_id)
    if what == "expiry" and sub is None:
        if done.changed:
            return _t(ctx, lang, "expiry_ended", user=user_id, count=len(done.ended))
        return _t(ctx, lang, "expiry_nothing", user=user_id)
    assert sub is not None
    expires = ctx.date(sub.expires_at, lang=lang)
    if what == "expiry":
        key = "expiry_started" if done.created else "expiry_set"
        return _t(ctx, lang, key, id=sub.id, user=user_id, expires=expires)
    if what == "set_plan":
        key = "plan_set" if done.changed else "plan_same"
        return _t(ctx, lang, key, id=sub.id, user=user_id, plan=plan, expires=expires)
    if what == "give":
        return _t(ctx, lang, "plan_given", id=sub.id, user=user_id, plan=plan, expires=expires)
    if what == "traffic":
        return _t(ctx, lang, "traffic_reset", id=sub.id, user=user_id)
    return _t(ctx, lang, "devices_reset", id=sub.id, user=user_id, count=done.deleted)


async def _answer(message: Message, ctx: BotContext, lang: str, text: str) -> None:
    await message.answer(text, reply_markup=kb.admin_back(ctx, lang))


# -- commands ----------------------------------------------------------------------------


async def set_expiry_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    match = _EXPIRY.match((command.args or "").strip())
    day = parse_day(match[2]) if match else None
    if match is None or day is None:
        await _answer(message, ctx, lang, _t(ctx, lang, "setexpiry_usage"))
        return
    who = match[1]
    user_id, done = await call_trio(
        ctx.svc.editor.set_expiry,
        who,
        day,
        by=_admin(message),
        key=_key(event_update),
        reason=_reason(match[3]),
    )
    await _answer(message, ctx, lang, outcome_text(ctx, lang, "expiry", who, user_id, done))


async def plan_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    giving = command.command.lower() == "giveplan"
    match = _PLAN.match((command.args or "").strip())
    if match is None:
        usage = "giveplan_usage" if giving else "setplan_usage"
        await _answer(message, ctx, lang, _t(ctx, lang, usage, plans=_plans(ctx)))
        return
    who, plan = match[1], match[2].lower()
    editor = ctx.svc.editor
    user_id, done = await call_trio(
        editor.give_plan if giving else editor.set_plan,
        who,
        plan,
        by=_admin(message),
        key=_key(event_update),
        reason=_reason(match[3]),
    )
    what = "give" if giving else "set_plan"
    await _answer(message, ctx, lang, outcome_text(ctx, lang, what, who, user_id, done, plan))


async def reset_command(
    message: Message, command: CommandObject, event_update: Update, ctx: BotContext, lang: str
) -> None:
    traffic = command.command.lower() == "resettraffic"
    match = _RESET.match((command.args or "").strip())
    if match is None:
        usage = "resettraffic_usage" if traffic else "resetdevices_usage"
        await _answer(message, ctx, lang, _t(ctx, lang, usage))
        return
    who = match[1]
    text = await _reset(ctx, lang, traffic, who, _admin(message), _key(event_update), match[2])
    await _answer(message, ctx, lang, text)


async def _reset(
    ctx: BotContext, lang: str, traffic: bool, who: str, by: int, key: str, reason: str | None
) -> str:
    editor = ctx.svc.editor
    try:
        user_id, done = await call_trio(
            editor.reset_traffic if traffic else editor.reset_devices,
            who,
            by=by,
            key=key,
            reason=_reason(reason),
        )
    except PANEL_FAILURES as exc:
        log_failure(_log, exc, operation="admin.devices_reset")
        return _t(ctx, lang, "devices_unavailable")
    return outcome_text(ctx, lang, "traffic" if traffic else "devices", who, user_id, done)


# -- the user card's buttons ---------------------------------------------------------------


def _user_id(callback_data: kb.AdminCb) -> str | None:
    """The user id a button carries, checked: callback data is a door."""
    arg = callback_data.arg
    return arg if _UID.match(arg) and int(arg) <= BIGINT_MAX else None


def _confirm(ctx: BotContext, lang: str, confirm: kb.AdminCb, uid: str) -> InlineKeyboardMarkup:
    return kb.admin_confirm(ctx, lang, confirm=confirm, cancel=kb.AdminCb(action="user", arg=uid))


async def reset_button(
    query: CallbackQuery,
    callback_data: kb.AdminCb,
    event_update: Update,
    bot: Bot,
    ctx: BotContext,
    lang: str,
) -> None:
    uid = _user_id(callback_data)
    if uid is None:
        await answer_quietly(query)
        return
    traffic = callback_data.action == TRAFFIC
    action = TRAFFIC_YES if traffic else DEVICES_YES
    confirm = kb.AdminCb(action=action, arg=uid, n=event_update.update_id)
    text = _t(ctx, lang, "confirm_traffic" if traffic else "confirm_devices", user=uid)
    await show(query, bot, text, _confirm(ctx, lang, confirm, uid))


async def reset_confirmed(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    uid = _user_id(callback_data)
    key = _screen_key(callback_data.n)
    if uid is None or key is None:
        await answer_quietly(query)
        return
    traffic = callback_data.action == TRAFFIC_YES
    text = await _reset(ctx, lang, traffic, uid, query.from_user.id, key, None)
    await show(query, bot, text, kb.admin_back(ctx, lang))


async def give_button(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    uid = _user_id(callback_data)
    if uid is None:
        await answer_quietly(query)
        return
    builder = InlineKeyboardBuilder()
    for plan in ctx.catalog.plans:
        label = _t(ctx, lang, "give_item", title=plan.title(lang), plan=plan.id)
        builder.button(text=label, callback_data=GiveCb(plan=plan.id, uid=int(uid)))
    builder.button(text=ctx.t(lang, "menu.back"), callback_data=kb.AdminCb(action="user", arg=uid))
    builder.adjust(1)
    await show(query, bot, _t(ctx, lang, "give_choose", user=uid), builder.as_markup())


async def give_plan_pressed(
    query: CallbackQuery,
    callback_data: GiveCb,
    event_update: Update,
    bot: Bot,
    ctx: BotContext,
    lang: str,
) -> None:
    """A plan chosen (asks to confirm) or confirmed (gives it, once per confirmation)."""
    plan, uid = callback_data.plan, str(callback_data.uid)
    if not _PLAN_ID.match(plan) or not 0 < callback_data.uid <= BIGINT_MAX:
        await answer_quietly(query)
        return
    if callback_data.screen == 0:
        confirm = GiveCb(plan=plan, uid=callback_data.uid, screen=event_update.update_id)
        text = _t(ctx, lang, "confirm_give", plan=plan, user=uid)
        cancel = kb.AdminCb(action="user", arg=uid)
        markup = kb.admin_confirm(ctx, lang, confirm=confirm, cancel=cancel)
        await show(query, bot, text, markup)
        return
    key = _screen_key(callback_data.screen)
    if key is None:
        await answer_quietly(query)
        return
    user_id, done = await call_trio(
        ctx.svc.editor.give_plan, uid, plan, by=query.from_user.id, key=key
    )
    text = outcome_text(ctx, lang, "give", uid, user_id, done, plan)
    await show(query, bot, text, kb.admin_back(ctx, lang))


def build_router() -> Router:
    router = Router(name="admin_actions")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(set_expiry_command, Command("setexpiry"))
    router.message.register(plan_command, Command("setplan", "giveplan"))
    router.message.register(reset_command, Command("resettraffic", "resetdevices"))
    router.callback_query.register(
        reset_button, kb.AdminCb.filter(F.action.in_({TRAFFIC, DEVICES}))
    )
    router.callback_query.register(
        reset_confirmed, kb.AdminCb.filter(F.action.in_({TRAFFIC_YES, DEVICES_YES}))
    )
    router.callback_query.register(give_button, kb.AdminCb.filter(F.action == GIVE))
    router.callback_query.register(give_plan_pressed, GiveCb.filter())
    return router
