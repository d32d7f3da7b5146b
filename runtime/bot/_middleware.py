"""The handler boundary: one per update, as an aiogram outer middleware.

For every update it binds a correlation id (the inbox's, when it passed one) to the log
context, records the contact (creating the user on first contact, with the language of
their Telegram client) and gives the handlers ``account`` (``runtime.storage.users.User``)
and ``lang``. An exception from a handler is classified and logged once, the user gets a
short apology in their language, and the middleware returns a ``HandlerFailed`` instead of
raising, so the dispatcher keeps serving. The inbox reads it to decide whether to try the
update again (transient failures; payments always) or to let it go.

Payment updates (``pre_checkout_query``, ``successful_payment``) are logged under the
``payment_finalization`` operation and alert admins when they fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.middlewares.user_context import EventContext
from aiogram.exceptions import TelegramForbiddenError
from aiogram.types import TelegramObject, Update

from runtime.alerts import Alert, Severity
from runtime.failures import Failure, FailureType, Outcome
from runtime.logs import correlation, get_logger, log_failure

from ._context import BotContext
from ._seam import call_trio

PAYMENT_OPERATION = "payment_finalization"
UPDATE_OPERATION = "bot.update"

_log = get_logger("bot")


@dataclass(frozen=True, slots=True)
class HandlerFailed:
    """What the boundary returns for an update whose handler raised."""

    failure: Failure
    retry: bool
    """Worth another attempt later: the failure is transient, or money is at stake."""
    payment: bool


def is_payment(update: Update) -> bool:
    return update.pre_checkout_query is not None or (
        update.message is not None and update.message.successful_payment is not None
    )


class HandlerBoundary(BaseMiddleware):
    def __init__(self, ctx: BotContext, alerts: Callable[[], Any]) -> None:
        self._ctx = ctx
        self._alerts = alerts

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        context: EventContext | None = data.get("event_context")
        user = context.user if context is not None else None
        payment = is_payment(event)
        with correlation(
            data.get("correlation_id"),
            update_id=event.update_id,
            user_id=user.id if user is not None else None,
        ):
            lang = self._ctx.translator.language_for(user.language_code if user else None)
            try:
                if user is not None and not user.is_bot:
                    account = await call_trio(
                        self._ctx.svc.touch, user.id, username=user.username, language=lang
                    )
                    data["account"] = account
                    lang = account.language
                data["lang"] = lang
                return await handler(event, data)
            except Exception as exc:
                return await self._failed(exc, event, data, lang, payment)

    async def _failed(
        self, exc: Exception, update: Update, data: dict[str, Any], lang: str, payment: bool
    ) -> HandlerFailed:
        context: EventContext | None = data.get("event_context")
        user_id = context.user_id if context is not None else None
        chat_id = context.chat_id if context is not None else user_id
        attempt = int(data.get("inbox_attempt", 1))
        if isinstance(exc, TelegramForbiddenError) and user_id is not None:
            # The user blocked the bot: nothing to say and no one to say it to.
            _log.info(
                "the user blocked the bot",
                operation=UPDATE_OPERATION,
                outcome=Outcome.SKIPPED,
                update_type=update.event_type,
            )
            with contextlib.suppress(Exception):
                await call_trio(self._ctx.svc.mark_blocked, user_id)
            return HandlerFailed(_forbidden(exc), retry=False, payment=payment)
        failure = log_failure(
            _log,
            exc,
            operation=PAYMENT_OPERATION if payment else UPDATE_OPERATION,
            update_type=update.event_type,
            attempt=attempt,
        )
        retry = failure.transient or (payment and failure.type is FailureType.BUG)
        if update.pre_checkout_query is not None:
            retry = False  # Telegram wants the answer now; the user can simply pay again
        if payment:
            self._alert(update, failure)
        if attempt == 1 and failure.retry_after is None:
            # Once per update; not for Telegram's flood control, whose retry simply
            # delivers the answer a moment later.
            await self._apologise(update, data["bot"], chat_id, lang, payment)
        return HandlerFailed(failure, retry=retry, payment=payment)

    def _alert(self, update: Update, failure: Failure) -> None:
        try:
            alerts = self._alerts()
            alerts.submit(
                Alert(
                    severity=Severity.CRITICAL,
                    key=f"bot_payment_update:{update.update_id}",
                    component="bot",
                    title="a payment update failed in the bot",
                    text=(
                        f"update {update.update_id} ({update.event_type}): "
                        f"{failure.type.value}: {failure.message[:300]}"
                    ),
                )
            )
        except Exception as exc:  # alerting must never break the boundary
            _log.warning("could not alert", operation="alert", error=repr(exc))

    async def _apologise(
        self, update: Update, bot: Bot, chat_id: int | None, lang: str, payment: bool
    ) -> None:
        t = self._ctx.t
        with contextlib.suppress(Exception):
            if update.pre_checkout_query is not None:
                await update.pre_checkout_query.answer(
                    ok=False, error_message=t(lang, "errors.precheckout_failed")
                )
                return
            if update.callback_query is not None:
                with contextlib.suppress(Exception):
                    await update.callback_query.answer()
            if chat_id is None:
                return
            key = "errors.payment_delayed" if payment else "errors.apology"
            await bot.send_message(chat_id, t(lang, key))


def _forbidden(exc: Exception) -> Failure:
    return Failure(
        type=FailureType.DEPENDENCY,
        transient=False,
        message=str(exc)[:200],
        exception_type=type(exc).__name__,
    )
