"""What users do: the menu, the trial, plans and checkout, their subscription, the
balance, settings and help. Each handler parses, makes one trio call, and replies."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardMarkup,
    Message,
)

from runtime.access import TrialUnavailable
from runtime.billing import PLANS_START_PARAMETER, TOPUP_START_PARAMETER, Checkout
from runtime.catalog import Plan
from runtime.failures import DependencyError, DomainError
from runtime.logs import get_logger, log_failure
from runtime.storage.balance_payments import Basis, Outcome
from runtime.storage.saved_methods import SavedMethod
from runtime.storage.subscriptions import Subscription
from runtime.storage.users import User
from runtime.traffic import TrafficStatus

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from .._services import TrialUsed
from ..qr import qr_png
from ._common import answer_quietly, show
from ._limits_view import limit_buttons, traffic_line, with_limit_buttons
from .promo import price_label

_log = get_logger("bot")


def _first_name(message_or_query: Message | CallbackQuery) -> str:
    user = message_or_query.from_user
    return user.first_name if user is not None and user.first_name else ""


def menu_text(ctx: BotContext, lang: str, name: str) -> str:
    return ctx.t(lang, "menu.title", name=name) if name else ctx.t(lang, "menu.title_anonymous")


# -- the menu ----------------------------------------------------------------------------


async def start(message: Message, ctx: BotContext, lang: str, account: User) -> None:
    await message.answer(
        menu_text(ctx, lang, _first_name(message)), reply_markup=kb.main_menu(ctx, lang, account)
    )


async def home(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str, account: User) -> None:
    await show(
        query, bot, menu_text(ctx, lang, _first_name(query)), kb.main_menu(ctx, lang, account)
    )


async def help_command(message: Message, ctx: BotContext, lang: str) -> None:
    await message.answer(help_text(ctx, lang), reply_markup=kb.back_home(ctx, lang))


async def help_screen(query: CallbackQuery, bot: Bot, ctx: BotContext, lang: str) -> None:
    await show(query, bot, help_text(ctx, lang), kb.back_home(ctx, lang))


def help_text(ctx: BotContext, lang: str) -> str:
    contact = ctx.settings.bot.support_contact.strip()
    support = (
        ctx.t(lang, "help.support", contact=contact) if contact else ctx.t(lang, "help.no_support")
    )
    return ctx.t(lang, "help.text", support=support)


# -- trial -------------------------------------------------------------------------------


async def trial(event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str) -> None:
    user = event.from_user
    assert user is not None
    try:
        subscription = await call_trio(ctx.svc.start_trial, user.id)
    except TrialUsed as used:
        if used.current is not None:
            text = ctx.t(lang, "trial.active", expires=ctx.date(used.current.expires_at, lang=lang))
        else:
            text = ctx.t(lang, "trial.used")
    except TrialUnavailable:
        text = ctx.t(lang, "trial.unavailable")
    else:
        text = ctx.t(lang, "trial.started", expires=ctx.date(subscription.expires_at, lang=lang))
        await _reply(event, bot, text, kb.to_subscription(ctx, lang))
        return
    await _reply(event, bot, text, kb.back_home(ctx, lang))


async def _reply(
    event: CallbackQuery | Message, bot: Bot, text: str, markup: InlineKeyboardMarkup
) -> None:
    if isinstance(event, CallbackQuery):
        await show(event, bot, text, markup)
    else:
        await event.answer(text, reply_markup=markup)


# -- plans and checkout ------------------------------------------------------------------


def _on_sale(ctx: BotContext) -> list[tuple[Plan, list[str]]]:
    """Plans with the loaded providers that price them, in provider order."""
    providers = ctx.svc.provider_names()
    found = []
    for plan in ctx.catalog.plans:
        usable = [name for name in providers if plan.price(name) is not None]
        if usable:
            found.append((plan, usable))
    return found


async def plans(event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str) -> None:
    user = event.from_user
    assert user is not None
    admitted = await call_trio(ctx.svc.admitted_plans, user.id)
    on_sale = [(plan, names) for plan, names in _on_sale(ctx) if plan.id in admitted]
    if not on_sale:
        await _reply(event, bot, ctx.t(lang, "plans.none"), kb.back_home(ctx, lang))
        return
    assert event.from_user is not None
    discount = await call_trio(ctx.svc.discount, event.from_user.id)
    items = []
    for plan, providers in on_sale:
        price = plan.price(providers[0])
        assert price is not None
        items.append((plan, price_label(ctx, lang, price.amount_minor, price.currency, discount)))
    await _reply(event, bot, ctx.t(lang, "plans.title"), kb.plan_list(ctx, lang, items))


async def plan_details(
    query: CallbackQuery, callback_data: kb.PlanCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    match = [(plan, names) for plan, names in _on_sale(ctx) if plan.id == callback_data.plan]
    if not match:
        await show(query, bot, ctx.t(lang, "plans.gone"), kb.back_home(ctx, lang))
        return
    plan, providers = match[0]
    limits = [
        ctx.t(lang, "plans.traffic", gb=plan.traffic_limit_bytes // 2**30)
        if plan.traffic_limit_bytes
        else ctx.t(lang, "plans.traffic_unlimited"),
    ]
    if plan.device_limit:
        limits.append(ctx.t(lang, "plans.devices", devices=plan.device_limit))
    text = ctx.t(
        lang,
        "plans.details",
        title=plan.title(lang),
        duration=ctx.days(lang, plan.duration.days),
        limits="\n".join(limits),
    )
    offer = await call_trio(ctx.svc.balance_offer, query.from_user.id, plan.id)
    discount = await call_trio(ctx.svc.discount, query.from_user.id)
    from_balance = None
    if offer is not None and offer.covered:
        from_balance = (
            ctx.money(offer.price_minor, offer.currency, lang=lang),
            kb.BalanceCb(plan=plan.id, sub=offer.basis.subscription_id, at=offer.basis.mark),
        )
    markup = kb.pay_options(
        ctx,
        lang,
        plan,
        providers,
        from_balance,
        lambda amount, currency: price_label(ctx, lang, amount, currency, discount),
        saving=[name for name in providers if ctx.svc.saves_methods(name)],
    )
    await show(query, bot, text, markup)


async def pay_from_balance(
    query: CallbackQuery, callback_data: kb.BalanceCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    """Charged once per screen: a second click, or this update run again, shows what the
    first one bought (``Billing.pay_from_balance``)."""
    plan = ctx.catalog.find(callback_data.plan)
    currency = ctx.settings.billing.balance_currency
    price = plan.price_in(currency) if plan is not None else None
    if plan is None or price is None:
        await show(query, bot, ctx.t(lang, "checkout.unavailable"), kb.back_home(ctx, lang))
        return
    basis = Basis(callback_data.sub, callback_data.at)
    try:
        result = await call_trio(ctx.svc.pay_from_balance, query.from_user.id, plan.id, basis)
    except DomainError:
        await show(query, bot, ctx.t(lang, "checkout.unavailable"), kb.back_home(ctx, lang))
        return
    left = ctx.money(result.balance_minor, currency, lang=lang)
    price = result.price_minor or price
    if result.outcome in (Outcome.PAID, Outcome.ALREADY_PAID) and result.subscription:
        text = ctx.t(
            lang,
            "checkout.balance_paid",
            price=ctx.money(price, currency, lang=lang),
            balance=left,
            expires=ctx.date(result.subscription.expires_at, lang=lang),
        )
        await show(query, bot, text, kb.to_subscription(ctx, lang))
    elif result.outcome is Outcome.INSUFFICIENT:
        text = ctx.t(
            lang,
            "checkout.balance_insufficient",
            price=ctx.money(price, currency, lang=lang),
            balance=left,
        )
        await show(query, bot, text, kb.top_up_or_home(ctx, lang))
    else:
        await show(query, bot, ctx.t(lang, "checkout.balance_changed"), kb.to_plan(ctx, lang, plan))


async def buy(
    query: CallbackQuery, callback_data: kb.BuyCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    await answer_quietly(query)
    try:
        checkout = await call_trio(
            ctx.svc.buy,
            query.from_user.id,
            callback_data.plan,
            callback_data.provider,
            language=lang,
            save_method=bool(callback_data.save),
        )
    except DependencyError as exc:
        log_failure(_log, exc, operation="checkout", provider=callback_data.provider)
        await bot.send_message(query.from_user.id, ctx.t(lang, "checkout.provider_down"))
        return
    except DomainError:
        await bot.send_message(query.from_user.id, ctx.t(lang, "checkout.unavailable"))
        return
    plan = ctx.catalog.find(callback_data.plan)
    title = plan.title(lang) if plan else callback_data.plan
    await send_checkout(bot, ctx, lang, query.from_user.id, checkout, title)


async def send_checkout(
    bot: Bot, ctx: BotContext, lang: str, chat_id: int, checkout: Checkout, title: str
) -> None:
    """An invoice in the chat (Telegram payments) or a message with the payment link
    (saying so when the card is saved for auto-renewal)."""
    invoice = checkout.invoice
    price = ctx.money(checkout.payment.amount_minor, checkout.payment.currency, lang=lang)
    if invoice.send_in_chat:
        await bot.send_invoice(chat_id=chat_id, **invoice.send_in_chat)
    elif invoice.url:
        await bot.send_message(
            chat_id,
            ctx.t(
                lang,
                "checkout.link_saving" if checkout.payment.save_method else "checkout.link",
                title=title,
                price=price,
            ),
            reply_markup=kb.pay_link(ctx, lang, invoice.url, price),
        )
    else:
        raise DomainError(f"provider {checkout.payment.provider} gave no way to pay")


# -- my subscription ---------------------------------------------------------------------


async def my_subscription(
    event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str
) -> None:
    user = event.from_user
    assert user is not None
    overview = await call_trio(ctx.svc.overview, user.id)
    text = subscription_text(ctx, lang, overview.user, overview.active, overview.traffic)
    markup = with_limit_buttons(
        kb.subscription_actions(ctx, lang, overview.active),
        limit_buttons(ctx, lang, overview.active, overview.traffic),
    )
    await _reply(event, bot, text, markup)


def _plan_title(ctx: BotContext, lang: str, subscription: Subscription) -> str:
    if subscription.kind == "trial":
        return ctx.t(lang, "subscription.trial_title")
    plan = ctx.catalog.find(subscription.plan_id)
    return plan.title(lang) if plan else ctx.t(lang, "subscription.other_title")


def subscription_text(
    ctx: BotContext,
    lang: str,
    user: User,
    active: tuple[Subscription, ...],
    traffic: Mapping[int, TrafficStatus] | None = None,
) -> str:
    if not active:
        return ctx.t(lang, "subscription.none")
    parts = []
    for subscription in active:
        status = {
            "active": "subscription.status_active",
            "failed": "subscription.status_delayed",
        }.get(subscription.activation_status, "subscription.status_preparing")
        block = ctx.t(
            lang,
            "subscription.item",
            title=_plan_title(ctx, lang, subscription),
            status=ctx.t(lang, status),
            expires=ctx.date(subscription.expires_at, lang=lang),
            left=ctx.time_left(lang, subscription.expires_at),
        )
        usage = traffic_line(ctx, lang, (traffic or {}).get(subscription.id))
        if usage:
            block += "\n" + usage
        if subscription.access_url:
            block += "\n" + ctx.t(lang, "subscription.link", url=subscription.access_url)
        else:
            block += "\n" + ctx.t(lang, "subscription.no_link")
        parts.append(block)
    renew = "subscription.auto_renew_on" if user.auto_renew else "subscription.auto_renew_off"
    parts.append(ctx.t(lang, renew))
    return "\n\n".join(parts)


async def qr_code(
    query: CallbackQuery, callback_data: kb.QrCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    subscription = await call_trio(ctx.svc.subscription, query.from_user.id, callback_data.sub)
    if subscription is None or not subscription.access_url:
        await answer_quietly(query, ctx.t(lang, "subscription.no_link"))
        return
    await answer_quietly(query)
    await bot.send_photo(
        query.from_user.id,
        BufferedInputFile(qr_png(subscription.access_url), filename="vpn-access.png"),
        caption=ctx.t(lang, "subscription.qr_caption"),
    )


# -- balance -----------------------------------------------------------------------------


def top_up_providers(ctx: BotContext) -> list[str]:
    """Providers that take the balance currency (those that say which one they take)."""
    currency = ctx.settings.billing.balance_currency
    try:
        providers = ctx.svc.billing.providers
    except RuntimeError:
        return []
    return [
        name
        for name, provider in providers.items()
        if getattr(provider, "currency", currency) == currency
    ]


async def balance(
    event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str, account: User
) -> None:
    currency = ctx.settings.billing.balance_currency
    text = ctx.t(
        lang, "balance.title", balance=ctx.money(account.balance_minor, currency, lang=lang)
    )
    if not top_up_providers(ctx) or not ctx.settings.billing.topup_amounts:
        await _reply(
            event, bot, text + "\n\n" + ctx.t(lang, "balance.unavailable"), kb.back_home(ctx, lang)
        )
        return
    markup = kb.top_up_amounts(ctx, lang, ctx.settings.billing.topup_amounts, currency)
    await _reply(event, bot, text + "\n\n" + ctx.t(lang, "balance.choose_amount"), markup)


async def top_up(
    query: CallbackQuery, callback_data: kb.TopUpCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    currency = ctx.settings.billing.balance_currency
    amount = callback_data.amount
    providers = top_up_providers(ctx)
    if amount not in ctx.settings.billing.topup_amounts or not providers:
        await show(query, bot, ctx.t(lang, "balance.unavailable"), kb.back_home(ctx, lang))
        return
    provider = callback_data.provider or (providers[0] if len(providers) == 1 else "")
    if not provider:
        text = ctx.t(lang, "balance.choose_provider", amount=ctx.money(amount, currency, lang=lang))
        await show(query, bot, text, kb.top_up_providers(ctx, lang, amount, providers))
        return
    if provider not in providers:
        await show(query, bot, ctx.t(lang, "checkout.unavailable"), kb.back_home(ctx, lang))
        return
    await answer_quietly(query)
    title = ctx.t(lang, "balance.invoice_title", amount=ctx.money(amount, currency, lang=lang))
    await checkout_in_chat(
        bot,
        ctx,
        lang,
        query.from_user.id,
        lambda: call_trio(ctx.svc.top_up, query.from_user.id, amount, provider, title=title),
        title=title,
        provider=provider,
    )


async def checkout_in_chat(
    bot: Bot,
    ctx: BotContext,
    lang: str,
    chat_id: int,
    start: Callable[[], Awaitable[Checkout]],
    *,
    title: str,
    provider: str,
) -> None:
    """Run ``start`` (one trio call that makes a checkout) and send what it made, or
    say why there is nothing to pay."""
    try:
        checkout = await start()
    except DependencyError as exc:
        log_failure(_log, exc, operation="checkout", provider=provider)
        await bot.send_message(chat_id, ctx.t(lang, "checkout.provider_down"))
        return
    except DomainError:
        await bot.send_message(chat_id, ctx.t(lang, "checkout.unavailable"))
        return
    await send_checkout(bot, ctx, lang, chat_id, checkout, title)


# -- settings ----------------------------------------------------------------------------


def settings_text(ctx: BotContext, lang: str, user: User, card: SavedMethod | None = None) -> str:
    text = ctx.t(
        lang,
        "settings.title",
        language_name=ctx.t(
            user.language if user.language in ctx.translator.languages else lang, "language.name"
        ),
        auto_renew=ctx.t(lang, "settings.on" if user.auto_renew else "settings.off"),
    )
    if card is not None:
        text += "\n" + ctx.t(lang, "settings.card", title=card.title)
    return text


async def settings(
    event: CallbackQuery | Message, bot: Bot, ctx: BotContext, lang: str, account: User
) -> None:
    assert event.from_user is not None
    card = await call_trio(ctx.svc.saved_card, event.from_user.id)
    await _reply(
        event,
        bot,
        settings_text(ctx, lang, account, card),
        kb.settings_menu(ctx, lang, account, card),
    )


async def remove_card(
    query: CallbackQuery,
    callback_data: kb.CardCb,
    bot: Bot,
    ctx: BotContext,
    lang: str,
    account: User,
) -> None:
    removed = await call_trio(ctx.svc.remove_card, query.from_user.id, callback_data.id)
    note = ctx.t(lang, "settings.card_removed" if removed else "settings.card_gone")
    text = settings_text(ctx, lang, account) + "\n\n" + note
    await show(query, bot, text, kb.settings_menu(ctx, lang, account))


async def set_language(
    query: CallbackQuery, callback_data: kb.LangCb, bot: Bot, ctx: BotContext, account: User
) -> None:
    code = callback_data.code
    if code not in ctx.translator.languages:
        code = account.language
    card = await call_trio(ctx.svc.set_language, query.from_user.id, code)
    user = dataclasses.replace(account, language=code)
    await show(
        query, bot, settings_text(ctx, code, user, card), kb.settings_menu(ctx, code, user, card)
    )


async def set_auto_renew(
    query: CallbackQuery,
    callback_data: kb.AutoRenewCb,
    bot: Bot,
    ctx: BotContext,
    lang: str,
    account: User,
) -> None:
    enabled = bool(callback_data.on)
    card = await call_trio(ctx.svc.set_auto_renew, query.from_user.id, enabled)
    user = dataclasses.replace(account, auto_renew=enabled)
    text = (
        settings_text(ctx, lang, user, card)
        + "\n\n"
        + ctx.t(lang, "settings.auto_renew_enabled" if enabled else "settings.auto_renew_disabled")
    )
    await show(query, bot, text, kb.settings_menu(ctx, lang, user, card))


# -- the user blocked or unblocked the bot -----------------------------------------------


async def chat_member_changed(update: ChatMemberUpdated, ctx: BotContext) -> None:
    """A private chat's member update is the user blocking (``kicked``) or unblocking the
    bot. The boundary recorded the contact already (which clears the flag); a block sets
    it again, so the notifier skips the user until they write again."""
    if update.chat.type == "private" and update.new_chat_member.status == "kicked":
        await call_trio(ctx.svc.mark_blocked, update.from_user.id)


# -- everything else (the fallback router, registered last) ------------------------------


async def unknown_command(message: Message, ctx: BotContext, lang: str) -> None:
    await message.answer(
        ctx.t(lang, "errors.unknown_command"), reply_markup=kb.menu_pointer(ctx, lang)
    )


async def not_a_command(message: Message, ctx: BotContext, lang: str) -> None:
    await message.answer(
        ctx.t(lang, "errors.text_pointer"), reply_markup=kb.menu_pointer(ctx, lang)
    )


async def stale_button(query: CallbackQuery, ctx: BotContext, lang: str) -> None:
    await answer_quietly(query, ctx.t(lang, "errors.stale_button"))


def build_router() -> Router:
    router = Router(name="user")
    router.message.filter(F.chat.type == "private")
    # A forwarded copy of an invoice links here (its start_parameter) instead of letting
    # someone else pay it: they see the plans, or the balance, to buy for themselves.
    router.message.register(
        plans, CommandStart(deep_link=True, magic=F.args == PLANS_START_PARAMETER)
    )
    router.message.register(
        balance, CommandStart(deep_link=True, magic=F.args == TOPUP_START_PARAMETER)
    )
    router.message.register(start, CommandStart())
    router.message.register(start, Command("menu"))
    router.callback_query.register(home, kb.Nav.filter(F.to == "home"))
    router.message.register(help_command, Command("help"))
    router.callback_query.register(help_screen, kb.Nav.filter(F.to == "help"))
    router.callback_query.register(trial, kb.Nav.filter(F.to == "trial"))
    router.message.register(trial, Command("trial"))
    router.callback_query.register(plans, kb.Nav.filter(F.to == "plans"))
    router.message.register(plans, Command("buy"))
    router.callback_query.register(plan_details, kb.PlanCb.filter())
    router.callback_query.register(buy, kb.BuyCb.filter())
    router.callback_query.register(pay_from_balance, kb.BalanceCb.filter())
    router.callback_query.register(my_subscription, kb.Nav.filter(F.to == "sub"))
    router.message.register(my_subscription, Command("subscription"))
    router.callback_query.register(qr_code, kb.QrCb.filter())
    router.callback_query.register(balance, kb.Nav.filter(F.to == "topup"))
    router.message.register(balance, Command("balance"))
    router.callback_query.register(top_up, kb.TopUpCb.filter())
    router.callback_query.register(settings, kb.Nav.filter(F.to == "settings"))
    router.message.register(settings, Command("settings"))
    router.callback_query.register(set_language, kb.LangCb.filter())
    router.callback_query.register(set_auto_renew, kb.AutoRenewCb.filter())
    router.callback_query.register(remove_card, kb.CardCb.filter())
    router.my_chat_member.register(chat_member_changed)
    return router


def build_fallback() -> Router:
    """Whatever no other router took: unknown commands (non-admins' admin commands too),
    plain text, and buttons nothing answers (stale ones, non-admins' admin buttons)."""
    fallback = Router(name="fallback")
    fallback.message.register(unknown_command, F.chat.type == "private", F.text.startswith("/"))
    fallback.message.register(
        not_a_command,
        F.chat.type == "private",
        ~F.successful_payment,
        ~F.refunded_payment,
    )
    fallback.callback_query.register(stale_button)
    return fallback
