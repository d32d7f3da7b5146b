"""Telegram payments: the pre-checkout answer and the successful payment.

``pre_checkout_query`` must be answered within 10 seconds, so it is answered from one
local read (the intent exists, its amount and currency match, it is not paid yet); no
provider is called. ``successful_payment`` is Telegram's word that the money moved: it
goes to the provider's ``parse_webhook`` and then to ``billing.confirm``, which credits a
charge exactly once, so this handler is safe to run again after a crash. The user hears
about the payment from the notifier (``payment_received``, then ``access_ready``).
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message, PreCheckoutQuery

from runtime.logs import get_logger
from runtime.storage.payments import Verdict

from .._context import BotContext
from .._seam import call_trio

_log = get_logger("bot")

_PROBLEMS = {Verdict.MISMATCH, Verdict.UNKNOWN_INTENT, Verdict.EXTRA_CHARGE}


async def pre_checkout(query: PreCheckoutQuery, ctx: BotContext, lang: str) -> None:
    ok = await call_trio(
        ctx.svc.check_pre_checkout,
        query.invoice_payload,
        currency=query.currency,
        total_amount=query.total_amount,
    )
    if ok:
        await query.answer(ok=True)
    else:
        _log.warning(
            "pre-checkout refused",
            operation="pre_checkout",
            outcome="skipped",
            payload=query.invoice_payload[:64],
        )
        await query.answer(ok=False, error_message=ctx.t(lang, "payment.precheckout_refused"))


async def successful_payment(message: Message, ctx: BotContext, lang: str) -> None:
    paid = message.successful_payment
    assert paid is not None
    result = await call_trio(
        ctx.svc.confirm_telegram_payment,
        paid.model_dump(mode="json", exclude_unset=True, by_alias=True),
    )
    if result.verdict in _PROBLEMS:
        await message.answer(ctx.t(lang, "payment.problem"))


async def refunded_payment(message: Message) -> None:
    """A refund we made (``billing.refund``) coming back as a service message: the user
    is told by the notifier, so nothing to do here."""


def build_router() -> Router:
    router = Router(name="payments")
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(successful_payment, F.successful_payment)
    router.message.register(refunded_payment, F.refunded_payment)
    return router
