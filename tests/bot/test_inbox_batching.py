"""The inbox in batches: a getUpdates page stored in one statement and acknowledged only
once stored, claims that carry the sender's record, finished updates settled together,
and no barrier between batches (a hanging handler holds up its own chat only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import trio

from runtime.bot._inbox import InboxProcessor
from runtime.bot._polling import Poller
from runtime.storage import Connection, Database, inbox, users
from runtime.storage.inbox import InboxUpdate
from runtime.supervision import ActorContext
from runtime.testing.telegram import Limits, TelegramEmulator

from .conftest import TOKEN
from .test_inbox_poison import Alerts, Context
from .test_inbox_storage import update

PATIENCE = 60.0


class CountingConnection:
    """A connection that counts the statements a unit of work sends."""

    def __init__(self, conn: Connection, statements: list[str]) -> None:
        self._conn = conn
        self._statements = statements

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
            return method

        async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
            self._statements.append(query)
            return await method(query, *args, **kwargs)

        return counted


def count_statements(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements of every unit of work ``db`` runs from now on, whatever its kind."""
    statements: list[str] = []

    def counting(real: Any) -> Any:
        async def unit(work: Any, **kwargs: Any) -> Any:
            async def counted(conn: Connection) -> Any:
                return await work(CountingConnection(conn, statements))

            return await real(counted, **kwargs)

        return unit

    for kind in ("transaction", "statement", "read", "session"):
        monkeypatch.setattr(db, kind, counting(getattr(db, kind)))
    return statements


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


# -- storing ------------------------------------------------------------------------------


async def test_a_page_is_stored_in_one_statement(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = [update(1000 + i, user=10 + i % 7) for i in range(100)]
    statements = count_statements(db, monkeypatch)
    assert await inbox.store(db, page) == 100
    assert len(statements) == 1 and "unnest" in statements[0]
    stored = await fetch(db, "select update_id from telegram_updates order by update_id")
    assert [row["update_id"] for row in stored] == list(range(1000, 1100))


async def test_a_page_stored_twice_is_kept_once(db: Database) -> None:
    page = [update(2000 + i) for i in range(50)]
    assert await inbox.store(db, page) == 50
    claimed = await inbox.claim(db, owner="a", limit=10, claim_seconds=60)
    assert await inbox.mark_many_processed(db, claimed, owner="a")
    again = [update(2000 + i) for i in range(50)]
    assert await inbox.store(db, again) == 0  # a redelivery of the same page
    assert await inbox.store(db, [*again, update(2050)]) == 1
    rows = await fetch(
        db, "select update_id, payload, processed_at from telegram_updates order by update_id"
    )
    assert len(rows) == 51
    assert all(row["payload"]["message"]["text"] == "hi" for row in rows)
    assert sum(row["processed_at"] is not None for row in rows) == 10  # settled ones stay


# -- claiming and settling ----------------------------------------------------------------


async def test_a_claim_carries_the_senders_record_when_there_is_one(db: Database) -> None:
    async def create(conn: Connection) -> None:
        await users.ensure_user(conn, 31, username="ann", language="ru")

    await db.transaction(create)
    await inbox.store(db, [update(1, user=31), update(2, user=32)])
    known, unknown = await inbox.claim(db, owner="a", limit=10, claim_seconds=60)
    assert known.sender is not None
    assert (known.sender.telegram_id, known.sender.username) == (31, "ann")
    assert known.sender.language == "ru"
    assert unknown.sender is None


async def test_finished_updates_are_settled_in_one_statement_only_while_claimed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await inbox.store(db, [update(i, user=i) for i in range(1, 7)])
    claimed = await inbox.claim(db, owner="a", limit=6, claim_seconds=60)
    # one claim expired and went to another owner meanwhile: its outcome does not count
    taken = claimed[0]
    await inbox.release(db, [taken], owner="a")
    statements = count_statements(db, monkeypatch)
    settled = await inbox.mark_many_processed(db, claimed, owner="a")
    assert len(statements) == 1
    assert sorted(settled) == [2, 3, 4, 5, 6]
    rows = await fetch(db, "select update_id from telegram_updates where processed_at is null")
    assert rows == [{"update_id": taken.update_id}]


async def test_a_hanging_handler_holds_up_its_chat_only(db: Database) -> None:
    hanging_chat, others = 900, list(range(901, 911))
    await inbox.store(
        db,
        [
            update(1, user=hanging_chat),
            update(2, user=hanging_chat),
            *(update(10 + i, user=chat) for i, chat in enumerate(others)),
        ],
    )
    release = trio.Event()
    handled: list[int] = []

    async def feed(item: InboxUpdate, correlation_id: str) -> None:
        if item.update_id == 1:
            await release.wait()
        handled.append(item.update_id)

    processor = InboxProcessor(
        lambda: db,
        owner="host:bot:1",
        alerts=lambda: Alerts(),
        batch_size=2,
        max_in_flight=4,
        idle_seconds=0.05,
    )
    ctx = Context()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run, cast(ActorContext, ctx), feed)
        with trio.fail_after(PATIENCE):
            while processor.processed < len(others):  # noqa: ASYNC110 - it runs beside us
                await trio.sleep(0.02)
        # every other chat went through in batches of two while update 1 hangs, and
        # update 2 waits behind it: one chat's updates run in order
        assert sorted(handled) == [10 + i for i in range(len(others))]
        release.set()
        with trio.fail_after(PATIENCE):
            while processor.processed < len(others) + 2:  # noqa: ASYNC110
                await trio.sleep(0.02)
        ctx.stop_requested.set()
        processor.wakeup.set()
    assert handled[-2:] == [1, 2]
    assert await inbox.pending_count(db) == 0


# -- acknowledging ------------------------------------------------------------------------


class Crash(BaseException):
    """The process dies (nothing after this point runs)."""


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, limits=Limits.off())
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


async def test_a_crash_between_storing_a_page_and_acknowledging_it_loses_nothing(
    db: Database, emulator: TelegramEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [emulator.create_user(first_name=f"P{i}") for i in range(5)]
    for person in people * 4:
        person.send_text("hello")
    sent = [u["update_id"] for u in emulator.pending_updates()]
    assert len(sent) == 20
    real_store = inbox.store

    async def store_then_die(*args: Any, **kwargs: Any) -> int:
        await real_store(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(inbox, "store", store_then_die)
    async with emulator.bot_client() as bot:
        first = Poller(lambda: db, holder="first", on_stored=lambda: None, timeout=1)
        with pytest.raises(BaseExceptionGroup) as crashed:
            await first.run(cast(ActorContext, Context()), bot)
        assert crashed.group_contains(Crash)
    stored = await fetch(db, "select update_id from telegram_updates order by update_id")
    assert [row["update_id"] for row in stored] == sent
    assert len(emulator.pending_updates()) == 20  # never acknowledged

    monkeypatch.setattr(inbox, "store", real_store)
    await fetch(db, "update leases set expires_at = '-infinity' returning name")  # it died
    async with emulator.bot_client() as bot:
        second = Poller(lambda: db, holder="second", on_stored=lambda: None, timeout=1)
        ctx = Context()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.run, cast(ActorContext, ctx), bot)
            await emulator.wait_until(
                lambda: not emulator.pending_updates(), timeout=PATIENCE, what="the ack"
            )
            ctx.stop_requested.set()
    stored = await fetch(db, "select update_id from telegram_updates order by update_id")
    assert [row["update_id"] for row in stored] == sent  # each once
    assert second.stored == 0  # the second poller found the page stored already
