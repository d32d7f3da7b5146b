"""Telegram payments: the pre-checkout answer and the successful payment.

``pre_checkout_query`` must be answered within 10 seconds, so it is answered from one
local read (the intent exists, its amount and currency match, it is not paid yet); no
provider is called. A query older than that (run again after a crash, or waiting in the
inbox through downtime) is past answering: Telegram has already told the payer it
failed, and no money moved. It is skipped with a warning, without an answer.

``successful_payment`` is Telegram's word that the money moved, proven by the update that
brought it; its sender is the payer. It goes to ``Billing.confirm_telegram`` (no HTTP door
leads there), which credits a charge exactly once, so this handler is safe to run again
after a crash. The user hears about a credited payment from the notifier
(``payment_received``, then ``access_ready`` or ``access_extended`` once the panel has
it), and about a refused one here, with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import Message, PreCheckoutQuery

from runtime.alerts import Alert, Severity
from runtime.failures import Outcome
from runtime.logs import get_logger
from runtime.plugin_api.payments import TelegramPayment
from runtime.storage.payments import Verdict

from .._context import BotContext
from .._middleware import SubmitAlert
from .._seam import call_trio

PRE_CHECKOUT_WINDOW = timedelta(seconds=10)
"""How long Telegram waits for a pre-checkout answer."""

_log = get_logger("bot")

_REFUSED = {
    Verdict.MISMATCH: "payment.mismatch",
    Verdict.UNKNOWN_INTENT: "payment.problem",
    Verdict.EXTRA_CHARGE: "payment.paid_twice",
    Verdict.FOREIGN_PAYER: "payment.foreign_payer",
}
"""What the payer is told when their payment was refused (recorded, to refund to them)."""


async def pre_checkout(
    query: PreCheckoutQuery,
    ctx: BotContext,
    lang: str,
    alert: SubmitAlert,
    received_at: datetime | None = None,
) -> None:
    """``received_at``: when the inbox stored the query (the query has no date)."""
    if received_at is not None and datetime.now(UTC) - received_at > PRE_CHECKOUT_WINDOW:
        _past_answering(alert, (datetime.now(UTC) - received_at).total_seconds())
        return
    ok = await call_trio(
        ctx.svc.check_pre_checkout,
        query.invoice_payload,
        currency=query.currency,
        total_amount=query.total_amount,
    )
    try:
        if ok:
            await query.answer(ok=True)
        else:
            await query.answer(ok=False, error_message=ctx.t(lang, "payment.precheckout_refused"))
    except TelegramBadRequest as exc:
        if not _too_late(exc):
            raise
        _past_answering(alert, None)
        return
    if not ok:
        _log.warning("pre-checkout refused", operation="pre_checkout", outcome=Outcome.SKIPPED)


def _too_late(exc: TelegramBadRequest) -> bool:
    """Telegram's answer to a query it expired or that was answered already."""
    message = exc.message.lower()
    return "query is too old" in message or "query_id_invalid" in message


def _past_answering(alert: SubmitAlert, age_seconds: float | None) -> None:
    _log.warning(
        "pre-checkout query past Telegram's time to answer; skipped",
        operation="pre_checkout",
        outcome=Outcome.SKIPPED,
        age_seconds=None if age_seconds is None else round(age_seconds, 1),
    )
    alert(
        Alert(
            severity=Severity.WARNING,
            key="bot_pre_checkout_late",
            component="bot",
            title="pre-checkout queries went unanswered",
            text=(
                "Telegram asked whether an order could be paid, and the bot did not answer "
                "within Telegram's 10 seconds (it was down, or restarting). No money moved: "
                "Telegram told the payer the payment failed, and they can pay again."
            ),
        )
    )


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


async def refunded_payment(message: Message, ctx: BotContext) -> None:
    """Telegram gave a Stars payment back: one we refunded changes nothing; one refunded
    elsewhere is recorded, and the notifier tells the user what it took back."""
    refunded = message.refunded_payment
    assert refunded is not None
    payer = message.from_user.id if message.from_user is not None else message.chat.id
    await call_trio(ctx.svc.stars_refunded, refunded.telegram_payment_charge_id, payer_id=payer)


def build_router() -> Router:
    router = Router(name="payments")
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(successful_payment, F.successful_payment)
    router.message.register(refunded_payment, F.refunded_payment)
    return router
