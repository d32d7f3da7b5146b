"""Inline keyboards and the callback data behind their buttons (at most 64 bytes each)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from runtime.catalog import Plan
from runtime.storage.saved_methods import SavedMethod
from runtime.storage.subscriptions import Subscription
from runtime.storage.users import User

from ._context import BotContext
from ._dispatch import kept


class Nav(CallbackData, prefix="nav"):
    """Open a screen: home, plans, sub, trial, topup, settings, help, ref (referrals)."""

    to: str


class PlanCb(CallbackData, prefix="plan"):
    plan: str


class BuyCb(CallbackData, prefix="buy"):
    plan: str
    provider: str
    save: int = 0
    """1: the user chose to save their card for auto-renewal (an explicit choice)."""


class BalanceCb(CallbackData, prefix="bal"):
    """Pay for ``plan`` from the balance, on the basis the screen showed (see
    ``runtime.storage.balance_payments.Basis``): ``sub`` and ``at`` are its two numbers."""

    plan: str
    sub: int
    at: int


class TopUpCb(CallbackData, prefix="top"):
    amount: int
    provider: str = ""


class QrCb(CallbackData, prefix="qr"):
    sub: int


class LangCb(CallbackData, prefix="lang"):
    code: str


class AutoRenewCb(CallbackData, prefix="ar"):
    on: int


class CardCb(CallbackData, prefix="card"):
    """Remove the saved payment method ``id`` (only the user's own is removed)."""

    id: int


class GateCb(CallbackData, prefix="gate"):
    """An access rule's button: ``rules`` (I accept), ``channel`` (I joined)."""

    step: str


class PromoCb(CallbackData, prefix="pro"):
    """An admin's button on promo code ``code``: ``action`` is ``info`` or ``off``."""

    action: str
    code: str


class AdminCb(CallbackData, prefix="adm"):
    """Admin buttons: ``action`` with an argument (a user id, a payment id...)."""

    action: str
    arg: str = ""
    n: int = 0


EDITOR_GIVE, EDITOR_TRAFFIC, EDITOR_DEVICES = "aeg", "aet", "aed"
"""The user card's editor buttons (``AdminCb.action``, short for Telegram's 64 bytes)."""


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def home_button(ctx: BotContext, lang: str) -> InlineKeyboardButton:
    return _button(ctx.t(lang, "menu.home"), Nav(to="home"))


_MENUS_KEPT = 64
"""Main menus kept built, per context: a handful of languages times a few balances."""
_menus: dict[int, tuple[BotContext, dict[tuple[str, bool, str], InlineKeyboardMarkup]]] = {}


def main_menu(ctx: BotContext, lang: str, user: User | None) -> InlineKeyboardMarkup:
    """Built once per language, trial offer and balance, and kept (the most frequent
    answer: a keyboard is a dozen pydantic models, and it never changes once sent)."""
    trial = ctx.catalog.trial is not None and (user is None or user.trial_used_at is None)
    balance = ctx.money(
        user.balance_minor if user else 0, ctx.settings.billing.balance_currency, lang=lang
    )
    held = _menus.get(id(ctx))
    if held is None or held[0] is not ctx:
        if len(_menus) >= _MENUS_KEPT:
            _menus.clear()
        held = _menus[id(ctx)] = (ctx, {})
    menus = held[1]
    key = (lang, trial, balance)
    menu = menus.get(key)
    if menu is None:
        if len(menus) >= _MENUS_KEPT:
            menus.clear()
        menu = menus[key] = kept(_build_main_menu(ctx, lang, trial, balance))
    return menu


def _build_main_menu(ctx: BotContext, lang: str, trial: bool, balance: str) -> InlineKeyboardMarkup:
    """Built row by row (no ``InlineKeyboardBuilder``: it deep-copies every button)."""
    rows: list[list[InlineKeyboardButton]] = []
    if trial:
        rows.append([_button(ctx.t(lang, "menu.trial"), Nav(to="trial"))])
    rows.append(
        [
            _button(ctx.t(lang, "menu.plans"), Nav(to="plans")),
            _button(ctx.t(lang, "menu.subscription"), Nav(to="sub")),
        ]
    )
    rows.append(
        [
            _button(ctx.t(lang, "menu.balance", balance=balance), Nav(to="topup")),
            _button(ctx.t(lang, "menu.settings"), Nav(to="settings")),
        ]
    )
    if ctx.settings.referrals.enabled:
        rows.append([_button(ctx.t(lang, "referrals.menu_button"), Nav(to="ref"))])
    last = [_button(ctx.t(lang, "menu.help"), Nav(to="help"))]
    if ctx.settings.promo.enabled:
        last.append(_button(ctx.t(lang, "promo.button"), Nav(to="promo")))
    rows.append(last)
    return InlineKeyboardMarkup(inline_keyboard=rows)


def back_home(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[home_button(ctx, lang)]])


def to_subscription(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(ctx.t(lang, "menu.subscription"), Nav(to="sub")), home_button(ctx, lang)]
        ]
    )


def plan_list(
    ctx: BotContext, lang: str, plans: Sequence[tuple[Plan, str]]
) -> InlineKeyboardMarkup:
    """``plans``: each plan with its lowest price, already formatted."""
    builder = InlineKeyboardBuilder()
    for plan, price in plans:
        builder.row(
            _button(
                ctx.t(lang, "plans.item", title=plan.title(lang), price=price),
                PlanCb(plan=plan.id),
            )
        )
    builder.row(home_button(ctx, lang))
    return builder.as_markup()


def pay_options(
    ctx: BotContext,
    lang: str,
    plan: Plan,
    providers: Sequence[str],
    from_balance: tuple[str, BalanceCb] | None = None,
    price_text: Callable[[int, str], str] | None = None,
    saving: Collection[str] = (),
) -> InlineKeyboardMarkup:
    """``from_balance``: the price, formatted, and the button's data, when the balance
    covers the plan. ``price_text``: formats a list price (amount, currency) as the user
    pays it (a discount); plain money by default. ``saving``: providers that can save the
    card for auto-renewal get a second button that does (off unless chosen)."""
    builder = InlineKeyboardBuilder()
    if from_balance is not None:
        label = ctx.t(lang, "plans.pay_from_balance", price=from_balance[0])
        builder.row(_button(label, from_balance[1]))
    for name in providers:
        price = plan.price(name)
        if price is None:
            continue
        shown = (
            price_text(price.amount_minor, price.currency)
            if price_text is not None
            else ctx.money(price.amount_minor, price.currency, lang=lang)
        )
        label = ctx.provider_label(lang, name)
        builder.row(
            _button(
                ctx.t(lang, "plans.pay_with", provider=label, price=shown),
                BuyCb(plan=plan.id, provider=name),
            )
        )
        if name in saving:
            builder.row(
                _button(
                    ctx.t(lang, "plans.pay_with_saving", provider=label, price=shown),
                    BuyCb(plan=plan.id, provider=name, save=1),
                )
            )
    builder.row(_button(ctx.t(lang, "menu.back"), Nav(to="plans")), home_button(ctx, lang))
    return builder.as_markup()


def to_plan(ctx: BotContext, lang: str, plan: Plan) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(plan.title(lang), PlanCb(plan=plan.id)), home_button(ctx, lang)]]
    )


def top_up_or_home(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    balance = ctx.t(lang, "checkout.top_up_button")
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(balance, Nav(to="topup")), home_button(ctx, lang)]]
    )


def pay_link(ctx: BotContext, lang: str, url: str, price: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=ctx.t(lang, "checkout.pay_button", price=price), url=url)],
            [home_button(ctx, lang)],
        ]
    )


def subscription_actions(
    ctx: BotContext, lang: str, active: Sequence[Subscription]
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    several = len(active) > 1
    for subscription in active:
        if subscription.access_url:
            label = ctx.t(lang, "subscription.qr_button")
            if several:
                label = f"{label} #{subscription.id}"
            builder.row(_button(label, QrCb(sub=subscription.id)))
    renewable = [s for s in active if ctx.catalog.find(s.plan_id) is not None]
    if renewable:
        builder.row(
            _button(ctx.t(lang, "subscription.renew_button"), PlanCb(plan=renewable[0].plan_id))
        )
    else:
        builder.row(_button(ctx.t(lang, "subscription.buy_button"), Nav(to="plans")))
    builder.row(home_button(ctx, lang))
    return builder.as_markup()


def top_up_amounts(
    ctx: BotContext, lang: str, amounts: Sequence[int], currency: str
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for amount in amounts:
        builder.button(
            text=ctx.money(amount, currency, lang=lang), callback_data=TopUpCb(amount=amount)
        )
    builder.adjust(3)
    builder.row(home_button(ctx, lang))
    return builder.as_markup()


def top_up_providers(
    ctx: BotContext, lang: str, amount: int, providers: Sequence[str]
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for name in providers:
        builder.row(_button(ctx.provider_label(lang, name), TopUpCb(amount=amount, provider=name)))
    builder.row(_button(ctx.t(lang, "menu.back"), Nav(to="topup")), home_button(ctx, lang))
    return builder.as_markup()


def settings_menu(
    ctx: BotContext, lang: str, user: User, card: SavedMethod | None = None
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for code in ctx.translator.languages:
        mark = "✅ " if code == user.language else ""
        builder.button(text=mark + ctx.t(code, "language.name"), callback_data=LangCb(code=code))
    builder.adjust(len(ctx.translator.languages))
    key = "settings.auto_renew_turn_off" if user.auto_renew else "settings.auto_renew_turn_on"
    builder.row(_button(ctx.t(lang, key), AutoRenewCb(on=0 if user.auto_renew else 1)))
    if card is not None:
        builder.row(
            _button(ctx.t(lang, "settings.remove_card", title=card.title), CardCb(id=card.id))
        )
    builder.row(home_button(ctx, lang))
    return builder.as_markup()


def menu_pointer(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(ctx.t(lang, "menu.open"), Nav(to="home"))]]
    )


# -- admin -------------------------------------------------------------------------------
# Every admin screen ends with a Back button to the admin menu.


def admin_back_button(ctx: BotContext, lang: str) -> InlineKeyboardButton:
    return _button(ctx.t(lang, "menu.back"), AdminCb(action="menu"))


def admin_back(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[admin_back_button(ctx, lang)]])


def admin_menu(ctx: BotContext, lang: str) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=ctx.t(lang, "admin.stats_button"), callback_data=AdminCb(action="stats"))
    builder.button(
        text=ctx.t(lang, "report.button"), callback_data=AdminCb(action="report", arg="week")
    )
    builder.button(text=ctx.t(lang, "admin.status_button"), callback_data=AdminCb(action="status"))
    builder.button(text=ctx.t(lang, "admin.help_button"), callback_data=AdminCb(action="help"))
    builder.button(
        text=ctx.t(lang, "referrals.admin_button"), callback_data=AdminCb(action="refstats")
    )
    builder.adjust(2)
    return builder.as_markup()


def admin_refresh(ctx: BotContext, lang: str, action: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(ctx.t(lang, "admin.refresh_button"), AdminCb(action=action))],
            [admin_back_button(ctx, lang)],
        ]
    )


def admin_user(
    ctx: BotContext, lang: str, user_id: int, refundable: Sequence[str]
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    uid = str(user_id)
    for days in (7, 30):
        builder.button(
            text=ctx.t(lang, "admin.grant_button", days=days),
            callback_data=AdminCb(action="grant", arg=uid, n=days),
        )
    builder.button(
        text=ctx.t(lang, "admin.take_button", days=7),
        callback_data=AdminCb(action="grant", arg=uid, n=-7),
    )
    builder.adjust(3)
    for payment_id in refundable:
        builder.row(
            _button(
                ctx.t(lang, "admin.refund_button", payment=payment_id[:8]),
                AdminCb(action="refund", arg=payment_id),
            )
        )
    builder.row(
        *(
            _button(ctx.t(lang, f"admin_actions.{name}_button"), AdminCb(action=action, arg=uid))
            for name, action in (
                ("give", EDITOR_GIVE),
                ("traffic", EDITOR_TRAFFIC),
                ("devices", EDITOR_DEVICES),
            )
        )
    )
    builder.row(
        _button(ctx.t(lang, "moderation.history_button"), AdminCb(action="history", arg=uid)),
        _button(ctx.t(lang, "admin.refresh_button"), AdminCb(action="user", arg=uid)),
    )
    builder.row(admin_back_button(ctx, lang))
    return builder.as_markup()


def admin_users(ctx: BotContext, lang: str, users: Sequence[User]) -> InlineKeyboardMarkup:
    """One button per user found by name, opening their card."""
    rows = [
        [
            _button(
                f"{user.display_name or '-'} · {'@' + user.username if user.username else ''}"
                f" {user.telegram_id}"[:64],
                AdminCb(action="user", arg=str(user.telegram_id)),
            )
        ]
        for user in users
    ]
    rows.append([admin_back_button(ctx, lang)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def admin_confirm(
    ctx: BotContext, lang: str, *, confirm: CallbackData, cancel: AdminCb | None = None
) -> InlineKeyboardMarkup:
    row = [_button(ctx.t(lang, "admin.confirm_button"), confirm)]
    if cancel is not None:
        row.append(_button(ctx.t(lang, "admin.cancel_button"), cancel))
    return InlineKeyboardMarkup(inline_keyboard=[row, [admin_back_button(ctx, lang)]])
