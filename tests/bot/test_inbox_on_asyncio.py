"""The inbox with its handlers on asyncio's side (``OnAsyncio``, what the bot runs): a
claimed batch crosses the seam once, one chat's updates run in order across batches, a
failing update settles alone, and a cancellation leaves what did not finish claimable."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, cast

import pytest
import trio

from runtime.bot._chains import ChatChains
from runtime.bot._inbox import InboxProcessor, OnAsyncio
from runtime.bridge import call_trio
from runtime.storage import Database, inbox
from runtime.storage.inbox import InboxUpdate
from runtime.supervision import ActorContext

from .test_inbox_batching import fetch
from .test_inbox_poison import Alerts, Context
from .test_inbox_storage import update

PATIENCE = 60.0


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch handed over to asyncio's side."""
    sizes: list[int] = []
    real = ChatChains.run_batch

    async def counted(self: ChatChains, batch: Any, keys: Any) -> None:
        sizes.append(len(batch.updates))
        await real(self, batch, keys)

    monkeypatch.setattr(ChatChains, "run_batch", counted)
    return sizes


async def wait_until_processed(processor: InboxProcessor, count: int) -> None:
    with trio.fail_after(PATIENCE):
        while processor.processed < count:  # noqa: ASYNC110 - it runs beside us
            await trio.sleep(0.02)


async def test_one_chats_updates_run_in_order_across_batches_and_each_batch_crosses_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chat 1 holds updates 1, 3, 5, 7 and chat 2 holds 2, 4, 6, 8: with batches of two,
    # every batch has one update of each chat
    await inbox.store(db, [update(i, user=1 if i % 2 else 2) for i in range(1, 9)])
    sizes = count_batches(monkeypatch)
    ran: dict[int, list[int]] = defaultdict(list)
    threads: set[bool] = set()
    others_went_on = asyncio.Event()

    async def run_one(item: InboxUpdate, correlation_id: str) -> None:
        threads.add(trio.lowlevel.in_trio_run())
        chat = item.chat_key
        assert chat is not None and correlation_id
        if item.update_id == 1:
            await others_went_on.wait()  # chat 1 is held up: its next updates wait
        ran[chat].append(item.update_id)
        if ran[2] == [2, 4, 6]:
            others_went_on.set()

    processor = InboxProcessor(
        lambda: db,
        owner="host:bot:1",
        alerts=lambda: Alerts(),
        batch_size=2,
        max_in_flight=8,
        idle_seconds=0.05,
    )
    ctx = Context()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run, cast(ActorContext, ctx), OnAsyncio(run_one))
        await wait_until_processed(processor, 8)
        ctx.stop_requested.set()
        processor.wakeup.set()
    assert ran == {1: [1, 3, 5, 7], 2: [2, 4, 6, 8]}
    assert threads == {False}  # the handlers ran on asyncio's thread
    assert sum(sizes) == 8 and len(sizes) == 4
    assert await inbox.pending_count(db) == 0


async def test_a_failing_update_does_not_fail_its_batch_mates(db: Database) -> None:
    await inbox.store(db, [update(11, user=1), update(12, user=2), update(13, user=1)])
    claimed = await inbox.claim(db, owner="host:bot:1", limit=10, claim_seconds=60)
    alerts = Alerts()
    ran: list[int] = []

    async def run_one(item: InboxUpdate, correlation_id: str) -> None:
        ran.append(item.update_id)
        if item.update_id == 11:
            raise RuntimeError("a bug in this update's handling")

    processor = InboxProcessor(lambda: db, owner="host:bot:1", alerts=lambda: alerts)
    await processor.process(claimed, OnAsyncio(run_one))
    assert sorted(ran) == [11, 12, 13]
    assert ran.index(11) < ran.index(13)  # its chat went on after it
    rows = await fetch(
        db, "select update_id, processed_at is not null as done from telegram_updates"
    )
    assert {row["update_id"]: row["done"] for row in rows} == {11: True, 12: True, 13: True}
    dead = await inbox.dead_updates(db)
    assert [each.update_id for each in dead] == [11]
    assert "a bug in this update's handling" in (dead[0].last_error or "")
    assert [alert.key for alert in alerts.sent] == ["bot_update_given_up:message"]
    assert processor.processed == 3


async def test_a_handler_past_its_time_is_tried_again_later_and_its_chat_goes_on(
    db: Database,
) -> None:
    await inbox.store(db, [update(21, user=1), update(22, user=1)])
    claimed = await inbox.claim(db, owner="host:bot:1", limit=10, claim_seconds=60)
    ran: list[int] = []

    async def run_one(item: InboxUpdate, correlation_id: str) -> None:
        if item.update_id == 21:
            await asyncio.Event().wait()  # never answers
        ran.append(item.update_id)

    processor = InboxProcessor(
        lambda: db, owner="host:bot:1", alerts=lambda: Alerts(), handler_timeout=0.5
    )
    await processor.process(claimed, OnAsyncio(run_one))
    assert ran == [22]
    rows = await fetch(
        db,
        "select update_id, processed_at is not null as done, last_error"
        " from telegram_updates order by update_id",
    )
    assert rows[0]["update_id"] == 21 and not rows[0]["done"]
    assert "TooSlowError" in rows[0]["last_error"]
    assert rows[1]["update_id"] == 22 and rows[1]["done"]


async def test_a_cancellation_mid_batch_leaves_the_unsettled_updates_claimable_at_once(
    db: Database,
) -> None:
    await inbox.store(db, [update(31, user=1), update(32, user=1), update(33, user=2)])
    claimed = await inbox.claim(db, owner="host:bot:1", limit=10, claim_seconds=600)
    cleaned_up: list[int] = []

    async def run_one(item: InboxUpdate, correlation_id: str) -> None:
        if item.update_id == 32:
            try:
                await asyncio.Event().wait()  # still running when the cancellation comes
            finally:
                cleaned_up.append(item.update_id)

    processor = InboxProcessor(lambda: db, owner="host:bot:1", alerts=lambda: Alerts())
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(processor.process, claimed, OnAsyncio(run_one))
            await wait_until_processed(processor, 2)
            scope.cancel()
    assert cleaned_up == [32]  # the asyncio side's cleanup ran before trio went on
    assert processor.processed == 2
    # 31 and 33 are settled; 32 was handed back: claimable now, not in ten minutes
    again = await inbox.claim(db, owner="host:bot:2", limit=10, claim_seconds=60)
    assert [each.update_id for each in again] == [32]


async def test_a_stop_leaves_the_updates_not_started_claimable(db: Database) -> None:
    await inbox.store(db, [update(41, user=1), update(42, user=1), update(43, user=1)])
    claimed = await inbox.claim(db, owner="host:bot:1", limit=10, claim_seconds=600)
    stop = trio.Event()
    ran: list[int] = []

    async def set_stop() -> None:
        stop.set()

    async def run_one(item: InboxUpdate, correlation_id: str) -> None:
        ran.append(item.update_id)
        if item.update_id == 41:
            await call_trio(set_stop)  # asked to stop while the first runs: it finishes

    processor = InboxProcessor(lambda: db, owner="host:bot:1", alerts=lambda: Alerts())
    await processor.process(claimed, OnAsyncio(run_one), stop)
    assert ran == [41]
    assert processor.processed == 1
    again = await inbox.claim(db, owner="host:bot:2", limit=10, claim_seconds=60)
    assert [each.update_id for each in again] == [42, 43]
