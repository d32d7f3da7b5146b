"""A broadcast's final report reaches its admin once: through real aiogram, the
notifier and the Telegram emulator."""

from __future__ import annotations

import pytest
import trio

from runtime.storage import Database, users
from runtime.storage import broadcasts as broadcast_store
from runtime.testing.telegram import TelegramEmulator

from . import test_e2e
from .conftest import ADMIN, Shop
from .test_e2e import eventually, running, shown

emulator = test_e2e.emulator
shop = test_e2e.shop


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_broadcasts_final_report_is_shown_once(
    emulator: TelegramEmulator, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.workers import notifier

    passes = 0  # the bot's looks at the running broadcasts, one after the other
    original = broadcast_store.sending_broadcasts

    async def counted(db: Database) -> list[broadcast_store.Broadcast]:
        nonlocal passes
        passes += 1
        return await original(db)

    monkeypatch.setattr(broadcast_store, "sending_broadcasts", counted)

    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    people = [emulator.create_user(first_name=f"U{i}", language_code="en") for i in range(2)]
    for person in people:
        await users.touch_user(shop.db, person.id, username=None, language="en")
    async with running(shop, extra=[notifier.spec(shop.services)]):
        hello = admin.send_command("broadcast", "all Servers are back")
        preview = await admin.wait_for_message(  # after the broadcast's own preview
            lambda m: "recipients" in m.content, after=hello
        )
        assert "3 recipients" in preview.content
        pressed = admin.press(preview, text="Confirm")
        await emulator.wait_for_answer(pressed)
        final = await shown(emulator, admin, "finished", seconds=30)
        assert "delivered 3, blocked 0, failed 0 of 3" in final.content
        await eventually(shop, "select status from broadcasts", "finished")
        finished_during = passes
        with trio.fail_after(30):  # the pass that finished it is over once another starts
            while passes <= finished_during:  # noqa: ASYNC110
                await trio.sleep(0.05)
    reports = [m for m in emulator.messages(admin.id, from_bot=True) if "finished" in m.content]
    assert len(reports) == 1, [m.content for m in emulator.messages(admin.id, from_bot=True)]
    assert reports[0].message_id == preview.message_id  # the progress became the report
    assert any(b.text == "« Back" for row in reports[0].buttons() for b in row)
