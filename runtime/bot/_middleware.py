"""The handler boundary: one per update, as an aiogram outer middleware.

For every update it binds a correlation id (the inbox's, when it passed one) to the log
context, records the contact (creating the user on first contact, with the language of
their Telegram client; skipped when the inbox's record of the sender, ``inbox_sender``,
shows nothing to change: no crossing, no database round trip) and a user's first
``/start`` with its source (a referral or ad link; in the contact's statement when there
is one), and gives the handlers ``account`` (``runtime.storage.users.User``), ``lang``
and ``alert`` (``SubmitAlert``). An exception from a handler is classified and logged
once and the middleware returns a ``HandlerFailed`` instead of raising, so the dispatcher
keeps serving. Its ``next`` tells the inbox what to do with the update:

- ``WAIT_FOR_TELEGRAM``: Telegram's flood control, or Telegram unreachable. Not a failure
  of the update: it runs again when Telegram lets it, without spending an attempt, and
  the user gets no apology (it could not reach them anyway).
- ``RETRY``: a transient failure of ours or of another peer (the database, a VPN panel),
  or a bug while crediting a payment: another attempt later.
- ``GIVE_UP``: a bug, or a refusal that retrying cannot change: kept for an operator to
  replay once it is fixed.
- ``DONE``: nothing left to do (the user blocked the bot; a pre-checkout query answered
  with an apology, which cannot be answered twice).

On the first attempt of an update that failed by our doing, the user gets a short apology
in their language. Payment updates (``pre_checkout_query``, ``successful_payment``) are
logged under the ``payment_finalization`` operation; the inbox alerts admins about them.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.middlewares.user_context import EventContext
from aiogram.exceptions import TelegramForbiddenError
from aiogram.types import TelegramObject, Update
from aiogram.types import User as TelegramUser

from runtime.alerts import Alert
from runtime.failures import Failure, FailureType, Outcome
from runtime.logs import correlation, get_logger, log_failure
from runtime.storage.users import User as StoredUser
from runtime.storage.users import full_name

from ._context import BotContext
from ._seam import call_trio, call_trio_soon
from ._telegram_link import TelegramTrouble, telegram_trouble

PAYMENT_OPERATION = "payment_finalization"
UPDATE_OPERATION = "bot.update"

_log = get_logger("bot")


class Next(enum.Enum):
    """What becomes of an update whose handler failed (see the module docstring)."""

    WAIT_FOR_TELEGRAM = "wait_for_telegram"
    RETRY = "retry"
    GIVE_UP = "give_up"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class HandlerFailed:
    """What the boundary returns for an update whose handler raised."""

    failure: Failure
    next: Next
    payment: bool
    telegram: TelegramTrouble | None = None
    """Set with ``WAIT_FOR_TELEGRAM``: what Telegram did."""


def next_step(failure: Failure, *, payment: bool, pre_checkout: bool) -> Next:
    """For a failure that is not Telegram's: retry what may pass (and a bug while
    crediting money, which may be a race), give up the rest. A pre-checkout query is
    answered at once or never: it is never tried again by our doing."""
    if pre_checkout:
        return Next.GIVE_UP if failure.type is FailureType.BUG else Next.DONE
    if failure.transient or (payment and failure.type is FailureType.BUG):
        return Next.RETRY
    return Next.GIVE_UP


def is_payment(update: Update) -> bool:
    return update.pre_checkout_query is not None or (
        update.message is not None and update.message.successful_payment is not None
    )


def start_payload(update: Update) -> str | None:
    """A ``/start`` message's payload (``""`` without one); None for anything else."""
    message = update.message
    if message is None or not message.text:
        return None
    command, _, rest = message.text.partition(" ")
    if command.split("@", 1)[0].lower() != "/start":
        return None
    return rest.strip()


def unchanged_contact(known: StoredUser | None, user: TelegramUser) -> StoredUser | None:
    """``known`` (the sender's record as the inbox read it) when recording this contact
    would change nothing: the same user, the same username and name, not marked as
    blocking the bot. The language is only set when the user is created, so it never differs."""
    if known is None or known.telegram_id != user.id or known.blocked_bot_at is not None:
        return None
    if user.username is not None and user.username != known.username:
        return None
    if full_name(user.first_name, user.last_name) != known.display_name:
        return None
    if known.admitted_at is None:  # the contact may admit them (registration open)
        return None
    return known


SubmitAlert = Callable[[Alert], None]
"""Given to handlers as ``alert``: hands an alert to the pipeline, never raises."""


class HandlerBoundary(BaseMiddleware):
    def __init__(self, ctx: BotContext, alerts: Callable[[], Any]) -> None:
        self._ctx = ctx
        self._alerts = alerts

    def alert(self, alert: Alert) -> None:
        """Handlers run on asyncio's side; the alert pipeline is trio's."""
        call_trio_soon(self._submit, alert)

    def _submit(self, alert: Alert) -> None:
        try:
            self._alerts().submit(alert)
        except Exception as exc:  # alerting must never break the boundary
            _log.warning("could not alert", operation="alert", error=repr(exc))

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
                    account = unchanged_contact(data.get("inbox_sender"), user)
                    start = start_payload(event)
                    if account is None:
                        account = await call_trio(
                            self._ctx.svc.touch,
                            user.id,
                            username=user.username,
                            language=lang,
                            name=full_name(user.first_name, user.last_name),
                            start=start,
                        )
                    elif start is not None and not self._ctx.svc.started(user.id):
                        await call_trio(self._ctx.svc.record_start, user.id, start or None)
                    data["account"] = account
                    lang = account.language
                    if account.banned_at is not None and not self._ctx.is_admin(user.id):
                        return await self._banned(handler, event, data, lang)
                data["lang"] = lang
                data["alert"] = self.alert
                return await handler(event, data)
            except Exception as exc:
                return await self._failed(exc, event, data, lang, payment)

    async def _banned(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        update: Update,
        data: dict[str, Any],
        lang: str,
    ) -> Any:
        """A banned user's update: a payment they made is still credited (money is never
        lost), a checkout is refused, and everything else is ignored (the one message they
        get was queued with the ban)."""
        if update.message is not None and update.message.successful_payment is not None:
            data["lang"] = lang
            data["alert"] = self.alert
            return await handler(update, data)
        if update.pre_checkout_query is not None:
            bot: Bot = data["bot"]
            await bot.answer_pre_checkout_query(
                update.pre_checkout_query.id,
                ok=False,
                error_message=self._ctx.t(lang, "moderation.checkout_refused"),
            )
        _log.info("ignored: the user is banned", operation="ban")
        return None

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
            return HandlerFailed(_forbidden(exc), Next.DONE, payment=payment)
        operation = PAYMENT_OPERATION if payment else UPDATE_OPERATION
        trouble = telegram_trouble(exc)
        if trouble is not None:
            failure = log_failure(
                _log,
                exc,
                operation=operation,
                outcome=Outcome.DEGRADED,
                update_type=update.event_type,
                attempt=attempt,
                telegram=trouble.kind.value,
            )
            return HandlerFailed(failure, Next.WAIT_FOR_TELEGRAM, payment, telegram=trouble)
        failure = log_failure(
            _log, exc, operation=operation, update_type=update.event_type, attempt=attempt
        )
        if attempt == 1:
            await self._apologise(update, data["bot"], chat_id, lang, payment)
        pre_checkout = update.pre_checkout_query is not None
        step = next_step(failure, payment=payment, pre_checkout=pre_checkout)
        return HandlerFailed(failure, step, payment)

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
