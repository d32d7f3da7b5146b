"""The bot's HTTP session to the Bot API."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import GetMe, SendMessage
from aiogram.methods.base import Response
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from runtime.bot import _responses
from runtime.bot._dispatch import JsonBodySession, kept
from runtime.bot._responses import kept_response_models
from runtime.bridge import asyncio_loop, run_asyncio
from runtime.plugin_api.peer import shared_tls_context
from runtime.testing.telegram import TelegramEmulator

SENT: dict[str, Any] = {
    "message_id": 7,
    "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
    "chat": {"id": 5, "type": "private", "first_name": "Ann"},
    "date": 1_700_000_000,
    "text": "Menu",
}
ECHO: dict[str, Any] = {
    "inline_keyboard": [
        [{"text": "Plans", "callback_data": "nav:plans"}],
        [
            {"text": "Help", "callback_data": "nav:help"},
            {"text": "Site", "url": "https://example.com/"},
        ],
    ]
}


def test_sessions_verify_with_the_one_tls_context_of_the_process() -> None:
    """aiogram builds a TLS context (a copy of the whole CA bundle) per session; ours share
    the process's one."""
    first, second = JsonBodySession(), JsonBodySession()
    assert first._connector_init["ssl"] is shared_tls_context()
    assert second._connector_init["ssl"] is shared_tls_context()


def test_a_session_is_set_up_as_aiogram_sets_up_its_own() -> None:
    """Ours skips ``AiohttpSession.__init__`` (which builds a TLS context only for it to be
    replaced): every attribute aiogram's sets, with the same values but the context, so an
    aiogram release that changes them fails here first."""
    ours = JsonBodySession(api=TelegramAPIServer.from_base("http://127.0.0.1:1"), timeout=7)
    theirs = AiohttpSession(api=TelegramAPIServer.from_base("http://127.0.0.1:1"), timeout=7)
    assert vars(ours).keys() == vars(theirs).keys()
    for name, value in vars(theirs).items():
        if name == "_connector_init":
            assert value.keys() == ours._connector_init.keys()
            assert {**value, "ssl": None} == {**ours._connector_init, "ssl": None}
        elif name not in ("middleware",):
            assert getattr(ours, name) == value, name


def _menu() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text="Plans", callback_data="nav:plans")],
            [
                InlineKeyboardButton(text="Help", callback_data="nav:help"),
                InlineKeyboardButton(text="Site", url="https://example.com/"),
            ],
        ]
    )


async def test_a_kept_markup_stands_in_for_its_echo_and_others_are_parsed() -> None:
    """Telegram answers a sent message with the message, keyboard included. The echo of a
    kept markup is not parsed again: the result carries the kept markup itself. Any other
    markup is parsed from the answer as aiogram does."""
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop():
        user = emulator.create_user(first_name="Ann")
        bot = Bot(emulator.token, session=JsonBodySession(api=emulator.api_server()))
        try:
            menu = kept(_menu())
            first = await run_asyncio(bot.send_message, user.id, "Menu", reply_markup=menu)
            again = await run_asyncio(bot.send_message, user.id, "Menu", reply_markup=menu)
            fresh = _menu()
            other = await run_asyncio(bot.send_message, user.id, "Menu", reply_markup=fresh)
        finally:
            await run_asyncio(bot.session.close)
    assert first.reply_markup is menu and again.reply_markup is menu
    assert other.reply_markup is not fresh
    assert other.reply_markup.model_dump(exclude_none=True) == fresh.model_dump(exclude_none=True)
    assert (first.text, first.chat.id, again.message_id) == ("Menu", user.id, first.message_id + 1)
    assert first.bot is bot  # the rest of the result is parsed in the bot's context
    shown = user.last_message()
    assert shown is not None
    assert [b.text for row in shown.buttons() for b in row] == ["Plans", "Help", "Site"]


def _answer(result: dict[str, Any], *, ok: bool = True) -> str:
    return json.dumps({"ok": ok, "result": result} if ok else {"ok": False, "description": "x"})


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (200, _answer({**SENT, "reply_markup": {"inline_keyboard": []}})),  # changed
        (200, _answer(SENT)),  # no keyboard in the answer
        (200, _answer({}, ok=False)),
        (200, "not json"),
        (
            200,
            _answer({**SENT, "chat": "no chat", "reply_markup": ECHO}),
        ),  # invalid: aiogram's error, as usual
        (400, _answer({**SENT, "reply_markup": ECHO})),
    ],
    ids=["changed", "absent", "refused", "not-json", "invalid", "status"],
)
def test_an_echo_that_is_not_the_kept_markup_is_left_to_the_usual_parsing(
    status: int, content: str
) -> None:
    session = JsonBodySession()
    bot = Bot("123456:" + "A" * 35, session=session)
    method = SendMessage(chat_id=1, text="Menu", reply_markup=kept(_menu()))
    body = {"reply_markup": ECHO}
    assert session._result_echoing(bot, method, status, content, method.reply_markup, body) is None


async def test_an_answers_model_is_kept_from_its_methods_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic keeps parametrized models in a weak cache: the model of an answer must be
    held once its method is called, or it is built again after every collection. A method
    not called yet has nothing held (an idle service does not hold the models of all)."""
    monkeypatch.setattr(_responses, "_KEPT", {})  # as in a process that called nothing yet
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop():
        user = emulator.create_user(first_name="Ann")
        bot = Bot(emulator.token, session=JsonBodySession(api=emulator.api_server()))
        try:
            await run_asyncio(bot.get_me)
            assert SendMessage not in kept_response_models()
            await run_asyncio(bot.send_message, user.id, "one")
            held = kept_response_models()[SendMessage]
            gc.collect()
            await run_asyncio(bot.send_message, user.id, "two")
        finally:
            await run_asyncio(bot.session.close)
    assert kept_response_models()[SendMessage] is held
    assert Response[Message] is held  # what aiogram parses with: the held one, not rebuilt
    assert GetMe in kept_response_models()
