"""Forwarded messages and deep links, as far as payments care.

Modelled on the Bot API's ``sendInvoice`` documentation of ``start_parameter``: "If left
empty, forwarded copies of the sent message will have a Pay button, allowing multiple users
to pay directly from the forwarded message, using the same invoice. If non-empty,
forwarded copies of the sent message will have a URL button with a deep link to the bot
(instead of a Pay button), with the value used as the start parameter." Opening a
``https://t.me/<bot username>?start=<parameter>`` link sends the bot ``/start
<parameter>`` from the user who opened it. Other forwarded messages keep their URL buttons
only (a callback button would reach the bot from a chat it is not in).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from ._errors import EmulatorError
from ._state import Button, Forwarded, Invoice, Message

START_PARAMETER = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What Telegram takes as a deep-link start parameter."""


def copy_buttons(message: Message, bot_username: str) -> list[list[Button]]:
    """The buttons a forwarded copy of ``message`` shows."""
    invoice = message.invoice
    if invoice is not None:
        label = f"Pay {invoice.total_amount} {invoice.currency}"
        if invoice.start_parameter:
            link = deep_link(bot_username, invoice.start_parameter)
            return [[Button(text=label, url=link, raw={"text": label, "url": link})]]
        return [[Button(text=label, pay=True, raw={"text": label, "pay": True})]]
    rows = [[b for b in row if b.url] for row in message.buttons()]
    return [row for row in rows if row]


def payable_invoice(forwarded: Forwarded, user_id: int) -> Invoice:
    """The invoice a user may pay from a forwarded copy they hold, or ``EmulatorError``."""
    if forwarded.to_user_id != user_id:
        raise EmulatorError(f"user {user_id} does not have forwarded message {forwarded.id}")
    invoice = forwarded.invoice
    if invoice is None:
        raise EmulatorError(f"forwarded message {forwarded.id} is not an invoice")
    if not any(button.pay for row in forwarded.buttons for button in row):
        raise EmulatorError(
            f"forwarded message {forwarded.id} has no Pay button: the invoice was sent with a "
            f"start_parameter, so its copy links to the bot ({forwarded.button().url})"
        )
    return invoice


def deep_link(bot_username: str, start_parameter: str) -> str:
    return f"https://t.me/{bot_username}?start={start_parameter}"


def parse_deep_link(url: str) -> tuple[str, str | None]:
    """``(bot username, start parameter or None)`` of a ``t.me`` link to a bot."""
    parts = urlsplit(url)
    username = parts.path.strip("/")
    if parts.netloc not in ("t.me", "telegram.me") or not username or "/" in username:
        raise EmulatorError(f"not a link to a bot: {url}")
    values = parse_qs(parts.query).get("start")
    if not values:
        return username, None
    if not START_PARAMETER.fullmatch(values[0]):
        raise EmulatorError(f"not a start parameter: {values[0]!r}")
    return username, values[0]
