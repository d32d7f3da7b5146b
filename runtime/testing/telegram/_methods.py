"""The Bot API methods the emulator answers.

Each handler takes the emulator, the bot and the call's ``Params`` and returns the
``result`` (or raises ``ApiError``). Checks come in the order the real server makes them
as far as it matters to a bot: parameters, then the chat (not found, blocked), then the
flood limits, then the effect; a refused call has no effect.
"""

from __future__ import annotations

import inspect
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from . import _formatting
from ._errors import QUERY_TOO_OLD, ApiError, bad_request
from ._forwarding import START_PARAMETER
from ._params import Params
from ._state import (
    DEFAULT_UPDATE_TYPES,
    BotState,
    ChatState,
    Invoice,
    Kind,
    Message,
    StoredFile,
    Webhook,
    buttons_of,
)

if TYPE_CHECKING:
    from ._emulator import TelegramEmulator

Handler = Callable[["TelegramEmulator", BotState, Params], Any]


@dataclass(frozen=True)
class Described:
    """A result with the ``description`` the real server adds (``Webhook was set``)."""

    result: Any
    description: str


@dataclass(frozen=True)
class MethodSpec:
    name: str
    handler: Handler
    waits: bool = False
    """The handler may wait (a long poll): the only ones the server watches for a client
    that gives up before the answer."""

    async def call(self, emu: TelegramEmulator, bot: BotState, params: Params) -> Any:
        result = self.handler(emu, bot, params)
        if inspect.isawaitable(result):
            result = await result
        return result


METHODS: dict[str, MethodSpec] = {}


def method(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name.lower()] = MethodSpec(name, fn, inspect.iscoroutinefunction(fn))
        return fn

    return register


# -- bot ------------------------------------------------------------------------------


@method("getMe")
def get_me(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    return {
        **bot.user_wire(),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@method("logOut")
def log_out(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    return True


@method("close")
def close(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    return True


for _name in (
    "setMyDescription",
    "setMyShortDescription",
    "setMyName",
    "setChatMenuButton",
    "setMyDefaultAdministratorRights",
):
    method(_name)(lambda emu, bot, p: True)


def _commands_key(p: Params) -> str:
    scope = p.json("scope") or {}
    scope_type = scope.get("type", "default") if isinstance(scope, dict) else "default"
    return f"{scope_type}:{p.string('language_code') or ''}"


@method("setMyCommands")
def set_my_commands(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    commands = p.json("commands", required=True)
    if not isinstance(commands, list) or len(commands) > 100:
        raise bad_request("can't parse commands JSON object")
    for command in commands:
        name = command.get("command", "") if isinstance(command, dict) else ""
        if not re.fullmatch(r"[a-z0-9_]{1,32}", str(name)):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    bot.commands[_commands_key(p)] = [dict(c) for c in commands]
    return True


@method("getMyCommands")
def get_my_commands(emu: TelegramEmulator, bot: BotState, p: Params) -> list[dict[str, Any]]:
    return bot.commands.get(_commands_key(p), [])


@method("deleteMyCommands")
def delete_my_commands(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    bot.commands.pop(_commands_key(p), None)
    return True


# -- updates and webhooks -------------------------------------------------------------

_ALL_UPDATE_TYPES = DEFAULT_UPDATE_TYPES | {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}


def _allowed_updates(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise bad_request("can't parse allowed_updates JSON object")
    if not value:
        return DEFAULT_UPDATE_TYPES
    return frozenset(str(v) for v in value if str(v) in _ALL_UPDATE_TYPES)


CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CONFLICT_POLLING = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


@method("getUpdates")
async def get_updates(emu: TelegramEmulator, bot: BotState, p: Params) -> list[dict[str, Any]]:
    if bot.webhook is not None:
        emu.counters["conflicts"] += 1
        raise ApiError(409, CONFLICT_WEBHOOK)
    offset = p.integer("offset")
    limit = min(100, max(1, p.integer("limit", default=100) or 100))
    timeout = max(0, p.integer("timeout", default=0) or 0)
    allowed = p.json("allowed_updates")
    if allowed is not None:
        bot.allowed_updates = _allowed_updates(allowed)
    if offset:
        emu._confirm(bot, offset)
    # A newer getUpdates ends the one still waiting (it is answered 409).
    bot.poll_generation += 1
    generation = bot.poll_generation
    bot.updates_signal.fire()
    deadline = trio.current_time() + timeout
    while True:
        conflict = _conflict(bot, generation)
        if conflict is not None:
            emu.counters["conflicts"] += 1
            raise ApiError(409, conflict)
        ready = bot.updates[:limit]
        if ready or trio.current_time() >= deadline:
            break
        with trio.move_on_at(deadline):
            await bot.updates_signal.wait()
    for update in ready:
        if update.forced:
            bot.updates.remove(update)
    if ready:
        emu._touch()
    return [u.wire() for u in ready]


def _conflict(bot: BotState, generation: int) -> str | None:
    """Why a waiting getUpdates must end with 409: a newer one, or a webhook."""
    if bot.poll_generation != generation:
        return CONFLICT_POLLING
    if bot.webhook is not None:
        return CONFLICT_WEBHOOK
    return None


_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


@method("setWebhook")
def set_webhook(emu: TelegramEmulator, bot: BotState, p: Params) -> Described:
    url = p.string("url") or ""
    if not url:
        return _delete_webhook(emu, bot, p)
    if not url.startswith(("http://", "https://")):
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    secret = p.string("secret_token")
    if secret is not None and not _SECRET.fullmatch(secret):
        raise bad_request("secret token contains unallowed characters")
    max_connections = p.integer("max_connections", default=40) or 40
    if not 1 <= max_connections <= 100:
        raise bad_request("bad webhook: max_connections must be between 1 and 100")
    allowed = p.json("allowed_updates")
    if allowed is not None:
        bot.allowed_updates = _allowed_updates(allowed)
    if p.flag("drop_pending_updates"):
        bot.updates.clear()
    previous = bot.webhook
    bot.webhook = Webhook(
        url=url,
        secret_token=secret,
        max_connections=max_connections,
        allowed_updates=[str(a) for a in allowed] if isinstance(allowed, list) else None,
        ip_address=p.string("ip_address"),
    )
    bot.updates_signal.fire()
    bot.webhook_signal.fire()
    emu._touch()
    if previous is not None and previous.url == url:
        return Described(True, "Webhook is already set")
    return Described(True, "Webhook was set")


@method("deleteWebhook")
def delete_webhook(emu: TelegramEmulator, bot: BotState, p: Params) -> Described:
    return _delete_webhook(emu, bot, p)


def _delete_webhook(emu: TelegramEmulator, bot: BotState, p: Params) -> Described:
    if p.flag("drop_pending_updates"):
        bot.updates.clear()
    was_set = bot.webhook is not None
    bot.webhook = None
    bot.webhook_signal.fire()
    emu._touch()
    return Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")


@method("getWebhookInfo")
def get_webhook_info(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    return emu.webhook_info(bot=bot.id)


# -- messages ---------------------------------------------------------------------------

_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "pay",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "callback_game",
    "web_app",
    "copy_text",
)


def _reply_markup(p: Params) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(inline keyboard, other keyboard)`` from ``reply_markup``."""
    markup = p.json("reply_markup")
    if markup is None:
        return None, None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request('can\'t parse inline keyboard markup: field "inline_keyboard"')
        for row in rows:
            for button in row:
                _check_button(button)
        return {"inline_keyboard": [[dict(b) for b in row] for row in rows]}, None
    if any(k in markup for k in ("keyboard", "remove_keyboard", "force_reply")):
        return None, dict(markup)
    raise bad_request("can't parse reply keyboard markup JSON object")


def _check_button(button: Any) -> None:
    if not isinstance(button, dict) or not str(button.get("text") or ""):
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    actions = [a for a in _BUTTON_ACTIONS if button.get(a) not in (None, False)]
    if not actions:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    data = button.get("callback_data")
    if data is not None and not 1 <= len(str(data).encode()) <= 64:
        raise bad_request("BUTTON_DATA_INVALID")
    url = button.get("url")
    if url is not None and not str(url).startswith(("http://", "https://", "tg://")):
        raise bad_request("BUTTON_URL_INVALID")


def _text(p: Params, name: str, *, limit: int, entities_name: str) -> tuple[str, list[Any]]:
    raw = p.string(name) or ""
    text, entities = _formatting.parse(raw, p.string("parse_mode"), p.json(entities_name))
    if name == "text" and not text.strip():
        raise bad_request("message text is empty")
    if _formatting.utf16_len(text) > limit:
        reason = "message is too long" if name == "text" else "message caption is too long"
        raise bad_request(reason)
    return text, entities


def _reply_to(p: Params, chat: ChatState) -> int | None:
    target = p.integer("reply_to_message_id")
    allow_missing = p.flag("allow_sending_without_reply")
    parameters = p.json("reply_parameters")
    if isinstance(parameters, dict):
        target = parameters.get("message_id", target)
        allow_missing = bool(parameters.get("allow_sending_without_reply", allow_missing))
    if target is None:
        return None
    if int(target) not in chat.messages:
        if allow_missing:
            return None
        raise bad_request("message to be replied not found")
    return int(target)


def _bot_message(
    emu: TelegramEmulator, bot: BotState, chat: ChatState, p: Params, **fields: Any
) -> Message:
    inline, keyboard = _reply_markup(p)
    reply_to = _reply_to(p, chat)
    emu._check_rate(bot, chat)
    return emu._new_message(
        bot,
        chat,
        from_bot=True,
        reply_markup=inline,
        keyboard=keyboard,
        reply_to_message_id=reply_to,
        parse_mode=p.string("parse_mode"),
        **fields,
    )


@method("sendMessage")
def send_message(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat = emu._chat_for_send(bot, p.chat_id())
    text, entities = _text(p, "text", limit=4096, entities_name="entities")
    message = _bot_message(emu, bot, chat, p, text=text, entities=entities, source=p.string("text"))
    emu._record(
        bot,
        chat,
        Kind.BOT_MESSAGE,
        "bot",
        message_id=message.message_id,
        text=text,
        buttons=message.buttons(),
        data={"parse_mode": message.parse_mode} if message.parse_mode else {},
    )
    return message.wire()


@method("sendChatAction")
def send_chat_action(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    emu._chat_for_send(bot, p.chat_id())
    p.text("action")
    return True


@method("sendPhoto")
def send_photo(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat = emu._chat_for_send(bot, p.chat_id())
    stored = emu._resolve_file(p.file("photo"), kind="photo")
    caption, entities = _text(p, "caption", limit=1024, entities_name="caption_entities")
    width, height = _image_size(stored.data) if stored.data else (512, 512)
    sizes = [
        {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "file_size": len(stored.data or b""),
        }
    ]
    message = _bot_message(
        emu,
        bot,
        chat,
        p,
        caption=caption if p.has("caption") else None,
        caption_entities=entities,
        source=p.string("caption"),
        photo=stored.data,
        photo_url=stored.url,
        file_id=stored.file_id,
        media={"photo": sizes},
    )
    emu._record(
        bot,
        chat,
        Kind.BOT_PHOTO,
        "bot",
        message_id=message.message_id,
        text=message.caption,
        buttons=message.buttons(),
        data={"file_id": stored.file_id, "size": len(stored.data or b""), "url": stored.url},
    )
    return message.wire()


def file_wire(stored: StoredFile, kind: str, p: Params | None = None) -> dict[str, Any]:
    """The wire object of a document, video or animation (``Video``, ``Animation``...)."""
    out: dict[str, Any] = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_name": stored.filename,
        "mime_type": stored.mime_type,
        "file_size": len(stored.data or b""),
    }
    if kind in ("video", "animation"):
        out["width"] = (p.integer("width") if p else None) or 640
        out["height"] = (p.integer("height") if p else None) or 360
        out["duration"] = (p.integer("duration") if p else None) or 5
    return out


_FILE_KINDS = {
    "document": Kind.BOT_DOCUMENT,
    "video": Kind.BOT_VIDEO,
    "animation": Kind.BOT_ANIMATION,
}


def _send_file(emu: TelegramEmulator, bot: BotState, p: Params, kind: str) -> dict[str, Any]:
    """``sendDocument``, ``sendVideo``, ``sendAnimation``: as Telegram does, an animation's
    message carries its file as ``document`` too."""
    chat = emu._chat_for_send(bot, p.chat_id())
    stored = emu._resolve_file(p.file(kind), kind=kind)
    caption, entities = _text(p, "caption", limit=1024, entities_name="caption_entities")
    wire = file_wire(stored, kind, p)
    media = {kind: wire}
    if kind == "animation":
        media["document"] = file_wire(stored, "document")
    message = _bot_message(
        emu,
        bot,
        chat,
        p,
        caption=caption if p.has("caption") else None,
        caption_entities=entities,
        source=p.string("caption"),
        document=stored.data,
        document_name=stored.filename,
        file_id=stored.file_id,
        media=media,
    )
    emu._record(
        bot,
        chat,
        _FILE_KINDS[kind],
        "bot",
        message_id=message.message_id,
        text=message.caption,
        buttons=message.buttons(),
        data={"file_id": stored.file_id, "file_name": stored.filename},
    )
    return message.wire()


@method("sendDocument")
def send_document(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    return _send_file(emu, bot, p, "document")


@method("sendVideo")
def send_video(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    return _send_file(emu, bot, p, "video")


@method("sendAnimation")
def send_animation(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    return _send_file(emu, bot, p, "animation")


@method("getFile")
def get_file(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    stored = emu.files.get(p.text("file_id"))
    if stored is None:
        raise bad_request("invalid file_id")
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data or b""),
        "file_path": stored.file_path,
    }


def _image_size(data: bytes) -> tuple[int, int]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                height = int.from_bytes(data[i + 5 : i + 7], "big")
                width = int.from_bytes(data[i + 7 : i + 9], "big")
                return width, height
            i += 2 + length
    if data.startswith(b"GIF8") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return 512, 512


def is_image(data: bytes) -> bool:
    return (
        data.startswith(b"\x89PNG\r\n\x1a\n")
        or data.startswith(b"\xff\xd8\xff")
        or data.startswith(b"GIF8")
        or (data.startswith(b"RIFF") and data[8:12] == b"WEBP")
        or data.startswith(b"BM")
    )


# -- editing ----------------------------------------------------------------------------


def _message_to_edit(emu: TelegramEmulator, bot: BotState, p: Params) -> tuple[ChatState, Message]:
    if p.has("inline_message_id"):
        raise bad_request("MESSAGE_ID_INVALID")
    chat_id = p.chat_id()
    chat = bot.chats.get(chat_id)
    if chat is None:
        raise bad_request("chat not found")
    emu._chat_for_send(bot, chat_id)
    message_id = p.required_int("message_id")
    message = chat.messages.get(message_id)
    if message is None or message.deleted:
        raise bad_request("message to edit not found")
    if not message.from_bot:
        raise bad_request("message can't be edited")
    return chat, message


_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)


def _apply_edit(
    emu: TelegramEmulator,
    bot: BotState,
    chat: ChatState,
    message: Message,
    what: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    if all(getattr(message, k) == v for k, v in changes.items()):
        raise bad_request(_NOT_MODIFIED)
    for key, value in changes.items():
        setattr(message, key, value)
    message.edits += 1
    message.edit_date = emu._now()
    emu._record(
        bot,
        chat,
        Kind.EDIT,
        "bot",
        message_id=message.message_id,
        text=message.content,
        buttons=message.buttons(),
        data={"what": what},
    )
    return message.wire()


@method("editMessageText")
def edit_message_text(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat, message = _message_to_edit(emu, bot, p)
    text, entities = _text(p, "text", limit=4096, entities_name="entities")
    if message.text is None:
        raise bad_request("there is no text in the message to edit")
    inline, _ = _reply_markup(p)
    changes = {"text": text, "entities": entities, "reply_markup": inline}
    message.source = p.string("text")
    return _apply_edit(emu, bot, chat, message, "text", changes)


@method("editMessageCaption")
def edit_message_caption(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat, message = _message_to_edit(emu, bot, p)
    if message.text is not None:
        raise bad_request("there is no caption in the message to edit")
    caption, entities = _text(p, "caption", limit=1024, entities_name="caption_entities")
    inline, _ = _reply_markup(p)
    changes = {
        "caption": caption if p.has("caption") else None,
        "caption_entities": entities,
        "reply_markup": inline,
    }
    return _apply_edit(emu, bot, chat, message, "caption", changes)


@method("editMessageReplyMarkup")
def edit_message_reply_markup(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat, message = _message_to_edit(emu, bot, p)
    inline, _ = _reply_markup(p)
    return _apply_edit(emu, bot, chat, message, "reply_markup", {"reply_markup": inline})


DELETE_WITHIN = 48 * 3600
"""A message can only be deleted if it was sent less than 48 hours ago (Bot API)."""


@method("deleteMessage")
def delete_message(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    chat = bot.chats.get(p.chat_id())
    if chat is None:
        raise bad_request("chat not found")
    message_id = p.required_int("message_id")
    message = chat.messages.get(message_id)
    if message is None or message.deleted:
        raise bad_request("message to delete not found")
    if emu._now() - message.date >= DELETE_WITHIN:
        raise bad_request("message can't be deleted")
    message.deleted = True
    emu._record(bot, chat, Kind.DELETE, "bot", message_id=message_id, text=message.content)
    return True


@method("answerCallbackQuery")
def answer_callback_query(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    press = bot.presses.get(p.text("callback_query_id"))
    if press is None or press.answered:
        raise bad_request(QUERY_TOO_OLD)
    text = p.string("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    press.answered = True
    press.answer_text = text
    press.show_alert = p.flag("show_alert")
    press.url = p.string("url")
    press.answered_event.set()
    chat = bot.chats[press.chat_id]
    emu._record(
        bot,
        chat,
        Kind.CALLBACK_ANSWER,
        "bot",
        message_id=press.message_id,
        text=text,
        data={"query_id": press.id, "show_alert": press.show_alert, "url": press.url},
    )
    return True


# -- payments ---------------------------------------------------------------------------


def _prices(p: Params) -> list[dict[str, Any]]:
    value = p.json("prices", required=True)
    if not isinstance(value, list) or not value:
        raise bad_request("can't parse prices JSON object")
    prices = []
    for price in value:
        label = price.get("label") if isinstance(price, dict) else None
        amount = price.get("amount") if isinstance(price, dict) else None
        if not isinstance(label, str) or not label:
            raise bad_request("can't parse labeled price: Label must be non-empty")
        if isinstance(amount, str) and amount.lstrip("-").isdigit():
            amount = int(amount)
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise bad_request('can\'t parse labeled price: Field "amount" must be a Number')
        prices.append({"label": label, "amount": amount})
    return prices


def _invoice(p: Params, *, link: bool) -> Invoice:
    title = p.text("title")
    description = p.text("description")
    payload = p.text("payload")
    currency = p.text("currency")
    prices = _prices(p)
    provider_token = p.string("provider_token") or ""
    if not 1 <= len(title) <= 32:
        raise bad_request("TITLE_INVALID")
    if not 1 <= len(description) <= 255:
        raise bad_request("DESCRIPTION_INVALID")
    if not 1 <= len(payload.encode()) <= 128:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise bad_request("CURRENCY_INVALID")
    if currency == "XTR":
        if len(prices) != 1 or provider_token or (p.integer("max_tip_amount") or 0) > 0:
            raise bad_request("STARS_INVOICE_INVALID")
    elif not provider_token:
        raise bad_request("PAYMENT_PROVIDER_INVALID")
    if sum(price["amount"] for price in prices) <= 0:
        raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    period = p.integer("subscription_period") if link else None
    if period is not None:
        if currency != "XTR" or period != 2592000:
            raise bad_request("SUBSCRIPTION_PERIOD_INVALID")
        if prices[0]["amount"] > 10000:
            raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    start_parameter = p.string("start_parameter") or ""
    if start_parameter and not START_PARAMETER.fullmatch(start_parameter):
        raise bad_request("START_PARAM_INVALID")
    return Invoice(
        title=title,
        description=description,
        payload=payload,
        currency=currency,
        prices=prices,
        provider_token=provider_token,
        start_parameter=start_parameter,
        subscription_period=period,
        params=p.summary(),
    )


@method("sendInvoice")
def send_invoice(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    chat = emu._chat_for_send(bot, p.chat_id())
    invoice = _invoice(p, link=False)
    inline, _ = _reply_markup(p)
    if inline is not None:
        first = buttons_of(inline)
        if not first or not first[0] or not first[0][0].pay:
            raise bad_request("REPLY_MARKUP_BUY_EMPTY")
    message = _bot_message(emu, bot, chat, p, invoice=invoice)
    invoice.chat_id = chat.id
    invoice.message_id = message.message_id
    emu._record(
        bot,
        chat,
        Kind.INVOICE,
        "bot",
        message_id=message.message_id,
        text=invoice.title,
        buttons=message.buttons(),
        data={
            "payload": invoice.payload,
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "description": invoice.description,
        },
    )
    return message.wire()


@method("createInvoiceLink")
def create_invoice_link(emu: TelegramEmulator, bot: BotState, p: Params) -> str:
    invoice = _invoice(p, link=True)
    invoice.link = f"https://t.me/${secrets.token_urlsafe(12)}"
    bot.invoice_links[invoice.link] = invoice
    emu._touch()
    return invoice.link


@method("answerPreCheckoutQuery")
def answer_pre_checkout_query(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    query_id = p.text("pre_checkout_query_id")
    if not p.has("ok"):
        raise bad_request('parameter "ok" is required')
    ok = p.flag("ok")
    error_message = p.string("error_message")
    query = bot.pre_checkouts.get(query_id)
    if query is None or query.closed:
        if query is not None:
            emu._record(
                bot,
                bot.chats[query.chat_id],
                Kind.PRE_CHECKOUT_ANSWER,
                "bot",
                data={"query_id": query_id, "ok": ok, "late": True},
            )
        raise bad_request(QUERY_TOO_OLD)
    if not ok and not error_message:
        raise bad_request("ERROR_MESSAGE_EMPTY")
    query.ok = ok
    query.error_message = error_message
    query.closed = True
    query.answered.set()
    emu._record(
        bot,
        bot.chats[query.chat_id],
        Kind.PRE_CHECKOUT_ANSWER,
        "bot",
        text=error_message,
        data={"query_id": query_id, "ok": ok, "late": False},
    )
    return True


@method("refundStarPayment")
def refund_star_payment(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    user_id = p.required_int("user_id")
    if user_id <= 0:
        raise bad_request("invalid user_id specified")
    charge_id = p.text("telegram_payment_charge_id")
    payment = bot.payments.get(charge_id)
    if payment is None or payment.user_id != user_id or not payment.is_stars:
        raise bad_request("CHARGE_NOT_FOUND")
    if payment.refunded:
        raise bad_request("CHARGE_ALREADY_REFUNDED")
    emu._refund(bot, payment)
    return True


@method("getStarTransactions")
def get_star_transactions(emu: TelegramEmulator, bot: BotState, p: Params) -> dict[str, Any]:
    offset = max(0, p.integer("offset", default=0) or 0)
    limit = min(100, max(1, p.integer("limit", default=100) or 100))
    return {"transactions": [dict(t) for t in bot.star_transactions[offset : offset + limit]]}


@method("editUserStarSubscription")
def edit_user_star_subscription(emu: TelegramEmulator, bot: BotState, p: Params) -> bool:
    user_id = p.required_int("user_id")
    payment = bot.payments.get(p.text("telegram_payment_charge_id"))
    if (
        payment is None
        or payment.user_id != user_id
        or payment.subscription_expiration_date is None
    ):
        raise bad_request("CHARGE_NOT_FOUND")
    p.flag("is_canceled")
    return True


def new_query_id() -> str:
    return str(secrets.randbits(62))
