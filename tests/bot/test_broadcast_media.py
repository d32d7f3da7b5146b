"""A media broadcast with buttons, through real aiogram, the notifier and the Telegram
emulator: the admin sends the file with the command as its caption (or replies to it),
gets the preview and the count, confirms, and every user of the segment gets exactly one
message, sent with the method of its kind, with the buttons labelled in their language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from runtime.i18n import load_translator
from runtime.storage import users
from runtime.testing.telegram import Message, SimUser, TelegramEmulator

from . import test_e2e
from .conftest import ADMIN, Shop
from .test_e2e import eventually, running, shown

emulator = test_e2e.emulator
shop = test_e2e.shop

Kind = Literal["photo", "video", "animation", "document"]
METHODS = {
    "photo": "sendPhoto",
    "video": "sendVideo",
    "animation": "sendAnimation",
    "document": "sendDocument",
}
CAPTION = (
    "/broadcast active <b>New servers</b> in <i>Finland</i>\n"
    "[Status page](https://status.example.com/fi)\n[buy]"
)


async def active_subscription(shop: Shop, user_id: int) -> None:
    now = datetime.now(UTC)
    await shop.value(
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at, vpn_backend)"
        " values ($1, 'month', 'paid', $2, $3, 'marzban') returning 1",
        user_id,
        now - timedelta(days=1),
        now + timedelta(days=29),
    )


def labels(message: Message) -> list[list[tuple[str, str | None]]]:
    return [[(b.text, b.url) for b in row] for row in message.buttons()]


@pytest.mark.parametrize("mode", ["polling"])
@pytest.mark.parametrize(
    ("kind", "by_reply"),
    [("photo", False), ("video", False), ("animation", False), ("document", True)],
)
async def test_a_media_broadcast_reaches_each_user_of_the_segment_once(
    emulator: TelegramEmulator, shop: Shop, kind: Kind, by_reply: bool
) -> None:
    from runtime.workers import notifier

    translator = load_translator()
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    people: list[SimUser] = []
    for i, lang in enumerate(["en", "ru", "en", "ru"]):
        person = emulator.create_user(first_name=f"U{i}", language_code=lang)
        await users.touch_user(shop.db, person.id, username=None, language=lang)
        await active_subscription(shop, person.id)
        people.append(person)
    outsider = emulator.create_user(first_name="NoAccess", language_code="en")
    await users.touch_user(shop.db, outsider.id, username=None, language="en")

    async with running(shop, extra=[notifier.spec(shop.services)]):
        if by_reply:  # the file first, then the command in reply to it
            upload = admin.send_media(kind)
            hello = admin.send_text(CAPTION, reply_to=upload.message_id)
        else:
            hello = admin.send_media(kind, CAPTION)
        control = await admin.wait_for_message(lambda m: "recipients" in m.content, after=hello)
        assert "Broadcast #1 to users with active access: 4 recipients now" in control.content
        preview = [m for m in emulator.messages(admin.id, from_bot=True) if kind in m.media]
        assert len(preview) == 1 and preview[0].message_id < control.message_id
        assert preview[0].caption == "New servers in Finland"  # HTML, as Telegram shows it
        assert [e["type"] for e in preview[0].caption_entities] == ["bold", "italic"]
        assert all(emulator.messages(p.id, from_bot=True) == [] for p in people)  # not yet

        confirmed = admin.press(control, text="Confirm")
        await emulator.wait_for_answer(confirmed)
        final = await shown(emulator, admin, "finished", seconds=30)
        assert "delivered 4, blocked 0, failed 0 of 4" in final.content
        await eventually(shop, "select status from broadcasts", "finished")

        deep_link = ""
        for person in people:
            (got,) = emulator.messages(person.id, from_bot=True)
            assert kind in got.media and got.caption == "New servers in Finland"
            buy = translator.t(person.language_code or "en", "broadcasts.button_buy")
            (status_row, buy_row) = labels(got)
            assert status_row == [("Status page", "https://status.example.com/fi")]
            assert buy_row[0][0] == buy
            deep_link = buy_row[0][1] or ""
        assert emulator.messages(outsider.id, from_bot=True) == []
        assert deep_link.startswith("https://t.me/") and deep_link.endswith("?start=plans")
        # the deep link opens the bot's plans screen
        opened = people[1].open_link(deep_link)
        plans = await people[1].wait_for_message(after=opened)
        assert plans.content == translator.t("ru", "plans.title")

    sends = [c for c in emulator.calls_of(METHODS[kind]) if c.status == 200]
    assert len(sends) == 1 + len(people)  # the preview and one per user
    assert emulator.counters["answered.429"] == 0
    jobs = await shop.fetch("select status, result from outbox where dedup_key like 'broadcast:%'")
    assert {j["status"] for j in jobs} == {"done"}
    assert all(isinstance(j["result"]["message_id"], int) for j in jobs)
