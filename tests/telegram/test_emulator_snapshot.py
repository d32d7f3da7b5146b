"""The emulator's state kept across a restart: snapshot, restore, going on after the ids a
bot has seen, and the sandbox's reset."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from aiogram.types import BufferedInputFile, LabeledPrice

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.telegram import (
    EmulatorError,
    Kind,
    Limits,
    PaymentResult,
    Retention,
    TelegramEmulator,
)
from tests.telegram.test_emulator_control import png_bytes


async def test_a_restored_emulator_shows_the_chats_and_goes_on_numbering() -> None:
    first = TelegramEmulator(limits=Limits.off())
    async with first.running(), asyncio_loop(), first.bot_client() as bot:
        ann = first.create_user(first_name="Ann")
        first.send_command(ann.id, "start")
        await run_asyncio(bot.send_message, ann.id, "<b>hi</b>", parse_mode="HTML")
        photo = BufferedInputFile(png_bytes(), "qr.png")
        await run_asyncio(bot.send_photo, ann.id, photo, caption="your QR code")
        await run_asyncio(
            bot.send_invoice,
            ann.id,
            title="1 month",
            description="VPN",
            payload="intent-1",
            currency="XTR",
            prices=[LabeledPrice(label="1 month", amount=150)],
        )
        taken = await run_asyncio(bot.get_updates)
        last_seen = taken[-1].update_id
        await run_asyncio(bot.get_updates, offset=last_seen + 1)
        first.block(ann.id)  # an update left pending
    data = json.loads(json.dumps(first.snapshot()))  # it is plain JSON

    second = TelegramEmulator(limits=Limits.off())
    second.restore(data)
    ann2 = second.user(ann.id)
    assert ann2.first_name == "Ann"
    assert [m.content for m in second.messages(ann.id, from_bot=None)] == [
        m.content for m in first.messages(ann.id, from_bot=None)
    ]
    shown = second.messages(ann.id, from_bot=True)
    assert shown[0].source == "<b>hi</b>"
    assert shown[1].photo == png_bytes() and second.file_bytes(shown[1].file_id or "")
    assert shown[2].invoice is not None and shown[2].invoice.total_amount == 150
    assert [e.kind for e in second.transcript(ann.id)] == [e.kind for e in first.transcript(ann.id)]
    second.unblock(ann.id)  # the kept block holds
    async with second.running(), asyncio_loop(), second.bot_client() as bot:
        pending = await run_asyncio(bot.get_updates)
        # the block from before is still to be taken, then the new update, numbered after it
        assert [u.update_id for u in pending] == [last_seen + 1, last_seen + 2]
        assert pending[0].my_chat_member is not None
        # the restored chat goes on: new message ids follow the old ones
        sent = await run_asyncio(bot.send_message, ann.id, "after the restart")
        assert sent.message_id == shown[-1].message_id + 1
        # the invoice sent before the restart can be paid after it
        results: list[PaymentResult] = []

        async def pay() -> None:
            results.append(await second.pay(ann.id, shown[2]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pay)
            query = await second.wait_for_entry(ann.id, Kind.PRE_CHECKOUT, timeout=30)
            assert query.data["payload"] == "intent-1"
            await run_asyncio(bot.answer_pre_checkout_query, query.data["query_id"], ok=True)
        assert results[0].ok


async def test_a_snapshot_keeps_within_the_retention() -> None:
    emulator = TelegramEmulator(limits=Limits.off(), retention=Retention(per_chat=5, updates=3))
    user = emulator.create_user()
    for n in range(20):
        emulator.send_text(user.id, f"message {n}")
    data = emulator.snapshot()
    (chat,) = data["bots"][0]["chats"]
    assert len(chat["messages"]) == 5 and len(chat["transcript"]) == 5
    restored = TelegramEmulator()
    restored.restore(data)
    assert [m.text for m in restored.messages(user.id, from_bot=None)] == [
        f"message {n}" for n in range(15, 20)
    ]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"version": 99},
        {"version": 1},
        {"version": 1, "users": [{"no": "id"}], "bots": []},
        {
            "version": 1,
            "users": [],
            "bots": [{"id": 7000000001, "next_update_id": "x"}],
            "next_seq": 1,
            "next_number": 1,
            "next_user_id": 1,
        },
    ],
)
def test_a_broken_snapshot_is_refused_and_changes_nothing(data: object) -> None:
    emulator = TelegramEmulator()
    user = emulator.create_user()
    emulator.send_text(user.id, "kept")
    with pytest.raises(EmulatorError):
        emulator.restore(data)
    assert [m.text for m in emulator.messages(user.id, from_bot=None)] == ["kept"]


async def test_continue_after_numbers_new_updates_after_what_the_bot_saw() -> None:
    emulator = TelegramEmulator(limits=Limits.off())
    user = emulator.create_user()
    early = emulator.send_text(user.id, "sent while the bot was starting")
    emulator.continue_after(700000500)
    later = emulator.send_text(user.id, "and after")
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        updates = await run_asyncio(bot.get_updates)
    assert [(u.update_id, u.message.text if u.message else None) for u in updates] == [
        (700000501, early.text),
        (700000502, later.text),
    ]
    emulator.continue_after(5)  # never backwards
    assert emulator.next_update_id() == 700000503


async def test_a_bot_that_skips_seen_ids_answers_after_a_restore() -> None:
    """What the sandbox's restart needs: the bot's inbox skips ids it has seen; a restored
    emulator goes on after them, so /start is answered."""
    first = TelegramEmulator(limits=Limits.off())
    user = first.create_user()
    first.send_command(user.id, "start")
    async with first.running(), asyncio_loop(), first.bot_client() as bot:
        seen = {u.update_id for u in await run_asyncio(bot.get_updates)}
    second = TelegramEmulator(limits=Limits.off())
    second.restore(first.snapshot())
    second.send_command(user.id, "start")
    async with second.running(), asyncio_loop(), second.bot_client() as bot:
        fresh = [u for u in await run_asyncio(bot.get_updates) if u.update_id not in seen]
    assert [u.message.text for u in fresh if u.message] == ["/start"]


async def test_the_reset_route_is_the_sandboxs_only_and_starts_a_new_conversation() -> None:
    plain = TelegramEmulator()
    async with plain.running() as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/_control/reset")).status_code in (404, 405)

    emulator = TelegramEmulator(allow_reset=True, limits=Limits.off())
    async with emulator.running() as url, httpx.AsyncClient(base_url=url) as http:
        old = emulator.create_user()
        emulator.send_text(old.id, "before")
        next_id = emulator.next_update_id()
        answer = await http.post("/_control/reset")
        assert answer.json() == {"ok": True}
        assert (await http.get("/_control/users")).json() == []
        assert (await http.get(f"/_control/chats/{old.id}/messages")).json() == []
        new = (await http.post("/_control/users", json={"first_name": "New"})).json()
        assert new["id"] != old.id  # a new person to the bot
        assert emulator.next_update_id() == next_id  # ids go on
        data = emulator.snapshot()
        assert [u["id"] for u in data["users"]] == [new["id"]]
