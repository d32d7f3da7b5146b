"""The Telegram emulator driven by a real aiogram Bot and Dispatcher."""

from __future__ import annotations

import struct
import zlib
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from aiogram import Dispatcher, F
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
)
from aiogram.types import Message as AiogramMessage

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.telegram import (
    Kind,
    Limits,
    Retention,
    TelegramEmulator,
    WaitTimeout,
    polling,
)


def png_image(width: int = 21, height: int = 21) -> bytes:
    """A small valid PNG (white pixels), as a QR code picture would be sent."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\xff\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in pairs]
    )


async def test_get_me_unknown_token_and_method() -> None:
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        me = await run_asyncio(bot.get_me)
        assert me.id == emulator.bot_id
        assert me.is_bot and me.username == "vpn_test_bot"

        async with emulator.bot_client("123:not-a-registered-token") as stranger:
            with pytest.raises(TelegramUnauthorizedError):
                await run_asyncio(stranger.get_me)

        with pytest.raises(TelegramNotFound):
            await run_asyncio(bot.get_chat_member_count, chat_id=1)
    assert emulator.counters["answered.401"] == 1
    assert emulator.counters["answered.404"] == 1
    assert not emulator.internal_errors


async def test_start_keyboard_press_and_edit() -> None:
    emulator = TelegramEmulator()
    dispatcher = Dispatcher()
    seen_languages: list[str | None] = []

    @dispatcher.message(CommandStart())
    async def start(message: AiogramMessage) -> None:
        assert message.from_user is not None
        seen_languages.append(message.from_user.language_code)
        await message.answer(
            "Welcome, <b>friend</b>!",
            parse_mode="HTML",
            reply_markup=keyboard(("Try it", "trial"), ("Buy", "buy")),
        )

    @dispatcher.callback_query(F.data == "trial")
    async def trial(query: CallbackQuery) -> None:
        await query.answer("Starting…")
        assert isinstance(query.message, AiogramMessage)
        await query.message.edit_text("Your trial is on", reply_markup=keyboard(("Open", "open")))

    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user(first_name="Ann", username="ann", language_code="de")
        async with polling(dispatcher, bot):
            hello = user.send_command("start")
            welcome = await user.wait_for_message(after=hello, timeout=30)
            assert welcome.text == "Welcome, friend!"
            assert welcome.source == "Welcome, <b>friend</b>!"
            assert welcome.entities == [{"type": "bold", "offset": 9, "length": 6}]
            assert [b.text for row in welcome.buttons() for b in row] == ["Try it", "Buy"]
            assert welcome.message_id == hello.message_id + 1
            assert welcome.chat_id == user.id

            press = user.press(welcome, text="Try it")
            await emulator.wait_for_answer(press, timeout=30)
            assert press.answer_text == "Starting…"
            edited = await user.wait_for_message(
                lambda m: m.text == "Your trial is on", after=hello, timeout=5
            )
            assert edited.message_id == welcome.message_id
            assert edited.edits == 1 and edited.edit_date is not None
            assert edited.button(data="open").text == "Open"

    assert seen_languages == ["de"]
    kinds = [e.kind for e in user.transcript()]
    assert kinds == [
        Kind.USER_MESSAGE,
        Kind.BOT_MESSAGE,
        Kind.BUTTON_PRESS,
        Kind.CALLBACK_ANSWER,
        Kind.EDIT,
    ]
    assert emulator.presses(unanswered=True) == []
    assert not emulator.internal_errors


async def test_long_polling_offsets_and_conflicts() -> None:
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        user.send_text("one")
        user.send_text("two")

        first = await run_asyncio(bot.get_updates)
        assert [u.message.text for u in first if u.message] == ["one", "two"]
        again = await run_asyncio(bot.get_updates)
        assert [u.update_id for u in again] == [u.update_id for u in first]

        confirmed = await run_asyncio(bot.get_updates, offset=first[-1].update_id + 1)
        assert confirmed == []
        assert emulator.pending_updates() == []

        # A long poll returns as soon as an update arrives, long before its 30 s are up.
        results: list[Any] = []

        async def long_poll() -> None:
            results.extend(await run_asyncio(bot.get_updates, timeout=30))

        async with trio.open_nursery() as nursery:
            polls = emulator.counters["calls.getUpdates"]
            nursery.start_soon(long_poll)
            await emulator.wait_until(
                lambda: emulator.counters["calls.getUpdates"] > polls, timeout=30
            )
            started = trio.current_time()
            user.send_text("three")
        assert trio.current_time() - started < 20
        assert [u.message.text for u in results if u.message] == ["three"]

        # A second getUpdates ends the one still waiting with 409.
        conflicts: list[BaseException] = []

        async def waiting_poll() -> None:
            try:
                await run_asyncio(bot.get_updates, offset=results[-1].update_id + 1, timeout=5)
            except TelegramConflictError as error:
                conflicts.append(error)

        async with trio.open_nursery() as nursery:
            polls = emulator.counters["calls.getUpdates"]
            nursery.start_soon(waiting_poll)
            await emulator.wait_until(
                lambda: emulator.counters["calls.getUpdates"] > polls, timeout=30
            )
            assert await run_asyncio(bot.get_updates, offset=results[-1].update_id + 1) == []
        assert len(conflicts) == 1
        assert "terminated by other getUpdates request" in str(conflicts[0])

        # getUpdates while a webhook is set: 409.
        await run_asyncio(bot.set_webhook, "http://127.0.0.1:9/hook")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await run_asyncio(bot.get_updates)
        await run_asyncio(bot.delete_webhook)

        # limit, a negative offset, and allowed_updates filtering later updates.
        for n in range(3):
            user.send_text(f"m{n}")
        limited = await run_asyncio(bot.get_updates, limit=2)
        assert [u.message.text for u in limited if u.message] == ["m0", "m1"]
        last = await run_asyncio(bot.get_updates, offset=-1)
        assert [u.message.text for u in last if u.message] == ["m2"]
        await run_asyncio(
            bot.get_updates, offset=last[-1].update_id + 1, allowed_updates=["callback_query"]
        )
        user.send_text("filtered out")
        assert await run_asyncio(bot.get_updates) == []
        assert emulator.counters["updates.filtered"] == 1
    assert emulator.counters["conflicts"] == 2  # the ended long poll and the webhook


async def test_a_long_poll_ends_when_its_client_gives_up() -> None:
    """A client that closes its connection ends its long poll at once, not when the poll's
    two minutes are up: its next getUpdates finds no poll of its own still waiting (which
    would be answered 409)."""
    emulator = TelegramEmulator()
    async with emulator.running() as url, asyncio_loop(), emulator.bot_client() as bot:
        address = urlsplit(url)
        host, port = address.hostname or "", address.port or 80
        body = b"timeout=120"
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(
            f"POST /bot{emulator.token}/getUpdates HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await emulator.wait_until(
            lambda: emulator.counters["calls.getUpdates"], timeout=30, what="the long poll"
        )
        await stream.aclose()
        await emulator.wait_until(
            lambda: emulator.counters["abandoned"], timeout=30, what="the poll's end"
        )

        # A poll still waiting would be answered 409 by this one.
        assert await run_asyncio(bot.get_updates) == []
        user = emulator.create_user()
        user.send_text("after the client left")
        updates = await run_asyncio(bot.get_updates, timeout=5)
        assert [u.message.text for u in updates if u.message] == ["after the client left"]
    assert emulator.counters["conflicts"] == 0
    assert emulator.counters["abandoned"] == 1


async def test_rate_limits_answer_429_with_retry_after() -> None:
    emulator = TelegramEmulator(limits=Limits(per_chat_rate=1, per_chat_burst=2))
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        ann = emulator.create_user()
        bob = emulator.create_user()
        await run_asyncio(bot.send_message, ann.id, "1")
        await run_asyncio(bot.send_message, ann.id, "2")
        with pytest.raises(TelegramRetryAfter) as caught:
            await run_asyncio(bot.send_message, ann.id, "3")
        assert caught.value.retry_after >= 1
        # another chat has its own bucket
        await run_asyncio(bot.send_message, bob.id, "to bob")
        assert [m.text for m in ann.messages()] == ["1", "2"]
        assert emulator.counters["answered.429"] == 1
        assert emulator.counters["rate_limited"] == 1

        # the overall limit of one bot
        emulator.limits = Limits(global_rate=1, global_burst=3)
        users = [emulator.create_user() for _ in range(4)]
        for user in users[:3]:
            await run_asyncio(bot.send_message, user.id, "hello")
        with pytest.raises(TelegramRetryAfter):
            await run_asyncio(bot.send_message, users[3].id, "hello")

        emulator.limits = Limits.off()
        for _ in range(50):
            await run_asyncio(bot.send_message, ann.id, "flood")
        assert emulator.counters["answered.429"] == 2


async def test_blocked_and_unknown_users() -> None:
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        stranger = emulator.create_user(opened=False)
        user.block()
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await run_asyncio(bot.send_message, user.id, "are you there?")
        with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
            await run_asyncio(bot.send_message, stranger.id, "hi")
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await run_asyncio(bot.send_message, 999, "hi")

        updates = await run_asyncio(bot.get_updates)
        assert updates[-1].my_chat_member is not None
        assert updates[-1].my_chat_member.new_chat_member.status == "kicked"

        user.unblock(restart=True)
        await run_asyncio(bot.send_message, user.id, "welcome back")
        kinds = [e.kind for e in user.transcript()]
        assert kinds == [Kind.BLOCKED, Kind.UNBLOCKED, Kind.USER_MESSAGE, Kind.BOT_MESSAGE]
    assert emulator.counters["answered.403"] == 2


async def test_photo_and_document_bytes_are_kept() -> None:
    png = png_image(37, 41)
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        sent = await run_asyncio(
            bot.send_photo,
            user.id,
            BufferedInputFile(png, "qr.png"),
            caption="Scan <i>me</i>",
            parse_mode="HTML",
            reply_markup=keyboard(("Done", "done")),
        )
        assert sent.photo and (sent.photo[-1].width, sent.photo[-1].height) == (37, 41)
        message = emulator.last_message(user.id)
        assert message is not None
        assert message.photo == png
        assert message.caption == "Scan me"
        assert emulator.file_bytes(sent.photo[-1].file_id) == png

        # the same file again by file_id, and downloaded the way aiogram does it
        await run_asyncio(bot.send_photo, user.id, sent.photo[-1].file_id)
        downloaded = await run_asyncio(bot.download, sent.photo[-1].file_id)
        assert downloaded is not None and downloaded.read() == png

        with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
            await run_asyncio(bot.send_photo, user.id, BufferedInputFile(b"<svg/>", "qr.svg"))
        document = await run_asyncio(
            bot.send_document, user.id, BufferedInputFile(b"[Interface]\n", "vpn.conf")
        )
        assert document.document is not None
        assert document.document.file_name == "vpn.conf"
        assert emulator.last_message(user.id).document == b"[Interface]\n"  # type: ignore[union-attr]


async def test_edit_rules_and_markup_errors() -> None:
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        sent = await run_asyncio(
            bot.send_message, user.id, "Pick", reply_markup=keyboard(("A", "a"))
        )
        with pytest.raises(TelegramBadRequest, match="message is not modified"):
            await run_asyncio(
                bot.edit_message_text,
                text="Pick",
                chat_id=user.id,
                message_id=sent.message_id,
                reply_markup=keyboard(("A", "a")),
            )
        # editing the text without reply_markup drops the keyboard, as Telegram does
        await run_asyncio(
            bot.edit_message_text, text="Picked", chat_id=user.id, message_id=sent.message_id
        )
        assert emulator.message(user.id, sent.message_id).buttons() == []
        await run_asyncio(
            bot.edit_message_reply_markup,
            chat_id=user.id,
            message_id=sent.message_id,
            reply_markup=keyboard(("B", "b")),
        )
        assert emulator.message(user.id, sent.message_id).button(data="b").text == "B"
        with pytest.raises(TelegramBadRequest, match="message to edit not found"):
            await run_asyncio(bot.edit_message_text, text="x", chat_id=user.id, message_id=99)

        with pytest.raises(TelegramBadRequest, match="can't parse entities"):
            await run_asyncio(bot.send_message, user.id, "1 < 2", parse_mode="HTML")
        with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
            await run_asyncio(bot.send_message, user.id, "v1.0", parse_mode="MarkdownV2")
        with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
            await run_asyncio(
                bot.send_message, user.id, "long", reply_markup=keyboard(("x", "d" * 65))
            )
        with pytest.raises(TelegramBadRequest, match="message text is empty"):
            await run_asyncio(bot.send_message, user.id, " ")
        assert await run_asyncio(bot.delete_message, user.id, sent.message_id)
        kinds = [e.kind for e in user.transcript()]
        assert kinds == [Kind.BOT_MESSAGE, Kind.EDIT, Kind.EDIT, Kind.DELETE]


async def test_wait_for_message_says_what_the_chat_saw() -> None:
    emulator = TelegramEmulator()
    user = emulator.create_user()
    user.send_text("hello?")
    with pytest.raises(WaitTimeout) as caught:
        await user.wait_for_message(timeout=0.1)
    assert "'hello?'" in str(caught.value)


async def test_limits_and_chats_are_per_bot() -> None:
    emulator = TelegramEmulator(limits=Limits(global_rate=1, global_burst=2))
    other_id = emulator.add_bot("7000000002:AASecondBotToken_abcdefghijklmnop", username="b2")
    async with (
        emulator.running(),
        asyncio_loop(),
        emulator.bot_client() as first,
        emulator.bot_client("7000000002:AASecondBotToken_abcdefghijklmnop") as second,
    ):
        users = [emulator.create_user() for _ in range(3)]
        for user in users:
            emulator.send_text(user.id, "hi", bot=other_id)
        await run_asyncio(first.send_message, users[0].id, "a")
        await run_asyncio(first.send_message, users[1].id, "b")
        with pytest.raises(TelegramRetryAfter):
            await run_asyncio(first.send_message, users[2].id, "c")
        # the second bot has its own buckets, chats and message ids
        sent = await run_asyncio(second.send_message, users[2].id, "from the second bot")
        assert sent.message_id == 2  # after the user's "hi" in that chat
        assert (await run_asyncio(second.get_me)).username == "b2"
        assert [m.text for m in emulator.messages(users[2].id, bot=other_id)] == [
            "hi",
            "from the second bot",
        ]
        assert emulator.messages(users[2].id) == []
        assert len(await run_asyncio(second.get_updates)) == 3
        assert await run_asyncio(first.get_updates) == []


async def test_a_bounded_emulator_keeps_the_newest_history_only() -> None:
    """The sandbox's emulator runs for days: what it keeps per chat, of the updates and of
    the calls is bounded, the newest kept, and the bot sees every update all the same."""
    emulator = TelegramEmulator(
        limits=Limits.off(), retention=Retention(per_chat=6, updates=10, calls=7)
    )
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: AiogramMessage) -> None:
        await message.answer(f"echo {message.text}")

    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        async with polling(dispatcher, bot):
            for n in range(30):
                sent = user.send_text(f"m{n}")
                echo_text = f"echo m{n}"
                await user.wait_for_message(lambda m, t=echo_text: m.text == t, after=sent)
    texts = [m.text for m in user.messages()]
    assert texts == ["m27", "echo m27", "m28", "echo m28", "m29", "echo m29"]
    assert [e.text for e in user.transcript()] == texts
    assert len(emulator.calls) == 7
    assert emulator.calls[-1].method in ("getUpdates", "sendMessage")
    history = emulator._bot(None).history
    assert len(history) == 10
    assert sorted(history) == list(range(min(history), min(history) + 10))
    assert emulator.counters["updates"] == 30
    assert not emulator.internal_errors
