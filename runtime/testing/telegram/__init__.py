"""A Telegram Bot API emulator: unmodified aiogram talks to it, simulated users use it.

No installable emulator handles payments with aiogram 3, so the project ships its own. It
speaks the Bot API wire format (``/bot<token>/<method>``, JSON, form and multipart bodies,
``{"ok": true, "result": ...}`` / ``{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}``) and models what a bot must cope with: long polling with
offsets and 409 conflicts, webhooks with a secret token and retries, inline keyboards and
callback queries, edits (``message is not modified``), HTML/Markdown parsing errors,
Stars and card invoices with the 10-second pre-checkout rule, refunds, forwarded invoices
(payable by whoever holds the copy unless sent with a ``start_parameter``) and deep links,
flood limits (429 with ``retry_after``), blocked users (403), scripted faults (429, 5xx,
slow or hanging answers, answers lost after the effect) and outages (``start_outage``:
every call answered 5xx, or hanging, until ``end_outage``).

    emulator = TelegramEmulator(pre_checkout_timeout=0.5)
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user(first_name="Ann", language_code="en")
        async with polling(dispatcher, bot):
            hello = user.send_command("start")
            reply = await user.wait_for_message(after=hello)
            user.press(reply, text="Buy")
            invoice = await user.wait_for_message(lambda m: m.invoice is not None)
            result = await user.pay(invoice)
            assert result.ok
        print(emulator.format_transcript(user.id))

Flood limits are on by default (``Limits()``: 1 message per second per chat with a burst
of 5, 30 per second per bot); tests that are not about them may pass
``limits=Limits.off()``.

Users, chats and ids are Telegram's: a private chat's id is the user's id, message ids grow
per chat, dates are unix seconds, ``from`` carries ``language_code``. The same controls are
served over HTTP under ``/_control/`` (see ``_control``).
"""

from ._aiogram import polling
from ._emulator import DEFAULT_TOKEN, SimUser, TelegramEmulator
from ._errors import ApiError, EmulatorError, WaitTimeout
from ._limits import SEND_METHODS, Limits, Outage, ScriptedFault
from ._state import (
    SANDBOX_RETENTION,
    ApiCall,
    Button,
    ButtonPress,
    Forwarded,
    Invoice,
    Kind,
    Message,
    Payment,
    PaymentResult,
    Retention,
    TranscriptEntry,
)
from ._webhook import SECRET_HEADER

__all__ = [
    "DEFAULT_TOKEN",
    "SANDBOX_RETENTION",
    "SECRET_HEADER",
    "SEND_METHODS",
    "ApiCall",
    "ApiError",
    "Button",
    "ButtonPress",
    "EmulatorError",
    "Forwarded",
    "Invoice",
    "Kind",
    "Limits",
    "Message",
    "Outage",
    "Payment",
    "PaymentResult",
    "Retention",
    "ScriptedFault",
    "SimUser",
    "TelegramEmulator",
    "TranscriptEntry",
    "WaitTimeout",
    "polling",
]
