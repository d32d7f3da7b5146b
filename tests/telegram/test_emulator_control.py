"""Scripted faults, the HTTP control API, other clients' body formats, text formatting."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest
import trio
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
)

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.telegram import ApiError, Kind, TelegramEmulator
from runtime.testing.telegram._formatting import parse


def png_bytes(width: int = 21, height: int = 21) -> bytes:
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


async def test_scripted_faults() -> None:
    emulator = TelegramEmulator()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        emulator.fail_next(502, method="sendMessage")
        with pytest.raises(TelegramServerError):
            await run_asyncio(bot.send_message, user.id, "a")

        emulator.fail_next(502, body="<html><body>502 Bad Gateway</body></html>")
        with pytest.raises(ClientDecodeError):
            await run_asyncio(bot.send_message, user.id, "b")

        emulator.rate_limit_next(7)
        with pytest.raises(TelegramRetryAfter) as caught:
            await run_asyncio(bot.send_message, user.id, "c")
        assert caught.value.retry_after == 7

        emulator.fail_next(403)
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await run_asyncio(bot.send_message, user.id, "d")
        assert user.messages() == []  # refused calls have no effect

        # a fault for "any method" leaves getUpdates alone
        emulator.fail_next(500)
        assert await run_asyncio(bot.get_updates) == []
        with pytest.raises(TelegramServerError):
            await run_asyncio(bot.get_me)

        emulator.delay_next(0.3, method="sendMessage")
        started = trio.current_time()
        await run_asyncio(bot.send_message, user.id, "slow")
        assert trio.current_time() - started >= 0.3

        # the worst case: the message is sent, the answer never comes
        emulator.hang_next(method="sendMessage", applied=True)
        with pytest.raises(TelegramNetworkError):
            await run_asyncio(bot.send_message, user.id, "lost answer", request_timeout=1)
        assert [m.text for m in user.messages()] == ["slow", "lost answer"]
    assert emulator.counters["faults"] == 7
    assert emulator.counters["answered.429"] == 1
    assert emulator.faults == []


async def test_an_outage_refuses_every_call_until_it_ends() -> None:
    emulator = TelegramEmulator()
    async with (
        emulator.running() as url,
        httpx.AsyncClient(base_url=f"{url}/_control") as control,
        asyncio_loop(),
        emulator.bot_client() as bot,
    ):
        user = emulator.create_user()
        emulator.start_outage()
        for call in (bot.get_me, bot.get_updates, lambda: bot.send_message(user.id, "a")):
            with pytest.raises(TelegramServerError, match="Bad Gateway"):
                await run_asyncio(call)
        user.send_text("kept while Telegram is away")

        # a proxy's page for some methods; the spared ones work
        put = await control.put(
            "/outage",
            json={"status": 502, "body": "<html>502</html>", "spared": ["getUpdates"]},
        )
        assert put.json()["spared"] == ["getupdates"] and put.json()["methods"] is None
        [update] = await run_asyncio(bot.get_updates)
        assert update.message is not None and update.message.text == "kept while Telegram is away"
        with pytest.raises(ClientDecodeError):
            await run_asyncio(bot.send_message, user.id, "b")

        # no answer at all: the client's timeout ends the call
        emulator.start_outage(hang=True, methods=["sendMessage"])
        with pytest.raises(TelegramNetworkError):
            await run_asyncio(bot.send_message, user.id, "c", request_timeout=1)
        assert await run_asyncio(bot.get_me)

        assert (await control.delete("/outage")).json() is None and emulator.outage is None
        await run_asyncio(bot.send_message, user.id, "d")
    assert [m.text for m in user.messages(from_bot=True)] == ["d"]  # refused calls did nothing
    assert emulator.counters["outage"] == 5


async def test_other_clients_json_and_multipart_bodies() -> None:
    emulator = TelegramEmulator()
    png = png_bytes()
    async with emulator.running() as url, httpx.AsyncClient(base_url=url) as http:
        user = emulator.create_user()
        base = f"/bot{emulator.token}"
        answer = await http.post(
            f"{base}/sendMessage",
            json={
                "chat_id": user.id,
                "text": "*bold*",
                "parse_mode": "MarkdownV2",
                "reply_markup": {"inline_keyboard": [[{"text": "Go", "url": "https://x.y"}]]},
            },
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["text"] == "bold"
        assert result["entities"] == [{"type": "bold", "offset": 0, "length": 4}]
        assert result["reply_markup"]["inline_keyboard"][0][0]["url"] == "https://x.y"

        answer = await http.post(
            f"{base}/sendPhoto",
            data={"chat_id": str(user.id), "caption": "qr"},
            files={"photo": ("qr.png", png, "image/png")},
        )
        assert answer.status_code == 200, answer.text
        assert emulator.last_message(user.id).photo == png  # type: ignore[union-attr]

        answer = await http.get(f"{base}/sendMessage", params={"chat_id": user.id})
        assert answer.status_code == 400
        assert answer.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: message text is empty",
        }
        answer = await http.post(f"{base}/noSuchMethod")
        assert answer.status_code == 404
        emulator.rate_limit_next(3)
        answer = await http.post(f"{base}/sendMessage", json={"chat_id": user.id, "text": "x"})
        assert answer.status_code == 429
        assert answer.json()["parameters"] == {"retry_after": 3}
    assert not emulator.internal_errors


async def test_http_control_api() -> None:
    emulator = TelegramEmulator(pre_checkout_timeout=3)
    async with (
        emulator.running() as url,
        httpx.AsyncClient(base_url=f"{url}/_control") as control,
        asyncio_loop(),
        emulator.bot_client() as bot,
    ):
        created = await control.post(
            "/users", json={"id": 4242, "first_name": "Web", "language_code": "ru"}
        )
        assert created.json() == {
            "id": 4242,
            "is_bot": False,
            "first_name": "Web",
            "language_code": "ru",
        }
        sent = await control.post("/users/4242/commands", json={"command": "start"})
        assert sent.json()["text"] == "/start"
        [update] = await run_asyncio(bot.get_updates)
        assert update.message is not None and update.message.text == "/start"

        # a long poll of the transcript wakes up on the bot's reply
        seq = emulator.transcript(4242)[-1].seq
        entries: list[dict[str, object]] = []

        async def watch() -> None:
            answer = await control.get("/chats/4242/transcript", params={"after": seq, "wait": 3})
            entries.extend(answer.json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.sleep(0.1)
            await run_asyncio(bot.send_message, 4242, "Привет")
        assert [(e["kind"], e["text"]) for e in entries] == [("bot_message", "Привет")]

        # paying over HTTP while the bot answers the pre-checkout query
        await run_asyncio(
            bot.send_invoice,
            4242,
            title="VPN",
            description="VPN",
            payload="web-1",
            currency="XTR",
            prices=[LabeledPrice(label="x", amount=1)],
        )

        async def answer_pre_checkout() -> None:
            offset = update.update_id + 1
            while True:
                for got in await run_asyncio(bot.get_updates, offset=offset, timeout=1):
                    offset = got.update_id + 1
                    if got.pre_checkout_query is not None:
                        await run_asyncio(
                            bot.answer_pre_checkout_query, got.pre_checkout_query.id, ok=True
                        )
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_pre_checkout)
            paid = (await control.post("/users/4242/payments", json={})).json()
        assert paid["status"] == "paid"
        assert paid["payment"]["invoice_payload"] == "web-1"
        payments = (await control.get("/payments")).json()
        assert [p["telegram_payment_charge_id"] for p in payments] == [
            paid["payment"]["telegram_payment_charge_id"]
        ]

        # a press over HTTP, answered by the bot; the photo the bot sent, as bytes
        pick = await run_asyncio(
            bot.send_photo,
            4242,
            BufferedInputFile(png_bytes(), "qr.png"),
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="Done", callback_data="done")]]
            ),
        )

        async def answer_press() -> None:
            await emulator.wait_until(lambda: emulator.presses(unanswered=True), timeout=30)
            [press] = emulator.presses(unanswered=True)
            await run_asyncio(bot.answer_callback_query, press.id, text="OK")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_press)
            pressed = await control.post(
                "/users/4242/presses",
                json={"message_id": pick.message_id, "text": "Done", "wait": 3},
            )
        assert pressed.json()["answered"] is True and pressed.json()["answer_text"] == "OK"
        [photo_message] = [
            m for m in (await control.get("/chats/4242/messages")).json() if "photo" in m
        ]
        photo = await control.get(photo_message["file_url"].removeprefix("/_control"))
        assert photo.content == png_bytes()
        charge = paid["payment"]["telegram_payment_charge_id"]
        redelivered = await control.post(f"/payments/{charge}/redeliver", json={})
        assert redelivered.json() == {"ok": True}
        assert emulator.counters["updates.repeated"] == 1

        faults = await control.post(
            "/faults", json={"status": 429, "retry_after": 2, "method": "sendMessage"}
        )
        assert faults.json()[0]["status"] == 429
        with pytest.raises(TelegramRetryAfter):
            await run_asyncio(bot.send_message, 4242, "x")
        counters = (await control.get("/counters")).json()
        assert counters["answered.429"] == 1

        limits = await control.put("/limits", json={"enabled": False})
        assert limits.json()["enabled"] is False and not emulator.limits.enabled
        assert (await control.post("/users/4242/block")).json() == {"ok": True}
        with pytest.raises(TelegramForbiddenError):
            await run_asyncio(bot.send_message, 4242, "x")
        missing = await control.post("/users/1/messages", json={"text": "hi"})
        assert missing.status_code == 400 and "no user 1" in missing.json()["error"]
        state = (await control.get("/state")).json()
        assert state["bots"][0]["id"] == emulator.bot_id
        messages = (await control.get("/chats/4242/messages")).json()
        assert [m["from_bot"] for m in messages][:2] == [False, True]
    kinds = [e.kind for e in emulator.transcript(4242)]
    assert Kind.PAYMENT in kinds and kinds[-1] == Kind.BLOCKED


def test_html_is_parsed_like_telegram() -> None:
    text, entities = parse(
        '😀 <b>bold <i>both</i></b> &lt;x&gt; <a href="https://t.me">link</a>'
        '<pre><code class="language-python">x = 1</code></pre>',
        "HTML",
    )
    assert text == "😀 bold both <x> linkx = 1"
    assert {"type": "bold", "offset": 3, "length": 9} in entities  # the emoji is 2 units
    assert {"type": "italic", "offset": 8, "length": 4} in entities
    assert {"type": "text_link", "offset": 17, "length": 4, "url": "https://t.me"} in entities
    assert {"type": "pre", "offset": 21, "length": 5, "language": "python"} in entities
    for bad, reason in [
        ("a < b", 'Unsupported start tag ""'),
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", "Unmatched end tag"),
        ("<div>x</div>", 'Unsupported start tag "div"'),
    ]:
        with pytest.raises(ApiError) as caught:
            parse(bad, "HTML")
        assert reason in caught.value.description
        assert caught.value.description.startswith("Bad Request: can't parse entities")


def test_markdown_is_parsed_like_telegram() -> None:
    text, entities = parse(
        r"*bold* _it_ __under__ ||sp|| `co\`de` [a](https://x\.y) 1\.0", "MarkdownV2"
    )
    assert text == "bold it under sp co`de a 1.0"
    kinds = [e["type"] for e in entities]
    assert kinds == ["bold", "italic", "underline", "spoiler", "code", "text_link"]
    with pytest.raises(ApiError, match=r"Character '!' is reserved"):
        parse("Hi!", "MarkdownV2")
    with pytest.raises(ApiError, match="Can't find end of Bold entity"):
        parse("*open", "MarkdownV2")
    text, entities = parse("*bold* and _it_ [l](http://a)", "Markdown")
    assert text == "bold and it l"
    assert [e["type"] for e in entities] == ["bold", "italic", "text_link"]
    with pytest.raises(ApiError, match="Can't find end of the entity"):
        parse("snake_case", "Markdown")
    with pytest.raises(ApiError, match="unsupported parse_mode"):
        parse("x", "BBCode")
