"""Telegram payments: the pre-checkout answer and the successful payment.

``pre_checkout_query`` must be answered within 10 seconds, so it is answered from one
local read (the intent exists, its amount and currency match, it is not paid yet); no
provider is called. ``successful_payment`` is Telegram's word that the money moved, proven
by the update that brought it; its sender is the payer. It goes to
``Billing.confirm_telegram`` (no HTTP door leads there), which credits a charge exactly
once, so this handler is safe to run again after a crash. The user hears about a credited
payment from the notifier (``payment_received``, then ``access_ready``), and about a
refused one here, with the reason.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message, PreCheckoutQuery

from runtime.logs import get_logger
from runtime.plugin_api.payments import TelegramPayment
from runtime.storage.payments import Verdict

from .._context import BotContext
from .._seam import call_trio

_log = get_logger("bot")

_REFUSED = {
    Verdict.MISMATCH: "payment.mismatch",
    Verdict.UNKNOWN_INTENT: "payment.problem",
    Verdict.EXTRA_CHARGE: "payment.paid_twice",
    Verdict.FOREIGN_PAYER: "payment.foreign_payer",
}
"""What the payer is told when their payment was refused (recorded, to refund to them)."""


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
    payer = message.from_user.id if message.from_user is not None else message.chat.id
    result = await call_trio(
        ctx.svc.confirm_telegram_payment,
        TelegramPayment(
            payer_id=payer,
            currency=paid.currency,
            total_amount=paid.total_amount,
            invoice_payload=paid.invoice_payload,
            telegram_payment_charge_id=paid.telegram_payment_charge_id,
            provider_payment_charge_id=paid.provider_payment_charge_id,
        ),
    )
    refused = _REFUSED.get(result.verdict)
    if refused is not None:
        await message.answer(ctx.t(lang, refused))


async def refunded_payment(message: Message) -> None:
    """A refund we made (``billing.refund``) coming back as a service message: the user
    is told by the notifier, so nothing to do here."""


def build_router() -> Router:
    router = Router(name="payments")
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(successful_payment, F.successful_payment)
    router.message.register(refunded_payment, F.refunded_payment)
    return router
