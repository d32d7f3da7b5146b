"""Webhook delivery: POST each pending update, in order, with the secret token header.

A non-2xx answer (or no answer) is retried after ``webhook_retry_delays``; after the last
attempt the update stays pending (``getWebhookInfo`` shows it and the last error) until a
new update arrives, the webhook is set again, ``flush_webhook()`` is called or
``webhook_recheck`` seconds pass. An answer carrying a method (``{"method": ...}``) is
executed as a call, as the real server does.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httpx
import trio

from ._params import Params
from ._state import BotState, PendingUpdate, Webhook

if TYPE_CHECKING:
    from ._emulator import TelegramEmulator

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def webhook_worker(emu: TelegramEmulator, bot: BotState) -> None:
    while True:
        hook = bot.webhook
        if hook is None or not bot.updates or hook.stalled:
            wait = emu.webhook_recheck if hook is not None and hook.stalled else None
            with trio.move_on_after(wait if wait is not None else float("inf")) as scope:
                await bot.webhook_signal.wait()
            if scope.cancelled_caught and hook is not None:
                hook.stalled = False
            continue
        await _deliver(emu, bot, hook, bot.updates[0])


async def _deliver(
    emu: TelegramEmulator, bot: BotState, hook: Webhook, update: PendingUpdate
) -> None:
    delays = emu.webhook_retry_delays
    for attempt in range(len(delays) + 1):
        if bot.webhook is not hook or not any(u is update for u in bot.updates):
            return
        error, answer = await _post(emu, hook, update)
        if error is None:
            emu.counters["webhook.delivered"] += 1
            bot.updates[:] = [u for u in bot.updates if u is not update]
            emu._touch()
            if isinstance(answer, dict) and isinstance(answer.get("method"), str):
                params = {k: v for k, v in answer.items() if k != "method"}
                await emu._call(bot, answer["method"], Params(params))
            return
        emu.counters["webhook.failed"] += 1
        hook.last_error_date = emu._now()
        hook.last_error_message = error
        emu._touch()
        if attempt < len(delays):
            with trio.move_on_after(delays[attempt]):
                # a new setWebhook or deleteWebhook ends the pause early
                while bot.webhook is hook:
                    await bot.webhook_signal.wait()
    if bot.webhook is hook:
        hook.stalled = True


async def _post(
    emu: TelegramEmulator, hook: Webhook, update: PendingUpdate
) -> tuple[str | None, Any]:
    assert emu._http is not None
    headers = {"Content-Type": "application/json"}
    if hook.secret_token:
        headers[SECRET_HEADER] = hook.secret_token
    emu.counters["webhook.attempts"] += 1
    try:
        response = await emu._http.post(
            hook.url, content=json.dumps(update.wire()).encode(), headers=headers
        )
    except httpx.TimeoutException:
        return "Read timeout expired", None
    except httpx.HTTPError as error:
        return f"Connection failed: {type(error).__name__}", None
    if not 200 <= response.status_code < 300:
        phrase = response.reason_phrase or _phrase(response.status_code)
        reason = f"{response.status_code} {phrase}"
        return f"Wrong response from the webhook: {reason}", None
    try:
        return None, response.json()
    except ValueError:
        return None, None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
