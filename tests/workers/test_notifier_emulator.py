"""The notifier against the Telegram emulator's flood limits: no 429 at the configured
rate, never faster than it, and every message delivered once when 429s are injected."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, outbox
from runtime.telegram import BotApi
from runtime.testing.telegram import DEFAULT_TOKEN, Limits, TelegramEmulator
from runtime.workers.notifier import Notifier

from .conftest import IterationContext, add_user, fetch

CTX: Any = IterationContext()


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    # Telegram's shape (a burst, then a steady rate), scaled up so the test stays short.
    fake = TelegramEmulator(limits=Limits(global_rate=110.0, global_burst=5))
    async with fake.running():
        yield fake


async def queue_one_each(db: Database, emulator: TelegramEmulator, count: int) -> list[int]:
    """One broadcast message for each of ``count`` new users (queued in bulk)."""
    chats = [emulator.create_user(language_code="en").id for _ in range(count)]
    await fetch(db, "insert into users (telegram_id) select unnest($1::bigint[])", chats)
    await fetch(
        db,
        "insert into outbox (kind, dedup_key, payload)"
        " select $1, 'broadcast:1:' || c, jsonb_build_object('chat_id', c,"
        " 'template', 'broadcast', 'params', jsonb_build_object('text', 'news #' || c))"
        " from unnest($2::bigint[]) as c",
        job_kinds.NOTIFY,
        chats,
    )
    return chats


async def drain(sender: Notifier, db: Database) -> float:
    """Send until nothing is pending; returns how long it took."""
    started = trio.current_time()
    with trio.fail_after(60):
        while True:
            pause = await sender.iteration(CTX)
            rows = await fetch(db, "select count(*) as n from outbox where status = 'pending'")
            if not rows[0]["n"]:
                return trio.current_time() - started
            await trio.sleep(pause or 0.01)


def hold_what_the_pacing_promises(emulator: TelegramEmulator, sender: Notifier) -> None:
    """The receiver's global bucket as the pacing's guarantee: in any span of t seconds at
    most ``capacity + t * refill`` sends start and at most ``concurrency`` started sends
    are still on their way, so a bucket that holds that many and refills at the configured
    rate never runs dry, however a starved machine bunches the sends up. A sender that
    beats the rate still runs it dry."""
    emulator.limits = emulator.limits.with_changes(
        global_rate=sender.rate,
        global_burst=sender.concurrency + math.ceil(sender.pacer.capacity),
    )


async def test_the_configured_rate_meets_no_429_and_is_never_exceeded(
    db: Database, services: Services, emulator: TelegramEmulator
) -> None:
    count, rate = 201, 100.0
    chats = await queue_one_each(db, emulator, count)
    sender = Notifier(
        services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), "a", rate_per_second=rate
    )
    hold_what_the_pacing_promises(emulator, sender)
    took = await drain(sender, db)
    await sender.close()
    assert emulator.counters["answered.429"] == 0
    assert [len(emulator.messages(chat, from_bot=True)) for chat in chats] == [1] * count
    # never faster than the pacer allows (how close it comes is the workers bench's figure)
    assert took >= (count - sender.pacer.capacity) / sender.pacer.refill


async def test_injected_429s_pause_and_every_message_is_delivered_once(
    db: Database, services: Services, emulator: TelegramEmulator
) -> None:
    chats = await queue_one_each(db, emulator, 30)
    emulator.rate_limit_next(1, times=2)
    sender = Notifier(
        services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), "a", rate_per_second=50
    )
    took = await drain(sender, db)
    await sender.close()
    assert emulator.counters["answered.429"] == 2
    assert [len(emulator.messages(chat, from_bot=True)) for chat in chats] == [1] * len(chats)
    assert took >= 1.0  # at least one retry_after of pause


async def test_access_links_arrive_with_their_qr_code_and_blocked_users_are_dropped(
    db: Database, services: Services, emulator: TelegramEmulator
) -> None:
    reader = emulator.create_user(language_code="ru")
    blocker = emulator.create_user()
    await add_user(db, reader.id, language="ru")
    await add_user(db, blocker.id)
    blocker.block()
    for chat in (reader.id, blocker.id):
        await outbox.enqueue_job(
            db,
            kind=job_kinds.NOTIFY,
            dedup_key=f"notify:access:{chat}",
            payload={
                "chat_id": chat,
                "template": "access_ready",
                "params": {
                    "access_url": "https://panel.example/sub/abc",
                    "expires_at": "2031-01-02T03:04:00+00:00",
                },
            },
        )
    sender = Notifier(services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), "a")
    await drain(sender, db)
    await sender.close()
    [message] = emulator.messages(reader.id, from_bot=True)
    assert message.photo is not None and message.photo.startswith(b"\x89PNG")
    assert message.caption is not None and "https://panel.example/sub/abc" in message.caption
    assert message.caption.startswith("Доступ к VPN готов до 2 янв. 2031\u202fг., 03:04 UTC")  # noqa: RUF001
    rows = await fetch(
        db, "select blocked_bot_at is not null as b from users where telegram_id = $1", blocker.id
    )
    assert rows == [{"b": True}]


async def test_each_message_is_settled_the_moment_it_is_sent(
    db: Database, services: Services, emulator: TelegramEmulator
) -> None:
    """What a SIGKILL would find mid-batch: the messages sent are done, the one in flight
    is marked started, the rest are claimed but untouched. The restart takes the claims
    back and sends what is left, each message once; only the started job counts a lost
    claim, and no job loses an attempt."""
    chats = await queue_one_each(db, emulator, 8)
    emulator.delay_next(0, method="sendMessage", times=5)  # five go through...
    emulator.hang_next(method="sendMessage")  # ...and the sixth is never answered
    owner = services.claim_owner("notifier")
    sender = Notifier(services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), owner, concurrency=1)

    async def in_flight() -> bool:
        rows = await fetch(
            db,
            "select count(*) filter (where status = 'done') as done,"
            " count(*) filter (where status = 'pending' and started_at is not null) as sending"
            " from outbox",
        )
        hanging = emulator.counters["faults"] == 6  # the sixth send reached Telegram
        return hanging and rows[0]["done"] == 5 and rows[0]["sending"] == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.iteration, CTX)
        with trio.fail_after(30):
            while not await in_flight():  # noqa: ASYNC110 - the notifier changes the rows
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()  # the batch never gets to its end
    await sender.close()

    taken = await outbox.take_back(db, owner_prefix=services.owner_prefix)
    assert (taken.jobs, taken.lost) == (3, 1)
    again = Notifier(
        services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), services.claim_owner("notifier")
    )
    await drain(again, db)
    await again.close()
    assert [len(emulator.messages(chat, from_bot=True)) for chat in chats] == [1] * len(chats)
    rows = await fetch(db, "select attempts, lost_claims from outbox order by id")
    assert [r["attempts"] for r in rows] == [1] * len(chats)
    assert sorted(r["lost_claims"] for r in rows) == [0] * (len(chats) - 1) + [1]


async def test_a_job_of_two_messages_resumes_after_the_one_sent(
    db: Database, services: Services, emulator: TelegramEmulator
) -> None:
    """An access link too long for a caption goes as a text, then its QR code. When the
    photo fails, the retry sends the photo only: the text is not repeated."""
    reader = emulator.create_user()
    await add_user(db, reader.id)
    link = "vless://user@vpn.example:443?type=tcp#" + "x" * 1100
    await outbox.enqueue_job(
        db,
        kind=job_kinds.NOTIFY,
        dedup_key="notify:access:long",
        payload={
            "chat_id": reader.id,
            "template": "access_ready",
            "params": {"access_url": link, "expires_at": "2031-01-02T03:04:00+00:00"},
        },
    )
    emulator.fail_next(500, method="sendPhoto")
    sender = Notifier(
        services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), "a", per_chat_interval=0
    )
    await sender.iteration(CTX)
    [job] = await fetch(db, "select status, attempts, steps_done from outbox")
    assert (job["status"], job["attempts"], job["steps_done"]) == ("pending", 1, 1)
    await fetch(db, "update outbox set next_attempt_at = now()")
    await drain(sender, db)
    await sender.close()
    text, photo = emulator.messages(reader.id, from_bot=True)
    assert text.text is not None and link in text.text
    assert photo.photo is not None and photo.photo.startswith(b"\x89PNG")
    [job] = await fetch(db, "select status, attempts, steps_done from outbox")
    assert (job["status"], job["attempts"], job["steps_done"]) == ("done", 2, 2)
