"""Stopping a running broadcast and deleting a sent one, through real aiogram, the
notifier and the Telegram emulator (with Telegram's flood limits).

A stop drops exactly the messages not sent yet: every user ends with one message or
none, and the jobs say which. A deletion removes each recorded message once, at the
notifier's pace; a message past Telegram's 48 hours is refused (400 "message can't be
deleted"), and that answer is recorded at once, not retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from runtime.storage import Database, users
from runtime.testing.telegram import SimUser, TelegramEmulator

from . import test_e2e
from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .test_e2e import bot_settings, eventually, press, running, shown

emulator = test_e2e.emulator
TEXT = "Planned maintenance tonight"


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator, rate: float
) -> AsyncIterator[Shop]:
    """The shop with the notifier sending ``rate`` messages a second (each test's own)."""
    settings = make_settings(
        emulator.url, bot=bot_settings("polling"), notifier={"rate_per_second": rate}
    )
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


async def people(emulator: TelegramEmulator, shop: Shop, count: int) -> list[SimUser]:
    found = []
    for i in range(count):
        person = emulator.create_user(first_name=f"U{i}", language_code="en")
        await users.touch_user(shop.db, person.id, username=None, language="en")
        found.append(person)
    return found


def received(emulator: TelegramEmulator, user: SimUser) -> int:
    found = [m for m in emulator.messages(user.id, from_bot=True) if m.content == TEXT]
    return len(found) - (1 if user.id == ADMIN else 0)  # the admin's preview


async def start(emulator: TelegramEmulator, admin: SimUser, count: int) -> None:
    hello = admin.send_command("broadcast", f"all {TEXT}")
    control = await admin.wait_for_message(lambda m: "recipients" in m.content, after=hello)
    assert f"{count} recipients" in control.content
    await press(emulator, admin, control, "Confirm", f"sending {count} messages")


@pytest.mark.parametrize("rate", [5.0])
async def test_a_stop_cancels_exactly_the_unsent_and_nobody_gets_two(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    from runtime.workers import notifier

    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    everyone = [admin, *await people(emulator, shop, 39)]
    async with running(shop, extra=[notifier.spec(shop.services)]):
        await start(emulator, admin, 40)
        await emulator.wait_until(
            lambda: sum(received(emulator, u) for u in everyone) >= 5,
            timeout=30,
            what="some of the broadcast delivered",
        )
        progress = await shown(emulator, admin, "sending 40 messages")
        stopped = admin.press(progress, text="Stop")
        await emulator.wait_for_answer(stopped)
        await shown(emulator, admin, "was cancelled", seconds=10)
        pending = "select count(*) from outbox where status = 'pending'"
        await eventually(shop, pending, 0)  # what was on its way has landed
        await eventually(shop, "select status from broadcasts", "cancelled")

    jobs = await shop.fetch(
        "select payload->>'chat_id' as chat, status, last_error from outbox"
        " where dedup_key like 'broadcast:1:%'"
    )
    assert len(jobs) == 40
    by_chat = {int(j["chat"]): j for j in jobs}
    for user in everyone:
        job = by_chat[user.id]
        if job["status"] == "done":
            assert received(emulator, user) == 1, user
        else:
            assert (job["status"], job["last_error"]) == ("dead", "broadcast cancelled")
            assert received(emulator, user) == 0, user
    cancelled = sum(1 for j in jobs if j["status"] == "dead")
    assert 0 < cancelled < 35
    assert await shop.value("select cancelled from broadcasts") == cancelled
    actions = await shop.fetch("select actor, action from audit_log order by id")
    assert [a["action"] for a in actions] == [
        "broadcast.create",
        "broadcast.start",
        "broadcast.stop",
    ]
    assert {a["actor"] for a in actions} == {f"admin:{ADMIN}"}
    assert emulator.counters["answered.429"] == 0


RATE = 8.0


@pytest.mark.parametrize("rate", [RATE])
async def test_deleting_a_sent_broadcast_deletes_each_message_once(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    from runtime.workers import notifier

    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    everyone = [admin, *await people(emulator, shop, 15)]
    old = everyone[3]
    async with running(shop, extra=[notifier.spec(shop.services)]):
        await start(emulator, admin, 16)
        await shown(emulator, admin, "finished", seconds=30)
        await eventually(shop, "select status from broadcasts", "finished")
        sent = {u.id: emulator.messages(u.id, from_bot=True)[-1] for u in everyone}
        assert all(m.content == TEXT for m in sent.values())
        sent[old.id].date -= 49 * 3600  # sent more than 48 hours ago

        hello = admin.send_command("broadcasts")
        listing = await admin.wait_for_message(after=hello)
        assert "#1" in listing.content and "delivered 16" in listing.content
        card = await press(emulator, admin, listing, "#1", "Recipients: 16")
        ask = await press(emulator, admin, card, "Delete the sent messages", "48 hours")
        await press(emulator, admin, ask, "Confirm", "Deleting 16 messages")
        deleting = "select count(*) from outbox where status = 'pending'"
        await eventually(shop, deleting, 0)
        again = admin.send_command("broadcasts")  # a second request deletes nothing more
        listing = await admin.wait_for_message(lambda m: "deleted 15" in m.content, after=again)
        card = await press(emulator, admin, listing, "#1", "Recipients: 16")
        assert "15 of 16 deleted, 1 too old to delete (48 hours), 0 failed" in card.content
        assert "Delete the sent messages" not in str(card.buttons())

    calls = emulator.calls_of("deleteMessage")
    targets = [(c.params["chat_id"], c.params["message_id"]) for c in calls]
    assert sorted(targets) == sorted((u.id, sent[u.id].message_id) for u in everyone)
    refused = [c for c in calls if c.status != 200]
    assert [(c.status, c.params["chat_id"]) for c in refused] == [(400, old.id)]
    for user in everyone:
        assert sent[user.id].deleted is (user is not old)
    job = await shop.fetch(
        "select status, attempts, last_error from outbox where dedup_key = $1",
        f"broadcast:del:1:{old.id}",
    )
    assert job[0]["status"] == "dead" and job[0]["attempts"] == 1
    assert "message can't be deleted" in job[0]["last_error"]
    # paced like sending: never more than the rate (and one) within a second
    moments = sorted(c.at for c in calls)
    for i, moment in enumerate(moments):
        within = [m for m in moments[i:] if m < moment + 1.0]
        assert len(within) <= RATE + 1, moments
    assert moments[-1] - moments[0] >= (len(moments) - 1 - RATE) / RATE
    assert shop.alerts.alerts == []
    actions = await shop.fetch("select action from audit_log order by id")
    assert [a["action"] for a in actions][-1] == "broadcast.delete"
    await trio.lowlevel.checkpoint()
