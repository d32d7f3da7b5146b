"""A broadcast to 200 users stays inside the emulator's rate limits with zero 429 answers
and resumes after a restart without sending twice.

The bot's actors run under one supervisor, the notifier under another, so the notifier
alone can be stopped midway (as SIGTERM stops it: the batch in hand is settled, the
unsent messages handed back) and started again. The emulator keeps Telegram's limits
(about 30 messages a second in all, one a second per chat); the notifier sends 25 a
second, so the whole broadcast takes about eight seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from runtime.storage import Database, users
from runtime.supervision import ActorState, Supervisor
from runtime.testing.telegram import Limits, TelegramEmulator
from runtime.workers import notifier

from .conftest import ADMIN, TOKEN, Alerts, Shop, build_shop, make_settings
from .test_e2e import eventually, press, running, shown

TEXT = "Maintenance tonight, 02:00-03:00 UTC"
PEOPLE = 199  # and the admin: 200 recipients
RATE = 25.0


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, limits=Limits())
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator
) -> AsyncIterator[Shop]:
    settings = make_settings(
        emulator.url,
        bot={"mode": "polling", "polling_timeout_seconds": 1, "support_contact": "@help"},
        notifier={"rate_per_second": RATE},
    )
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


def broadcast_to(emulator: TelegramEmulator, chat: int) -> list[str]:
    """The broadcast messages in ``chat`` (the admin's preview of it left out)."""
    found = [m.content for m in emulator.messages(chat, from_bot=True) if m.content == TEXT]
    return found[1:] if chat == ADMIN else found


def delivered(emulator: TelegramEmulator, chat_ids: list[int]) -> int:
    return sum(len(broadcast_to(emulator, chat)) for chat in chat_ids)


async def test_a_broadcast_to_200_users_resumes_after_a_restart_without_sending_twice(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    people = [emulator.create_user(first_name=f"U{i}", language_code="en") for i in range(PEOPLE)]
    for person in people:
        await users.touch_user(shop.db, person.id, username=None, language="en")
    recipients = [admin.id, *(p.id for p in people)]

    async with running(shop):
        first = Supervisor([notifier.spec(shop.services)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.run)
            hello = admin.send_command("broadcast", f"all {TEXT}")
            preview = await admin.wait_for_message(  # after the broadcast's own preview
                lambda m: "recipients" in m.content, after=hello
            )
            assert "200 recipients" in preview.content
            await press(emulator, admin, preview, "Confirm", "sending 200 messages")
            # stopped midway, as SIGTERM stops it
            await emulator.wait_until(
                lambda: delivered(emulator, recipients) >= 60,
                timeout=15,
                what="a third of the broadcast",
            )
            first.request_shutdown()
        assert all(s.state is ActorState.STOPPED for s in first.statuses)
        sent_before = delivered(emulator, recipients)
        assert sent_before < len(recipients)
        assert await shop.value("select status from broadcasts") == "sending"
        await trio.sleep(1.0)  # nothing goes out while no notifier runs
        assert delivered(emulator, recipients) == sent_before

        second = Supervisor([notifier.spec(shop.services)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.run)
            final = await shown(emulator, admin, "finished", seconds=20)
            second.request_shutdown()
        assert "delivered 200, blocked 0, failed 0 of 200" in final.content
        await eventually(shop, "select status from broadcasts", "finished")

    for chat in recipients:
        assert broadcast_to(emulator, chat) == [TEXT], chat
    assert emulator.counters["answered.429"] == 0
    assert await shop.value("select delivered from broadcasts") == 200
    jobs = await shop.fetch(
        "select status, attempts from outbox where dedup_key like 'broadcast:%'"
    )
    assert len(jobs) == 200
    assert {j["status"] for j in jobs} == {"done"}
