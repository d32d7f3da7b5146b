"""What the emulator keeps: users, chats, messages, invoices, payments, the transcript."""

from __future__ import annotations

import enum
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from ._limits import RateLimiter


class Signal:
    """Wakes every waiter on ``fire``; waiters check their condition again."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Kind(enum.StrEnum):
    """What a transcript entry records."""

    BOT_MESSAGE = "bot_message"
    BOT_PHOTO = "bot_photo"
    BOT_DOCUMENT = "bot_document"
    BOT_VIDEO = "bot_video"
    BOT_ANIMATION = "bot_animation"
    INVOICE = "invoice"
    EDIT = "edit"
    DELETE = "delete"
    USER_MESSAGE = "user_message"
    BUTTON_PRESS = "button_press"
    CALLBACK_ANSWER = "callback_answer"
    PRE_CHECKOUT = "pre_checkout"
    PRE_CHECKOUT_ANSWER = "pre_checkout_answer"
    PAYMENT = "payment"
    PAYMENT_CANCELLED = "payment_cancelled"
    INVOICE_EXPIRED = "invoice_expired"
    REFUND = "refund"
    BLOCKED = "blocked"
    UNBLOCKED = "unblocked"


@dataclass(frozen=True)
class Button:
    """One inline keyboard button."""

    text: str
    callback_data: str | None = None
    url: str | None = None
    pay: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def buttons_of(markup: dict[str, Any] | None) -> list[list[Button]]:
    if not markup or "inline_keyboard" not in markup:
        return []
    return [
        [
            Button(
                text=str(b.get("text", "")),
                callback_data=b.get("callback_data"),
                url=b.get("url"),
                pay=bool(b.get("pay")),
                raw=b,
            )
            for b in row
        ]
        for row in markup["inline_keyboard"]
    ]


@dataclass
class Invoice:
    """An invoice the bot sent (``sendInvoice``) or made a link for (``createInvoiceLink``)."""

    title: str
    description: str
    payload: str
    currency: str
    prices: list[dict[str, Any]]
    provider_token: str
    chat_id: int | None = None
    message_id: int | None = None
    link: str | None = None
    start_parameter: str = ""
    subscription_period: int | None = None
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    paid_by: list[int] = field(default_factory=list)
    expired: bool = False
    """Set by ``TelegramEmulator.expire_invoice``: paying it fails from then on."""

    @property
    def total_amount(self) -> int:
        return sum(int(p["amount"]) for p in self.prices)

    @property
    def is_stars(self) -> bool:
        return self.currency == "XTR"

    def wire(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "start_parameter": self.start_parameter,
            "currency": self.currency,
            "total_amount": self.total_amount,
        }


@dataclass
class Message:
    """A message in a chat, as it is now (edits change it in place)."""

    chat_id: int
    message_id: int
    date: int
    from_bot: bool
    sender: dict[str, Any]
    chat: dict[str, Any]
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption: str | None = None
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None
    """The text or caption exactly as the bot sent it (before ``parse_mode``)."""
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    """The inline keyboard (``None`` when there is none)."""
    keyboard: dict[str, Any] | None = None
    """A reply keyboard, ``remove_keyboard`` or ``force_reply`` sent with the message."""
    photo: bytes | None = None
    photo_url: str | None = None
    document: bytes | None = None
    document_name: str | None = None
    file_id: str | None = None
    invoice: Invoice | None = None
    successful_payment: dict[str, Any] | None = None
    refunded_payment: dict[str, Any] | None = None
    reply_to_message_id: int | None = None
    edit_date: int | None = None
    edits: int = 0
    deleted: bool = False
    media: dict[str, Any] = field(default_factory=dict, repr=False)
    """The wire fields of the content that is not text (``photo``, ``document``...)."""

    @property
    def content(self) -> str:
        """The text, or the caption, or ``""``."""
        return self.text if self.text is not None else (self.caption or "")

    def buttons(self) -> list[list[Button]]:
        return buttons_of(self.reply_markup)

    def button(self, text: str | None = None, *, data: str | None = None) -> Button:
        """The button whose text contains ``text`` (or whose callback data is ``data``)."""
        for row in self.buttons():
            for button in row:
                if data is not None and button.callback_data == data:
                    return button
                if text is not None and data is None and text in button.text:
                    return button
        raise LookupError(
            f"no button {text or data!r} in message {self.message_id}: "
            f"{[[b.text for b in row] for row in self.buttons()]}"
        )

    def wire(self, *, reply: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
        }
        if self.edit_date is not None:
            out["edit_date"] = self.edit_date
        if self.text is not None:
            out["text"] = self.text
            if self.entities:
                out["entities"] = self.entities
        out.update(self.media)
        if self.caption is not None:
            out["caption"] = self.caption
            if self.caption_entities:
                out["caption_entities"] = self.caption_entities
        if self.invoice is not None:
            out["invoice"] = self.invoice.wire()
        if self.successful_payment is not None:
            out["successful_payment"] = self.successful_payment
        if self.refunded_payment is not None:
            out["refunded_payment"] = self.refunded_payment
        if self.reply_markup is not None:
            out["reply_markup"] = self.reply_markup
        return out


@dataclass
class Payment:
    """A completed payment (a ``successful_payment`` the bot was sent)."""

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    user_id: int
    chat_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    date: int
    message_id: int
    update_id: int | None
    refunded: bool = False
    subscription_expiration_date: int | None = None

    @property
    def is_stars(self) -> bool:
        return self.currency == "XTR"

    def successful_payment(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "currency": self.currency,
            "total_amount": self.total_amount,
            "invoice_payload": self.invoice_payload,
            "telegram_payment_charge_id": self.telegram_payment_charge_id,
            "provider_payment_charge_id": self.provider_payment_charge_id,
        }
        if self.subscription_expiration_date is not None:
            out["subscription_expiration_date"] = self.subscription_expiration_date
            out["is_recurring"] = True
            out["is_first_recurring"] = True
        return out


PaymentStatus = Literal["paid", "declined", "expired"]


@dataclass
class Forwarded:
    """A copy of a bot message that a user forwarded to another user: it lives in their
    chat, which the bot is not part of, so the bot is told nothing.

    An invoice's copy has one button. Sent without a ``start_parameter``, it is a Pay
    button: whoever holds the copy pays the same invoice (``pay(forwarded=...)``). Sent
    with one, it is a URL button, ``https://t.me/<bot>?start=<start_parameter>``, a deep
    link (``open_link``) that only opens the bot.
    """

    id: int
    bot_id: int
    original: Message
    from_user_id: int
    to_user_id: int
    buttons: list[list[Button]]

    @property
    def invoice(self) -> Invoice | None:
        return self.original.invoice

    def button(self) -> Button:
        """The copy's (first) button."""
        for row in self.buttons:
            for button in row:
                return button
        raise LookupError(f"forwarded message {self.id} has no button")


@dataclass
class PaymentResult:
    """How a simulated payment ended: ``paid``, ``declined`` (``ok=false``) or ``expired``
    (no answer to the pre-checkout query within the limit)."""

    status: PaymentStatus
    invoice: Invoice
    query_id: str
    error_message: str | None = None
    payment: Payment | None = None
    message: Message | None = None

    @property
    def ok(self) -> bool:
        return self.status == "paid"


@dataclass
class ButtonPress:
    """A callback query: a user pressed an inline button. The bot must answer it."""

    id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str | None
    button_text: str
    date: int
    update_id: int | None = None
    answered: bool = False
    answer_text: str | None = None
    show_alert: bool = False
    url: str | None = None
    answered_event: trio.Event = field(default_factory=trio.Event, repr=False, compare=False)


@dataclass
class PreCheckout:
    id: str
    invoice: Invoice
    user_id: int
    chat_id: int
    answered: trio.Event = field(default_factory=trio.Event, repr=False)
    ok: bool | None = None
    error_message: str | None = None
    closed: bool = False


@dataclass(frozen=True)
class TranscriptEntry:
    """One thing a chat saw, in order (``seq`` orders entries across all chats)."""

    seq: int
    kind: Kind
    chat_id: int
    actor: Literal["bot", "user", "telegram"]
    at: float
    message_id: int | None = None
    text: str | None = None
    buttons: list[list[Button]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"#{self.seq} {self.actor} {self.kind.value}"]
        if self.message_id is not None:
            parts.append(f"msg={self.message_id}")
        if self.text is not None:
            parts.append(repr(self.text))
        if self.buttons:
            parts.append(str([[b.text for b in row] for row in self.buttons]))
        if self.data:
            shown = {k: v for k, v in self.data.items() if k not in ("entities",)}
            parts.append(str(shown))
        return " ".join(parts)

    def json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "chat_id": self.chat_id,
            "actor": self.actor,
            "at": self.at,
            "message_id": self.message_id,
            "text": self.text,
            "buttons": [
                [{"text": b.text, "callback_data": b.callback_data, "url": b.url} for b in row]
                for row in self.buttons
            ],
            "data": self.data,
        }


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes | None
    filename: str
    mime_type: str
    file_path: str
    url: str | None = None


@dataclass
class ChatState:
    id: int
    type: Literal["private", "group", "supergroup"]
    wire: dict[str, Any]
    user_id: int | None = None
    messages: dict[int, Message] = field(default_factory=dict)
    transcript: list[TranscriptEntry] = field(default_factory=list)
    message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    instance: str = ""


@dataclass
class PendingUpdate:
    update_id: int
    kind: str
    payload: dict[str, Any]
    forced: bool = False
    """A repeat of an update: delivered once even when an offset already confirmed it."""

    def wire(self) -> dict[str, Any]:
        return {"update_id": self.update_id, self.kind: self.payload}


@dataclass
class Webhook:
    url: str
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    ip_address: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None
    stalled: bool = False

    def info(self, pending: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": pending,
            "max_connections": self.max_connections,
        }
        if self.ip_address:
            out["ip_address"] = self.ip_address
        if self.allowed_updates:
            out["allowed_updates"] = self.allowed_updates
        if self.last_error_date is not None:
            out["last_error_date"] = self.last_error_date
            out["last_error_message"] = self.last_error_message
        return out


DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
"""What a bot gets when it asks for no particular types (``chat_member`` and reactions
must be asked for)."""


@dataclass
class BotState:
    id: int
    token: str
    username: str
    first_name: str
    chats: dict[int, ChatState] = field(default_factory=dict)
    updates: list[PendingUpdate] = field(default_factory=list)
    history: dict[int, PendingUpdate] = field(default_factory=dict)
    update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(700000001))
    allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
    webhook: Webhook | None = None
    poll_generation: int = 0
    polling: bool = False
    updates_signal: Signal = field(default_factory=Signal)
    webhook_signal: Signal = field(default_factory=Signal)
    presses: dict[str, ButtonPress] = field(default_factory=dict)
    pre_checkouts: dict[str, PreCheckout] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    star_transactions: list[dict[str, Any]] = field(default_factory=list)
    invoice_links: dict[str, Invoice] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def user_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass(frozen=True)
class ApiCall:
    """One Bot API call the emulator answered (for tests that count or inspect calls)."""

    bot_id: int
    method: str
    params: dict[str, Any]
    status: int
    at: float


@dataclass(frozen=True)
class Retention:
    """How much history the emulator keeps; None keeps everything (tests look back at will).

    A long-running emulator (the sandbox's) bounds it: every update and every call would
    otherwise stay in the process for good. What goes is the oldest: messages and transcript
    entries beyond ``per_chat`` in each chat, updates beyond ``updates`` in the repeatable
    history, button presses beyond ``updates``, answered calls beyond ``calls``.
    """

    per_chat: int | None = None
    updates: int | None = None
    calls: int = 20000


KEEP_EVERYTHING = Retention()
SANDBOX_RETENTION = Retention(per_chat=200, updates=1000, calls=1000)
"""What the sandbox keeps: its chat page shows a chat's recent messages."""


def peek(counter: itertools.count[int]) -> tuple[int, itertools.count[int]]:
    """The next value of ``counter`` and a counter that still yields it."""
    value = next(counter)
    return value, itertools.count(value)


def call_log(keep: int = 20000) -> deque[ApiCall]:
    return deque(maxlen=keep)


def keep_newest(items: dict[Any, Any], keep: int | None) -> None:
    """Drop the oldest entries of an insertion-ordered dict beyond ``keep``."""
    if keep is None:
        return
    while len(items) > keep:
        del items[next(iter(items))]
