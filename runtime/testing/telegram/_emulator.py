"""The emulator object: Bot API state, the simulated users, and what tests observe."""

from __future__ import annotations

import itertools
import math
import mimetypes
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import trio

from ._errors import ApiError, EmulatorError, WaitTimeout, bad_request, forbidden
from ._forwarding import copy_buttons, parse_deep_link, payable_invoice
from ._limits import Limits, Outage, RateLimiter, ScriptedFault
from ._methods import METHODS, Described, file_wire, is_image, new_query_id
from ._params import FileRef, Params
from ._state import (
    KEEP_EVERYTHING,
    ApiCall,
    BotState,
    Button,
    ButtonPress,
    ChatState,
    Forwarded,
    Invoice,
    Kind,
    Message,
    Payment,
    PaymentResult,
    PendingUpdate,
    PreCheckout,
    Retention,
    Signal,
    StoredFile,
    TranscriptEntry,
    call_log,
    keep_newest,
    peek,
)

if TYPE_CHECKING:
    import socket

    import httpx
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

T = TypeVar("T")

DEFAULT_TOKEN = "7000000001:AAEmulatedBotTokenForTests_01234567"
"""The token of the emulator's first bot unless another is given."""

Duplicate = Literal["same_update", "new_update"] | None


class SimUser:
    """A simulated Telegram user; its methods are the emulator's, with this user filled in."""

    def __init__(
        self,
        emulator: TelegramEmulator,
        id: int,
        first_name: str,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_premium: bool = False,
    ) -> None:
        self.emulator = emulator
        self.id = id
        self.first_name = first_name
        self.last_name = last_name
        self.username = username
        self.language_code = language_code
        self.is_premium = is_premium

    def __repr__(self) -> str:
        return f"SimUser(id={self.id}, first_name={self.first_name!r})"

    @property
    def chat_id(self) -> int:
        """The id of this user's private chat with a bot (the same as the user id)."""
        return self.id

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            out["last_name"] = self.last_name
        if self.username:
            out["username"] = self.username
        if self.language_code:
            out["language_code"] = self.language_code
        if self.is_premium:
            out["is_premium"] = True
        return out

    def send_text(
        self, text: str, *, bot: int | None = None, reply_to: int | None = None
    ) -> Message:
        return self.emulator.send_text(self.id, text, bot=bot, reply_to=reply_to)

    def send_command(self, command: str, args: str = "", *, bot: int | None = None) -> Message:
        return self.emulator.send_command(self.id, command, args, bot=bot)

    def send_media(
        self,
        kind: Literal["photo", "video", "animation", "document"],
        caption: str | None = None,
        *,
        reply_to: int | None = None,
        bot: int | None = None,
    ) -> Message:
        return self.emulator.send_media(self.id, kind, caption, reply_to=reply_to, bot=bot)

    def press(
        self,
        message: int | Message,
        *,
        data: str | None = None,
        text: str | None = None,
        bot: int | None = None,
    ) -> ButtonPress:
        return self.emulator.press(self.id, message, data=data, text=text, bot=bot)

    async def pay(
        self,
        message: int | Message | None = None,
        *,
        link: str | None = None,
        forwarded: Forwarded | None = None,
        duplicate: Duplicate = None,
        bot: int | None = None,
    ) -> PaymentResult:
        return await self.emulator.pay(
            self.id, message, link=link, forwarded=forwarded, duplicate=duplicate, bot=bot
        )

    def forward(
        self, message: int | Message, to: SimUser | int, *, bot: int | None = None
    ) -> Forwarded:
        return self.emulator.forward(self.id, message, to, bot=bot)

    def open_link(self, url: str) -> Message:
        return self.emulator.open_link(self.id, url)

    def block(self, *, bot: int | None = None) -> None:
        self.emulator.block(self.id, bot=bot)

    def unblock(self, *, restart: bool = False, bot: int | None = None) -> None:
        self.emulator.unblock(self.id, restart=restart, bot=bot)

    def transcript(
        self,
        *,
        kinds: Sequence[Kind | str] | None = None,
        after: int | None = None,
        bot: int | None = None,
    ) -> list[TranscriptEntry]:
        return self.emulator.transcript(self.id, kinds=kinds, after=after, bot=bot)

    def messages(self, *, from_bot: bool | None = None, bot: int | None = None) -> list[Message]:
        return self.emulator.messages(self.id, from_bot=from_bot, bot=bot)

    def last_message(self, *, bot: int | None = None) -> Message | None:
        return self.emulator.last_message(self.id, bot=bot)

    async def wait_for_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        after: int | Message | None = None,
        bot: int | None = None,
    ) -> Message:
        return await self.emulator.wait_for_message(
            self.id, predicate, timeout=timeout, after=after, bot=bot
        )


def _command_entity(text: str) -> list[dict[str, Any]]:
    """A ``/command`` at the start of a text or caption gets its ``bot_command`` entity."""
    if not text.startswith("/"):
        return []
    command = text.split(maxsplit=1)[0] if text.strip() else "/"
    return [{"type": "bot_command", "offset": 0, "length": len(command)}]


class TelegramEmulator:
    """A Telegram Bot API server for tests and demos, with simulated users.

    Serve it with ``async with emulator.running() as url`` (hypercorn on trio, 127.0.0.1,
    an ephemeral port) and point aiogram at it:
    ``AiohttpSession(api=TelegramAPIServer.from_base(url))`` (``emulator.session()``,
    ``emulator.make_bot()``). Drive users with ``create_user`` and the ``SimUser`` methods;
    observe with ``transcript``, ``messages``, ``payments``, ``counters`` and the
    ``wait_for_*`` helpers. The same controls are served over HTTP under ``/_control/``.

    ``counters`` keys: ``calls``, ``calls.<method>``, ``answered.<status>`` (every answer by
    HTTP status, e.g. ``answered.429``), ``rate_limited`` (429s from the flood limits),
    ``faults`` (scripted faults used), ``conflicts`` (409s to getUpdates), ``updates``,
    ``updates.filtered`` (dropped by ``allowed_updates``), ``updates.repeated``,
    ``webhook.attempts``, ``webhook.delivered``, ``webhook.failed``, ``payments``,
    ``payments.declined``, ``payments.expired``, ``refunds``, ``emulator_errors``,
    ``abandoned`` (calls that could wait, a long poll say, ended because their client left).
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "vpn_test_bot",
        bot_name: str = "VPN Test Bot",
        limits: Limits | None = None,
        pre_checkout_timeout: float = 10.0,
        webhook_retry_delays: Sequence[float] = (0.2, 1.0, 3.0),
        webhook_timeout: float = 10.0,
        webhook_recheck: float = 30.0,
        retention: Retention = KEEP_EVERYTHING,
        allow_reset: bool = False,
    ) -> None:
        self.url = ""
        self.allow_reset = allow_reset
        """Serve ``POST /_control/reset`` (``clear_chats``): the sandbox's page may start a
        new conversation; a test's emulator keeps what it saw."""
        self.counters: Counter[str] = Counter()
        self.retention = retention
        """How much history is kept (everything by default)."""
        self.calls = call_log(retention.calls)
        """The last Bot API calls answered (``ApiCall``), oldest first."""
        self.files: dict[str, StoredFile] = {}
        self.internal_errors: list[BaseException] = []
        """Exceptions inside the emulator itself (answered 500); a test may assert none."""
        self.pre_checkout_timeout = pre_checkout_timeout
        """Seconds a bot has to answer a pre-checkout query (Telegram: 10)."""
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        """Pauses between attempts to deliver one update; after the last the update waits
        (kept) until a new update, ``setWebhook``, ``flush_webhook()`` or ``webhook_recheck``."""
        self.webhook_timeout = webhook_timeout
        self.webhook_recheck = webhook_recheck
        self._limits = limits if limits is not None else Limits()
        self._users: dict[int, SimUser] = {}
        self._user_ids = itertools.count(100000001)
        self._deactivated: set[int] = set()
        self._bots: dict[int, BotState] = {}
        self._first_update_id: dict[int, int] = {}
        """Per bot, the first update id this emulator made (older ones were restored)."""
        self._tokens: dict[str, BotState] = {}
        self._faults: list[ScriptedFault] = []
        self._outage: Outage | None = None
        self._changed = Signal()
        self.revision = 0
        """Counts changes to what the emulator keeps (``snapshot`` is stale once it grows)."""
        self._seq = itertools.count(1)
        self._numbers = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self.token = token
        self.bot_id = self.add_bot(token, username=bot_username, first_name=bot_name)

    # -- bots --------------------------------------------------------------------------

    def add_bot(self, token: str, *, username: str, first_name: str = "Test Bot") -> int:
        """Another bot (its own chats, updates, webhook, limits); returns its id."""
        left, _, right = token.partition(":")
        if not left.isdigit() or not right:
            raise EmulatorError(f"not a bot token: {token[:12]}...")
        bot = BotState(
            id=int(left),
            token=token,
            username=username,
            first_name=first_name,
            limiter=RateLimiter(self._limits),
        )
        self._bots[bot.id] = bot
        self._tokens[token] = bot
        self._first_update_id[bot.id], bot.update_ids = peek(bot.update_ids)
        if self._nursery is not None:
            from ._webhook import webhook_worker

            self._nursery.start_soon(webhook_worker, self, bot)
        return bot.id

    def _bot(self, bot: int | None) -> BotState:
        if bot is None:
            return self._bots[self.bot_id]
        try:
            return self._bots[bot]
        except KeyError:
            raise EmulatorError(f"no bot {bot}") from None

    @property
    def bots(self) -> list[int]:
        return list(self._bots)

    # -- serving -----------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(url)``.

        ``sock``: a socket bound and listening already, served instead of ``host:port``
        (the caller keeps it open and closes it)."""
        from ._server import serve

        await serve(self, host=host, port=port, sock=sock, task_status=task_status)

    @asynccontextmanager
    async def running(self, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve inside the current trio run; yields the base URL."""
        async with trio.open_nursery() as nursery:
            url: str = await nursery.start(
                lambda task_status: self.serve(host=host, port=port, task_status=task_status)
            )
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()

    def api_server(self) -> TelegramAPIServer:
        """aiogram's server description for this emulator (needs it running)."""
        from aiogram.client.telegram import TelegramAPIServer

        if not self.url:
            raise EmulatorError("the emulator is not running")
        return TelegramAPIServer.from_base(self.url)

    def session(self, **kwargs: Any) -> AiohttpSession:
        from aiogram.client.session.aiohttp import AiohttpSession

        return AiohttpSession(api=self.api_server(), **kwargs)

    def make_bot(self, token: str | None = None, **kwargs: Any) -> Bot:
        """An aiogram ``Bot`` talking to this emulator (close its session when done)."""
        from aiogram import Bot

        return Bot(token or self.token, session=self.session(), **kwargs)

    @asynccontextmanager
    async def bot_client(self, token: str | None = None, **kwargs: Any) -> AsyncIterator[Bot]:
        """``make_bot()`` whose session is closed on exit (needs ``asyncio_loop()``)."""
        from runtime.bridge import run_asyncio

        bot = self.make_bot(token, **kwargs)
        try:
            yield bot
        finally:
            with trio.CancelScope(shield=True):
                await run_asyncio(bot.session.close)

    # -- users -------------------------------------------------------------------------

    def create_user(
        self,
        user_id: int | None = None,
        first_name: str = "Test",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        is_premium: bool = False,
        opened: bool = True,
        bot: int | None = None,
    ) -> SimUser:
        """A Telegram user. With ``opened`` the private chat with the bot exists (as if
        the user had opened it), so the bot may write first; without it the bot gets 403
        ``bot can't initiate conversation with a user`` until the user writes."""
        if user_id is None:
            user_id = next(self._user_ids)
            while user_id in self._users:
                user_id = next(self._user_ids)
        if user_id <= 0:
            raise EmulatorError("user ids are positive")
        if user_id in self._users:
            raise EmulatorError(f"user {user_id} exists")
        user = SimUser(
            self,
            user_id,
            first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            is_premium=is_premium,
        )
        self._users[user_id] = user
        if opened:
            self._private_chat(self._bot(bot), user)
        self._touch()
        return user

    def user(self, user_id: int) -> SimUser:
        try:
            return self._users[user_id]
        except KeyError:
            raise EmulatorError(f"no user {user_id}") from None

    @property
    def users(self) -> list[SimUser]:
        return list(self._users.values())

    def create_group(
        self, chat_id: int, title: str = "Test group", *, bot: int | None = None
    ) -> int:
        """A group chat the bot is a member of (ids are negative)."""
        if chat_id >= 0:
            raise EmulatorError("group chat ids are negative")
        state = self._bot(bot)
        if chat_id not in state.chats:
            state.chats[chat_id] = ChatState(
                id=chat_id,
                type="group",
                wire={"id": chat_id, "type": "group", "title": title},
                instance=str(secrets.randbits(63)),
            )
        self._touch()
        return chat_id

    def _private_chat(self, bot: BotState, user: SimUser) -> ChatState:
        chat = bot.chats.get(user.id)
        if chat is None:
            wire: dict[str, Any] = {"id": user.id, "type": "private", "first_name": user.first_name}
            if user.last_name:
                wire["last_name"] = user.last_name
            if user.username:
                wire["username"] = user.username
            chat = bot.chats[user.id] = ChatState(
                id=user.id,
                type="private",
                wire=wire,
                user_id=user.id,
                instance=str(secrets.randbits(63)),
            )
        return chat

    def _acting(self, user_id: int, bot: int | None) -> tuple[BotState, SimUser]:
        state = self._bot(bot)
        user = self.user(user_id)
        if user.id in state.blocked:
            raise EmulatorError(f"user {user_id} has blocked the bot: unblock first")
        if user.id in self._deactivated:
            raise EmulatorError(f"user {user_id} is deactivated")
        return state, user

    # -- what users do ---------------------------------------------------------------

    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        bot: int | None = None,
        chat_id: int | None = None,
        reply_to: int | None = None,
    ) -> Message:
        """The user sends ``text`` (a ``/command`` gets its ``bot_command`` entity), in
        reply to message ``reply_to`` if given."""
        state, user = self._acting(user_id, bot)
        if chat_id is None or chat_id == user.id:
            chat = self._private_chat(state, user)
        else:
            found = state.chats.get(chat_id)
            if found is None or found.type == "private":
                raise EmulatorError(f"no group {chat_id}")
            chat = found
        entities = _command_entity(text)
        if reply_to is not None and reply_to not in chat.messages:
            raise EmulatorError(f"no message {reply_to} in the chat to reply to")
        message = self._new_message(
            state,
            chat,
            from_bot=False,
            sender=user.wire(),
            text=text,
            entities=entities,
            reply_to_message_id=reply_to,
        )
        self._record(
            state, chat, Kind.USER_MESSAGE, "user", message_id=message.message_id, text=text
        )
        self._enqueue(state, "message", self._with_reply(chat, message))
        return message

    @staticmethod
    def _with_reply(chat: ChatState, message: Message) -> dict[str, Any]:
        wire = message.wire()
        if message.reply_to_message_id is not None:
            wire["reply_to_message"] = chat.messages[message.reply_to_message_id].wire()
        return wire

    def send_media(
        self,
        user_id: int,
        kind: Literal["photo", "video", "animation", "document"],
        caption: str | None = None,
        *,
        data: bytes | None = None,
        filename: str | None = None,
        reply_to: int | None = None,
        bot: int | None = None,
    ) -> Message:
        """The user sends a photo, video, animation or document, with an optional caption
        (a ``/command`` in it gets its ``bot_command`` entity) or as a reply to
        ``reply_to``. The file is kept: the bot can send it again by its ``file_id``."""
        state, user = self._acting(user_id, bot)
        chat = self._private_chat(state, user)
        names = {"photo": "photo.jpg", "video": "clip.mp4", "animation": "loop.mp4"}
        name = filename or names.get(kind, "file.pdf")
        number = next(self._numbers)
        prefix = {"photo": "AgACAgIAAxkBAAI", "video": "BAACAgIAAxkBAAI"}.get(
            kind, "CgACAgIAAxkBAAI" if kind == "animation" else "BQACAgIAAxkBAAI"
        )
        stored = StoredFile(
            f"{prefix}{number:06d}{secrets.token_urlsafe(24)}",
            f"AQAD{number:04d}{secrets.token_urlsafe(6)}",
            data if data is not None else secrets.token_bytes(64),
            name,
            mimetypes.guess_type(name)[0] or "application/octet-stream",
            f"{kind}s/file_{number}",
        )
        self.files[stored.file_id] = stored
        if kind == "photo":
            media: dict[str, Any] = {
                "photo": [
                    {
                        "file_id": stored.file_id,
                        "file_unique_id": stored.file_unique_id,
                        "width": 1280,
                        "height": 720,
                        "file_size": len(stored.data or b""),
                    }
                ]
            }
        else:
            media = {kind: file_wire(stored, kind)}
            if kind == "animation":
                media["document"] = file_wire(stored, "document")
        entities = _command_entity(caption or "")
        if reply_to is not None and reply_to not in chat.messages:
            raise EmulatorError(f"no message {reply_to} in the chat to reply to")
        message = self._new_message(
            state,
            chat,
            from_bot=False,
            sender=user.wire(),
            caption=caption,
            caption_entities=entities,
            file_id=stored.file_id,
            media=media,
            reply_to_message_id=reply_to,
        )
        self._record(
            state, chat, Kind.USER_MESSAGE, "user", message_id=message.message_id, text=caption
        )
        self._enqueue(state, "message", self._with_reply(chat, message))
        return message

    def send_command(
        self, user_id: int, command: str, args: str = "", *, bot: int | None = None
    ) -> Message:
        """The user sends ``/command args`` (``send_command(uid, "start", "ref_42")``)."""
        text = "/" + command.lstrip("/")
        if args:
            text += " " + args
        return self.send_text(user_id, text, bot=bot)

    def press(
        self,
        user_id: int,
        message: int | Message,
        *,
        data: str | None = None,
        text: str | None = None,
        bot: int | None = None,
    ) -> ButtonPress:
        """The user presses an inline button of a bot message (found by its callback
        ``data`` or by a part of its ``text``; the only callback button when neither is
        given). The bot gets a ``callback_query`` and must answer it."""
        state, user = self._acting(user_id, bot)
        chat = self._private_chat(state, user)
        message_id = message.message_id if isinstance(message, Message) else message
        found = chat.messages.get(message_id)
        if found is None or found.deleted or not found.from_bot:
            raise EmulatorError(f"no bot message {message_id} in chat {chat.id}")
        button = self._find_button(found, data=data, text=text)
        if button.callback_data is None:
            raise EmulatorError(f"button {button.text!r} sends no callback query")
        press = ButtonPress(
            id=new_query_id(),
            user_id=user.id,
            chat_id=chat.id,
            message_id=found.message_id,
            data=button.callback_data,
            button_text=button.text,
            date=self._now(),
        )
        state.presses[press.id] = press
        keep_newest(state.presses, self.retention.updates)
        self._record(
            state,
            chat,
            Kind.BUTTON_PRESS,
            "user",
            message_id=found.message_id,
            text=button.text,
            data={"data": button.callback_data, "query_id": press.id},
        )
        update = self._enqueue(
            state,
            "callback_query",
            {
                "id": press.id,
                "from": user.wire(),
                "message": found.wire(),
                "chat_instance": chat.instance,
                "data": button.callback_data,
            },
        )
        press.update_id = update.update_id if update else None
        return press

    @staticmethod
    def _find_button(message: Message, *, data: str | None, text: str | None) -> Button:
        buttons = [b for row in message.buttons() for b in row]
        if data is not None:
            matches = [b for b in buttons if b.callback_data == data]
        elif text is not None:
            matches = [b for b in buttons if b.text == text] or [
                b for b in buttons if text in b.text
            ]
        else:
            matches = [b for b in buttons if b.callback_data is not None]
            if len(matches) > 1:
                raise EmulatorError(
                    f"message {message.message_id} has several buttons; say which: "
                    f"{[b.text for b in matches]}"
                )
        if not matches:
            raise EmulatorError(
                f"no button {data or text!r} in message {message.message_id}: "
                f"{[[b.text for b in row] for row in message.buttons()]}"
            )
        return matches[0]

    async def pay(
        self,
        user_id: int,
        message: int | Message | None = None,
        *,
        link: str | None = None,
        forwarded: Forwarded | None = None,
        duplicate: Duplicate = None,
        bot: int | None = None,
    ) -> PaymentResult:
        """The user pays an invoice: the invoice message (the latest unpaid one when
        none is given), an invoice ``link``, or a ``forwarded`` copy they were sent (only
        when it has a Pay button: the invoice was sent without a ``start_parameter``; the
        payment then comes from this user, in their own chat with the bot).

        The bot gets a ``pre_checkout_query`` and has ``pre_checkout_timeout`` seconds to
        answer ``ok=true``; then a message with ``successful_payment`` follows. A late
        answer or ``ok=false`` cancels the payment. ``duplicate`` delivers the payment
        twice: ``"same_update"`` repeats the very update, ``"new_update"`` sends a second
        message with the same ``successful_payment``.
        """
        if forwarded is not None:
            bot = forwarded.bot_id
        state, user = self._acting(user_id, bot)
        chat = self._private_chat(state, user)
        if forwarded is not None:
            invoice = payable_invoice(forwarded, user.id)
        else:
            invoice = self._invoice_to_pay(state, chat, message, link)
        if invoice.expired:
            # a forwarded copy is the same invoice: it expired too
            raise EmulatorError(
                f"INVOICE_EXPIRED: the invoice in message {invoice.message_id} expired"
            )
        query = PreCheckout(new_query_id(), invoice, user.id, chat.id)
        state.pre_checkouts[query.id] = query
        self._record(
            state,
            chat,
            Kind.PRE_CHECKOUT,
            "user",
            message_id=invoice.message_id,
            text=invoice.title,
            data={
                "query_id": query.id,
                "payload": invoice.payload,
                "currency": invoice.currency,
                "total_amount": invoice.total_amount,
            },
        )
        self._enqueue(
            state,
            "pre_checkout_query",
            {
                "id": query.id,
                "from": user.wire(),
                "currency": invoice.currency,
                "total_amount": invoice.total_amount,
                "invoice_payload": invoice.payload,
            },
        )
        with trio.move_on_after(self.pre_checkout_timeout):
            await query.answered.wait()
        if not query.answered.is_set():
            query.closed = True
            self.counters["payments.expired"] += 1
            self._record(
                state,
                chat,
                Kind.PAYMENT_CANCELLED,
                "telegram",
                message_id=invoice.message_id,
                data={"reason": "timeout", "query_id": query.id},
            )
            return PaymentResult("expired", invoice, query.id)
        if not query.ok:
            self.counters["payments.declined"] += 1
            self._record(
                state,
                chat,
                Kind.PAYMENT_CANCELLED,
                "telegram",
                message_id=invoice.message_id,
                text=query.error_message,
                data={"reason": "declined", "query_id": query.id},
            )
            return PaymentResult("declined", invoice, query.id, error_message=query.error_message)
        payment, paid = self._complete_payment(state, chat, user, invoice)
        if duplicate == "same_update":
            self.redeliver_payment(payment.telegram_payment_charge_id, bot=state.id)
        elif duplicate == "new_update":
            self.redeliver_payment(
                payment.telegram_payment_charge_id, same_update=False, bot=state.id
            )
        return PaymentResult("paid", invoice, query.id, payment=payment, message=paid)

    def _invoice_to_pay(
        self, bot: BotState, chat: ChatState, message: int | Message | None, link: str | None
    ) -> Invoice:
        if link is not None:
            invoice = bot.invoice_links.get(link)
            if invoice is None:
                raise EmulatorError(f"no invoice link {link}")
            return invoice
        if message is None:
            for candidate in reversed(list(chat.messages.values())):
                invoice = candidate.invoice
                if invoice is not None and not invoice.paid_by and not invoice.expired:
                    return invoice
            raise EmulatorError(f"no unpaid invoice in chat {chat.id}")
        message_id = message.message_id if isinstance(message, Message) else message
        found = chat.messages.get(message_id)
        if found is None or found.invoice is None or found.deleted:
            raise EmulatorError(f"message {message_id} in chat {chat.id} is not an invoice")
        if found.invoice.paid_by:
            raise EmulatorError(f"the invoice in message {message_id} is paid already")
        return found.invoice

    def _complete_payment(
        self, bot: BotState, chat: ChatState, user: SimUser, invoice: Invoice
    ) -> tuple[Payment, Message]:
        now = self._now()
        number = next(self._numbers)
        if invoice.is_stars:
            charge_id = f"stxEmu{number:06d}{secrets.token_urlsafe(18)}"
            provider_charge_id = ""
        else:
            charge_id = f"{now}_{user.id}_{number}"
            provider_charge_id = f"pay_emu_{number}_{secrets.token_hex(8)}"
        message = self._new_message(bot, chat, from_bot=False, sender=user.wire())
        payment = Payment(
            telegram_payment_charge_id=charge_id,
            provider_payment_charge_id=provider_charge_id,
            user_id=user.id,
            chat_id=chat.id,
            currency=invoice.currency,
            total_amount=invoice.total_amount,
            invoice_payload=invoice.payload,
            date=now,
            message_id=message.message_id,
            update_id=None,
            subscription_expiration_date=(
                now + invoice.subscription_period if invoice.subscription_period else None
            ),
        )
        message.successful_payment = payment.successful_payment()
        bot.payments[charge_id] = payment
        invoice.paid_by.append(user.id)
        if invoice.is_stars:
            bot.star_transactions.append(
                {
                    "id": charge_id,
                    "amount": invoice.total_amount,
                    "date": now,
                    "source": {
                        "type": "user",
                        "transaction_type": "invoice_payment",
                        "user": user.wire(),
                        "invoice_payload": invoice.payload,
                    },
                }
            )
        self.counters["payments"] += 1
        self._record(
            bot,
            chat,
            Kind.PAYMENT,
            "user",
            message_id=message.message_id,
            text=invoice.title,
            data=dict(message.successful_payment),
        )
        update = self._enqueue(bot, "message", message.wire())
        payment.update_id = update.update_id if update else None
        return payment, message

    def forward(
        self,
        user_id: int,
        message: int | Message,
        to: SimUser | int,
        *,
        bot: int | None = None,
    ) -> Forwarded:
        """``user_id`` forwards a bot message of their chat with the bot to another user.
        The copy is in a chat between the two users: the bot sees nothing (see
        ``Forwarded`` for what an invoice's copy offers)."""
        state, user = self._acting(user_id, bot)
        receiver = self.user(to if isinstance(to, int) else to.id)
        chat = self._private_chat(state, user)
        message_id = message.message_id if isinstance(message, Message) else message
        found = chat.messages.get(message_id)
        if found is None or found.deleted or not found.from_bot:
            raise EmulatorError(f"no bot message {message_id} in chat {chat.id}")
        copy = Forwarded(
            id=next(self._numbers),
            bot_id=state.id,
            original=found,
            from_user_id=user.id,
            to_user_id=receiver.id,
            buttons=copy_buttons(found, state.username),
        )
        self.counters["forwards"] += 1
        self._touch()
        return copy

    def open_link(self, user_id: int, url: str) -> Message:
        """The user opens a ``t.me`` link to a bot: with ``?start=<parameter>`` the bot
        gets ``/start <parameter>`` from them (a deep link), else ``/start``."""
        username, parameter = parse_deep_link(url)
        matches = [b for b in self._bots.values() if b.username.lower() == username.lower()]
        if not matches:
            raise EmulatorError(f"no bot @{username}")
        return self.send_command(user_id, "start", parameter or "", bot=matches[0].id)

    def redeliver_payment(
        self, charge_id: str, *, same_update: bool = True, bot: int | None = None
    ) -> None:
        """Deliver a ``successful_payment`` again: the same update (as after a crash
        before it was confirmed) or a second message carrying the same payment."""
        state = self._bot(bot)
        payment = state.payments.get(charge_id)
        if payment is None:
            raise EmulatorError(f"no payment {charge_id}")
        if same_update:
            if payment.update_id is None:
                raise EmulatorError("that payment was never delivered (allowed_updates)")
            self.repeat_update(payment.update_id, bot=state.id)
            return
        chat = state.chats[payment.chat_id]
        user = self.user(payment.user_id)
        message = self._new_message(
            state,
            chat,
            from_bot=False,
            sender=user.wire(),
            successful_payment=payment.successful_payment(),
        )
        self._record(
            state,
            chat,
            Kind.PAYMENT,
            "user",
            message_id=message.message_id,
            data={**payment.successful_payment(), "duplicate": True},
        )
        self._enqueue(state, "message", message.wire())

    def expire_invoice(self, chat_id: int, message_id: int, *, bot: int | None = None) -> Invoice:
        """The invoice in a message can no longer be paid: paying it fails with
        ``INVOICE_EXPIRED`` (as a stale payment form does), the bot is told nothing."""
        state = self._bot(bot)
        chat = state.chats.get(chat_id)
        found = chat.messages.get(message_id) if chat is not None else None
        if chat is None or found is None or found.invoice is None or found.deleted:
            raise EmulatorError(f"message {message_id} in chat {chat_id} is not an invoice")
        invoice = found.invoice
        if invoice.paid_by:
            raise EmulatorError(f"the invoice in message {message_id} is paid already")
        if not invoice.expired:
            invoice.expired = True
            self._record(
                state,
                chat,
                Kind.INVOICE_EXPIRED,
                "telegram",
                message_id=message_id,
                text=invoice.title,
                data={"payload": invoice.payload},
            )
        return invoice

    def refund_payment(self, charge_id: str, *, bot: int | None = None) -> Payment:
        """Telegram gives a Stars payment back to the user (support, a dispute): the
        same ``refunded_payment`` message and update as ``refundStarPayment`` makes, with
        the same refusals."""
        state = self._bot(bot)
        payment = state.payments.get(charge_id)
        if payment is None or not payment.is_stars:
            raise EmulatorError(f"CHARGE_NOT_FOUND: no Stars payment {charge_id}")
        if payment.refunded:
            raise EmulatorError(f"CHARGE_ALREADY_REFUNDED: {charge_id}")
        self._refund(state, payment)
        return payment

    def repeat_update(self, update_id: int, *, bot: int | None = None) -> None:
        """Deliver an update again, even if the bot confirmed it already."""
        state = self._bot(bot)
        original = state.history.get(update_id)
        if original is None:
            raise EmulatorError(f"no update {update_id}")
        self.counters["updates.repeated"] += 1
        self._enqueue(
            state, original.kind, original.payload, forced=True, update_id=original.update_id
        )

    def block(self, user_id: int, *, bot: int | None = None) -> None:
        """The user blocks the bot: sends to the chat get 403 ``bot was blocked by the
        user``; the bot gets a ``my_chat_member`` update (status ``kicked``)."""
        state = self._bot(bot)
        user = self.user(user_id)
        if user.id in state.blocked:
            return
        chat = self._private_chat(state, user)
        state.blocked.add(user.id)
        self._record(state, chat, Kind.BLOCKED, "user")
        self._enqueue(state, "my_chat_member", self._member_change(state, chat, user, "kicked"))

    def unblock(self, user_id: int, *, restart: bool = False, bot: int | None = None) -> None:
        """The user unblocks the bot (``restart``: and sends ``/start``, as the app does)."""
        state = self._bot(bot)
        user = self.user(user_id)
        if user.id in state.blocked:
            chat = self._private_chat(state, user)
            state.blocked.discard(user.id)
            self._record(state, chat, Kind.UNBLOCKED, "user")
            self._enqueue(state, "my_chat_member", self._member_change(state, chat, user, "member"))
        if restart:
            self.send_command(user_id, "start", bot=bot)

    def deactivate(self, user_id: int) -> None:
        """The user deleted their account: sends get 403 ``user is deactivated``."""
        self.user(user_id)
        self._deactivated.add(user_id)
        self._touch()

    def _member_change(
        self, bot: BotState, chat: ChatState, user: SimUser, status: str
    ) -> dict[str, Any]:
        old = "member" if status == "kicked" else "kicked"
        return {
            "chat": chat.wire,
            "from": user.wire(),
            "date": self._now(),
            "old_chat_member": self._member(bot, old),
            "new_chat_member": self._member(bot, status),
        }

    @staticmethod
    def _member(bot: BotState, status: str) -> dict[str, Any]:
        member: dict[str, Any] = {"status": status, "user": bot.user_wire()}
        if status == "kicked":
            member["until_date"] = 0
        return member

    # -- keeping state across restarts -------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Users, chats, pending updates, payments and counters as JSON-ready data, within
        the ``retention`` limits (see ``_snapshot``); ``restore`` takes it back."""
        from ._snapshot import snapshot

        return snapshot(self)

    def restore(self, data: Any) -> None:
        """Take back the state of ``snapshot``; ``EmulatorError`` (and no change) when
        ``data`` is not one."""
        from ._snapshot import restore

        restore(self, data)

    async def wait_changed(self, revision: int) -> int:
        """Wait until ``revision`` is behind (something changed); returns the current one."""
        while self.revision == revision:
            await self._changed.wait()
        return self.revision

    def continue_after(self, update_id: int, *, bot: int | None = None) -> None:
        """Number the bot's next updates after ``update_id`` (the highest it has seen, from
        before a restart): a bot that skips ids it has seen would otherwise ignore them.
        Updates made since this emulator started and not yet taken are numbered again,
        in order; ones kept from before keep their ids (a repeat is a repeat)."""
        state = self._bot(bot)
        next_id, state.update_ids = peek(state.update_ids)
        if next_id > update_id:
            return
        floor = self._first_update_id.get(state.id, next_id)
        state.update_ids = itertools.count(update_id + 1)
        for pending in state.updates:
            if pending.update_id >= floor:
                old = pending.update_id
                pending.update_id = next(state.update_ids)
                if state.history.get(old) is pending:
                    del state.history[old]
                    state.history[pending.update_id] = pending
        self._first_update_id[state.id] = update_id + 1
        self._touch()

    def next_update_id(self, *, bot: int | None = None) -> int:
        state = self._bot(bot)
        value, state.update_ids = peek(state.update_ids)
        return value

    def clear_chats(self) -> None:
        """Forget every user, chat, pending update and payment (a new conversation); the
        counters go on, so the next user and update have ids never used before."""
        self._users.clear()
        self._deactivated.clear()
        self.files.clear()
        for state in self._bots.values():
            state.chats.clear()
            state.updates.clear()
            state.history.clear()
            state.presses.clear()
            state.pre_checkouts.clear()
            state.payments.clear()
            state.star_transactions.clear()
            state.invoice_links.clear()
            state.blocked.clear()
        self._touch()

    # -- faults and limits -------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        method: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
        body: str | None = None,
        applied: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (any but getUpdates when ``None``)
        with ``status``: 429 carries ``retry_after``; 403 says ``bot was blocked by the
        user`` unless ``description`` says otherwise; ``body`` replaces the JSON answer
        (an HTML page from a proxy). With ``applied`` the call takes effect first."""
        self._faults.append(
            ScriptedFault(
                method=method,
                status=status,
                times=times,
                retry_after=retry_after,
                description=description,
                body=body,
                applied=applied,
            )
        )

    def rate_limit_next(
        self, retry_after: int = 1, *, method: str | None = None, times: int = 1
    ) -> None:
        self.fail_next(429, method=method, times=times, retry_after=retry_after)

    def delay_next(
        self,
        seconds: float,
        *,
        method: str | None = None,
        times: int = 1,
        applied: bool = False,
    ) -> None:
        """Answer the next calls only after ``seconds`` (with ``applied``: the effect is
        immediate, only the answer is late, so a client timeout hides a success)."""
        self._faults.append(
            ScriptedFault(method=method, times=times, delay=seconds, applied=applied)
        )

    def hang_next(
        self, *, method: str | None = None, times: int = 1, applied: bool = False
    ) -> None:
        """Never answer the next calls (the client's timeout ends them)."""
        self.delay_next(math.inf, method=method, times=times, applied=applied)

    def clear_faults(self) -> None:
        self._faults.clear()

    def start_outage(
        self,
        status: int = 502,
        *,
        description: str | None = None,
        body: str | None = None,
        hang: bool = False,
        methods: Collection[str] | None = None,
        spared: Collection[str] = (),
    ) -> None:
        """Telegram unreachable until ``end_outage()``: every call (of ``methods`` only,
        when given; getUpdates included; none of ``spared``) is answered ``status`` (502
        ``Bad Gateway`` by default), or the raw ``body``, or with ``hang`` never answered.
        Calls have no effect; updates from users keep queueing, as Telegram keeps them.
        A second call replaces the outage."""
        self._outage = Outage(
            status=status,
            description=description,
            body=body,
            hang=hang,
            methods=None if methods is None else frozenset(m.lower() for m in methods),
            spared=frozenset(m.lower() for m in spared),
        )
        self._touch()

    def end_outage(self) -> None:
        self._outage = None
        self._touch()

    @property
    def outage(self) -> Outage | None:
        return self._outage

    @property
    def faults(self) -> list[ScriptedFault]:
        return list(self._faults)

    def _may_wait(self, method: str) -> bool:
        """Whether answering ``method`` may wait: a long poll, an outage (it may hang), a
        scripted fault (it may be a delay). Any other call is answered at once."""
        spec = METHODS.get(method.lower())
        return (spec is not None and spec.waits) or self._outage is not None or bool(self._faults)

    def _take_fault(self, method: str) -> ScriptedFault | None:
        for fault in self._faults:
            if fault.matches(method):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                self.counters["faults"] += 1
                return fault
        return None

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        for bot in self._bots.values():
            bot.limiter.reset(limits)

    # -- what tests observe ------------------------------------------------------------

    def _chat(self, chat_id: int, bot: int | None) -> ChatState | None:
        return self._bot(bot).chats.get(chat_id)

    def transcript(
        self,
        chat_id: int,
        *,
        bot: int | None = None,
        kinds: Sequence[Kind | str] | None = None,
        after: int | None = None,
    ) -> list[TranscriptEntry]:
        """Everything the chat saw, in order; ``after`` a ``seq``; only ``kinds``."""
        chat = self._chat(chat_id, bot)
        if chat is None:
            return []
        wanted = {Kind(k) for k in kinds} if kinds else None
        return [
            e
            for e in chat.transcript
            if (wanted is None or e.kind in wanted) and (after is None or e.seq > after)
        ]

    def format_transcript(self, chat_id: int, *, bot: int | None = None) -> str:
        entries = self.transcript(chat_id, bot=bot)
        if not entries:
            return f"(chat {chat_id} saw nothing)"
        return "\n".join(e.describe() for e in entries)

    def messages(
        self,
        chat_id: int,
        *,
        bot: int | None = None,
        from_bot: bool | None = None,
        include_deleted: bool = False,
    ) -> list[Message]:
        """The chat's messages as they are now (edits applied), oldest first."""
        chat = self._chat(chat_id, bot)
        if chat is None:
            return []
        return [
            m
            for m in chat.messages.values()
            if (from_bot is None or m.from_bot == from_bot) and (include_deleted or not m.deleted)
        ]

    def message(self, chat_id: int, message_id: int, *, bot: int | None = None) -> Message:
        chat = self._chat(chat_id, bot)
        if chat is None or message_id not in chat.messages:
            raise EmulatorError(f"no message {message_id} in chat {chat_id}")
        return chat.messages[message_id]

    def last_message(
        self, chat_id: int, *, from_bot: bool | None = True, bot: int | None = None
    ) -> Message | None:
        found = self.messages(chat_id, bot=bot, from_bot=from_bot)
        return found[-1] if found else None

    def presses(self, *, bot: int | None = None, unanswered: bool = False) -> list[ButtonPress]:
        return [p for p in self._bot(bot).presses.values() if not (unanswered and p.answered)]

    def payments(self, *, bot: int | None = None) -> list[Payment]:
        return list(self._bot(bot).payments.values())

    def payment(self, charge_id: str, *, bot: int | None = None) -> Payment:
        try:
            return self._bot(bot).payments[charge_id]
        except KeyError:
            raise EmulatorError(f"no payment {charge_id}") from None

    def star_transactions(self, *, bot: int | None = None) -> list[dict[str, Any]]:
        return [dict(t) for t in self._bot(bot).star_transactions]

    def invoice_links(self, *, bot: int | None = None) -> list[Invoice]:
        return list(self._bot(bot).invoice_links.values())

    def polls(self, *, bot: int | None = None) -> int:
        """How many ``getUpdates`` calls the bot has made (counted as each arrives)."""
        return self._bot(bot).poll_generation

    def pending_updates(self, *, bot: int | None = None) -> list[dict[str, Any]]:
        """Updates not yet confirmed (polling) or delivered (webhook)."""
        return [u.wire() for u in self._bot(bot).updates]

    def webhook_info(self, *, bot: int | None = None) -> dict[str, Any]:
        state = self._bot(bot)
        if state.webhook is None:
            return {
                "url": "",
                "has_custom_certificate": False,
                "pending_update_count": len(state.updates),
            }
        return state.webhook.info(len(state.updates))

    def flush_webhook(self, *, bot: int | None = None) -> None:
        """Try again now to deliver updates a failing webhook left pending."""
        state = self._bot(bot)
        if state.webhook is not None:
            state.webhook.stalled = False
        state.webhook_signal.fire()

    def file_bytes(self, file_id: str) -> bytes:
        stored = self.files.get(file_id)
        if stored is None or stored.data is None:
            raise EmulatorError(f"no file {file_id}")
        return stored.data

    def calls_of(self, method: str, *, bot: int | None = None) -> list[ApiCall]:
        """The answered calls of ``method`` (any case), oldest first."""
        wanted = method.lower()
        bot_id = self._bot(bot).id
        return [c for c in self.calls if c.method.lower() == wanted and c.bot_id == bot_id]

    def bot_commands(
        self, *, scope: str = "default", language_code: str = "", bot: int | None = None
    ) -> list[dict[str, Any]]:
        return list(self._bot(bot).commands.get(f"{scope}:{language_code}", []))

    # -- waiting -----------------------------------------------------------------------

    async def wait_until(
        self,
        condition: Callable[[], T | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        what: str = "the condition",
        chat_id: int | None = None,
        bot: int | None = None,
    ) -> T:
        """Wait until ``condition()`` is truthy and return its value. It is checked on
        every change in the emulator (and every 50 ms, for conditions on other state)."""
        with trio.move_on_after(timeout):
            while True:
                value = condition()
                if value:
                    return value
                with trio.move_on_after(0.05):
                    await self._changed.wait()
        detail = ""
        if chat_id is not None:
            detail = "\nthe chat saw:\n" + self.format_transcript(chat_id, bot=bot)
        raise WaitTimeout(f"{what} did not happen within {timeout} s{detail}")

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        after: int | Message | None = None,
        from_bot: bool | None = True,
        bot: int | None = None,
    ) -> Message:
        """The first message in the chat (a bot's unless ``from_bot`` says otherwise),
        newer than ``after`` (a message or its id), for which ``predicate`` holds. Edits
        count: a predicate on the text sees each edit."""
        floor = after.message_id if isinstance(after, Message) else (after or 0)

        def find() -> Message | None:
            for message in self.messages(chat_id, bot=bot, from_bot=from_bot):
                if message.message_id > floor and (predicate is None or predicate(message)):
                    return message
            return None

        return await self.wait_until(
            find, timeout=timeout, what=f"a message in chat {chat_id}", chat_id=chat_id, bot=bot
        )

    async def wait_for_entry(
        self,
        chat_id: int,
        kind: Kind | str | None = None,
        predicate: Callable[[TranscriptEntry], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        after: int | None = None,
        bot: int | None = None,
    ) -> TranscriptEntry:
        """The first transcript entry of ``kind`` (after the ``seq`` ``after``) for which
        ``predicate`` holds."""
        wanted = Kind(kind) if kind is not None else None

        def find() -> TranscriptEntry | None:
            for entry in self.transcript(chat_id, bot=bot, after=after):
                if (wanted is None or entry.kind == wanted) and (
                    predicate is None or predicate(entry)
                ):
                    return entry
            return None

        return await self.wait_until(
            find,
            timeout=timeout,
            what=f"a {wanted.value if wanted else 'transcript'} entry in chat {chat_id}",
            chat_id=chat_id,
            bot=bot,
        )

    async def wait_for_answer(
        self,
        press: ButtonPress,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
    ) -> ButtonPress:
        """Wait until the bot answered the callback query of ``press``."""
        with trio.move_on_after(timeout):
            await press.answered_event.wait()
            return press
        raise WaitTimeout(
            f"the bot did not answer the press of {press.button_text!r} within {timeout} s\n"
            + self.format_transcript(press.chat_id)
        )

    async def wait_drained(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        bot: int | None = None,
    ) -> None:
        """Wait until the bot has taken every update (confirmed or delivered)."""
        state = self._bot(bot)
        await self.wait_until(
            lambda: not state.updates or None,
            timeout=timeout,
            what=f"taking {len(state.updates)} pending updates",
        )

    # -- internals used by the methods, the server and the webhook --------------------

    @staticmethod
    def _now() -> int:
        return int(time.time())

    def _touch(self) -> None:
        self.revision += 1
        self._changed.fire()

    def _new_message(
        self,
        bot: BotState,
        chat: ChatState,
        *,
        from_bot: bool,
        sender: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Message:
        message = Message(
            chat_id=chat.id,
            message_id=next(chat.message_ids),
            date=self._now(),
            from_bot=from_bot,
            sender=sender if sender is not None else bot.user_wire(),
            chat=chat.wire,
            **fields,
        )
        chat.messages[message.message_id] = message
        keep_newest(chat.messages, self.retention.per_chat)
        self._touch()
        return message

    def _record(
        self,
        bot: BotState,
        chat: ChatState,
        kind: Kind,
        actor: Literal["bot", "user", "telegram"],
        *,
        message_id: int | None = None,
        text: str | None = None,
        buttons: list[list[Button]] | None = None,
        data: dict[str, Any] | None = None,
    ) -> TranscriptEntry:
        entry = TranscriptEntry(
            seq=next(self._seq),
            kind=kind,
            chat_id=chat.id,
            actor=actor,
            at=time.time(),
            message_id=message_id,
            text=text,
            buttons=buttons or [],
            data=data or {},
        )
        chat.transcript.append(entry)
        keep = self.retention.per_chat
        if keep is not None and len(chat.transcript) > keep:
            del chat.transcript[:-keep]
        self._touch()
        return entry

    def _enqueue(
        self,
        bot: BotState,
        kind: str,
        payload: dict[str, Any],
        *,
        forced: bool = False,
        update_id: int | None = None,
    ) -> PendingUpdate | None:
        if kind not in bot.allowed_updates and not forced:
            self.counters["updates.filtered"] += 1
            return None
        update = PendingUpdate(
            update_id if update_id is not None else next(bot.update_ids), kind, payload, forced
        )
        if not forced:
            bot.history[update.update_id] = update
            keep_newest(bot.history, self.retention.updates)
        index = len(bot.updates)
        while index > 0 and bot.updates[index - 1].update_id > update.update_id:
            index -= 1
        bot.updates.insert(index, update)
        self.counters["updates"] += 1
        bot.updates_signal.fire()
        if bot.webhook is not None:
            bot.webhook.stalled = False
        bot.webhook_signal.fire()
        self._touch()
        return update

    def _confirm(self, bot: BotState, offset: int) -> None:
        if offset > 0:
            bot.updates[:] = [u for u in bot.updates if u.forced or u.update_id >= offset]
        elif offset < 0:
            normal = [u for u in bot.updates if not u.forced]
            dropped = {id(u) for u in normal[: max(0, len(normal) + offset)]}
            bot.updates[:] = [u for u in bot.updates if id(u) not in dropped]
        self._touch()

    def _chat_for_send(self, bot: BotState, chat_id: int) -> ChatState:
        chat = bot.chats.get(chat_id)
        if chat is None:
            if chat_id in self._users:
                raise forbidden("bot can't initiate conversation with a user")
            raise bad_request("chat not found")
        if chat.user_id is not None:
            if chat.user_id in self._deactivated:
                raise forbidden("user is deactivated")
            if chat.user_id in bot.blocked:
                raise forbidden("bot was blocked by the user")
        return chat

    def _check_rate(self, bot: BotState, chat: ChatState) -> None:
        retry_after = bot.limiter.check(
            chat.id, group=chat.type != "private", now=trio.current_time()
        )
        if retry_after is not None:
            self.counters["rate_limited"] += 1
            raise ApiError(429, retry_after=retry_after)

    def _resolve_file(self, ref: FileRef, *, kind: str) -> StoredFile:
        if ref.file_id is not None:
            stored = self.files.get(ref.file_id)
            if stored is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return stored
        number = next(self._numbers)
        prefix = "AgACAgIAAxkDAAI" if kind == "photo" else "BQACAgIAAxkDAAI"
        file_id = f"{prefix}{number:06d}{secrets.token_urlsafe(24)}"
        unique = f"AQAD{number:04d}{secrets.token_urlsafe(6)}"
        if ref.upload is not None:
            data = ref.upload.data
            if not data:
                raise bad_request("file must be non-empty")
            if kind == "photo" and not is_image(data):
                raise bad_request("IMAGE_PROCESS_FAILED")
            filename = ref.upload.filename
            mime = mimetypes.guess_type(filename)[0] or ref.upload.content_type
            extension = mimetypes.guess_extension(mime) or ""
            stored = StoredFile(
                file_id, unique, data, filename, mime, f"{kind}s/file_{number}{extension}"
            )
        else:
            assert ref.url is not None
            name = ref.url.rsplit("/", 1)[-1] or "file"
            stored = StoredFile(
                file_id,
                unique,
                None,
                name,
                mimetypes.guess_type(name)[0] or "application/octet-stream",
                f"{kind}s/file_{number}",
                url=ref.url,
            )
        self.files[file_id] = stored
        return stored

    def _refund(self, bot: BotState, payment: Payment) -> None:
        payment.refunded = True
        now = self._now()
        user = self.user(payment.user_id)
        bot.star_transactions.append(
            {
                "id": payment.telegram_payment_charge_id,
                "amount": payment.total_amount,
                "date": now,
                "receiver": {
                    "type": "user",
                    "transaction_type": "invoice_payment",
                    "user": user.wire(),
                    "invoice_payload": payment.invoice_payload,
                },
            }
        )
        chat = bot.chats[payment.chat_id]
        refunded: dict[str, Any] = {
            "currency": payment.currency,
            "total_amount": payment.total_amount,
            "invoice_payload": payment.invoice_payload,
            "telegram_payment_charge_id": payment.telegram_payment_charge_id,
        }
        if payment.provider_payment_charge_id:
            refunded["provider_payment_charge_id"] = payment.provider_payment_charge_id
        message = self._new_message(
            bot, chat, from_bot=False, sender=user.wire(), refunded_payment=refunded
        )
        self.counters["refunds"] += 1
        self._record(
            bot, chat, Kind.REFUND, "telegram", message_id=message.message_id, data=refunded
        )
        self._enqueue(bot, "message", message.wire())

    async def _call(self, bot: BotState, method: str, params: Params) -> tuple[int, Any]:
        """Answer one Bot API call: ``(HTTP status, JSON answer or raw text body)``."""
        name = method.lower()
        spec = METHODS.get(name)
        self.counters["calls"] += 1
        self.counters[f"calls.{spec.name if spec else method}"] += 1
        status: int
        answer: Any
        try:
            if spec is None:
                raise ApiError(404, "Not Found")
            outage = self._outage
            if outage is not None and outage.matches(name):
                self.counters["outage"] += 1
                if outage.hang:
                    await trio.sleep_forever()
                raise ApiError(outage.status, outage.description, body=outage.body)
            fault = self._take_fault(name)
            if fault is not None and not fault.applied:
                await self._apply_fault(fault)
            result = await spec.call(self, bot, params)
            if fault is not None and fault.applied:
                await self._apply_fault(fault)
            if isinstance(result, Described):
                answer = {"ok": True, "result": result.result, "description": result.description}
            else:
                answer = {"ok": True, "result": result}
            status = 200
        except ApiError as error:
            status = error.code
            answer = error.body if error.body is not None else error.payload()
        except Exception as error:  # an emulator bug must not look like a hang
            self.internal_errors.append(error)
            self.counters["emulator_errors"] += 1
            status = 500
            answer = {
                "ok": False,
                "error_code": 500,
                "description": f"Internal Server Error: emulator bug: {error!r}",
            }
        self.counters[f"answered.{status}"] += 1
        self.calls.append(
            ApiCall(bot.id, spec.name if spec else method, params.summary(), status, time.time())
        )
        return status, answer

    @staticmethod
    async def _apply_fault(fault: ScriptedFault) -> None:
        if fault.delay:
            await trio.sleep(fault.delay)
        if fault.status is not None:
            raise ApiError(
                fault.status,
                fault.description,
                retry_after=fault.retry_after,
                body=fault.body,
            )
