"""The update inbox on a real PostgreSQL: stored once, claimed once, retried, released."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio

from runtime.storage import Connection, Database, inbox, leases
from runtime.storage.leases import LeaseLost


def update(update_id: int, user: int = 7, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1700000000,
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "A"},
            "text": text,
        },
    }


async def rows(db: Database) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in await conn.fetch(
                "select update_id, attempts, processed_at, claimed_by, last_error"
                " from telegram_updates order by update_id"
            )
        ]

    return await db.read(unit)


async def test_an_update_is_stored_once(db: Database) -> None:
    assert await inbox.store(db, [update(1), update(2)]) == 2
    assert await inbox.store(db, [update(2), update(3)]) == 1
    assert [r["update_id"] for r in await rows(db)] == [1, 2, 3]
    assert await inbox.pending_count(db) == 3


async def test_an_update_needs_an_integer_id(db: Database) -> None:
    with pytest.raises(ValueError):
        await inbox.store(db, [{"message": {}}])
    with pytest.raises(ValueError):
        await inbox.store(db, [{"update_id": True}])


async def test_a_fenced_store_needs_the_current_lease(db: Database) -> None:
    lease = await leases.acquire(db, "telegram-polling", "a", 30)
    assert lease is not None
    assert await inbox.store(db, [update(1)], lease=lease) == 1
    await leases.release(db, lease)
    taken = await leases.acquire(db, "telegram-polling", "b", 30)
    assert taken is not None
    with pytest.raises(LeaseLost):
        await inbox.store(db, [update(2)], lease=lease)
    assert [r["update_id"] for r in await rows(db)] == [1]


async def test_claims_skip_what_others_hold_and_come_back_when_expired(db: Database) -> None:
    await inbox.store(db, [update(i) for i in range(1, 6)])
    first = await inbox.claim(db, owner="a", limit=3, claim_seconds=0.3)
    second = await inbox.claim(db, owner="b", limit=10, claim_seconds=30)
    assert [u.update_id for u in first] == [1, 2, 3]
    assert [u.update_id for u in second] == [4, 5]
    assert await inbox.claim(db, owner="c", limit=10, claim_seconds=30) == []
    await trio.sleep(0.4)  # a's claims expire: a was killed mid-handler
    again = await inbox.claim(db, owner="c", limit=10, claim_seconds=30)
    # a's death cost no attempt: it counts as a lost claim
    assert [(u.update_id, u.attempts) for u in again] == [(1, 1), (2, 1), (3, 1)]

    async def lost(conn: Connection) -> list[int]:
        found = await conn.fetch(
            "select lost_claims from telegram_updates where update_id <= 3 order by update_id"
        )
        return [r["lost_claims"] for r in found]

    assert await db.read(lost) == [1, 1, 1]
    # a's late outcome does not count; c's does
    assert not await inbox.mark_processed(db, first[0], owner="a")
    assert await inbox.mark_processed(db, again[0], owner="c")
    assert not await inbox.mark_processed(db, again[0], owner="c")  # done once
    assert await inbox.pending_count(db) == 4


async def test_concurrent_claimers_never_share_an_update(db: Database) -> None:
    await inbox.store(db, [update(i, user=i) for i in range(1, 41)])
    seen: list[int] = []

    async def claimer(name: str) -> None:
        while batch := await inbox.claim(db, owner=name, limit=3, claim_seconds=30):
            seen.extend(u.update_id for u in batch)
            for u in batch:
                assert await inbox.mark_processed(db, u, owner=name)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(claimer, f"w{i}")
    assert sorted(seen) == list(range(1, 41))


async def test_retry_later_then_give_up(db: Database) -> None:
    await inbox.store(db, [update(1)])
    (claimed,) = await inbox.claim(db, owner="a", limit=1, claim_seconds=30)
    assert await inbox.retry_later(
        db, claimed, owner="a", error="boom", delay_seconds=1, max_attempts=2
    )
    # Not due yet: a second is far more than a busy machine takes between two statements.
    assert await inbox.claim(db, owner="a", limit=1, claim_seconds=30) == []
    await trio.sleep(1.1)
    (again,) = await inbox.claim(db, owner="a", limit=1, claim_seconds=30)
    assert again.attempts == 2
    assert (
        await inbox.retry_later(
            db, again, owner="a", error="boom again", delay_seconds=0, max_attempts=2
        )
        is False
    )
    (row,) = await rows(db)
    assert row["processed_at"] is not None and row["last_error"] == "gave up: boom again"
    dead = await inbox.dead_updates(db)
    assert [d.update_id for d in dead] == [1]


async def test_give_up_and_release(db: Database) -> None:
    await inbox.store(db, [update(1), update(2, user=8)])
    first, second = await inbox.claim(db, owner="a", limit=2, claim_seconds=30)
    assert await inbox.give_up(db, first, owner="a", error="DomainError: no")
    assert await inbox.release(db, [second], owner="a") == 1
    (back,) = await inbox.claim(db, owner="b", limit=5, claim_seconds=30)
    assert back.update_id == 2 and back.attempts == 1  # the released try did not count


async def test_waiting_for_telegram_spends_no_attempt(db: Database) -> None:
    await inbox.store(db, [update(1), update(2, user=8), update(3, user=9)])
    one, two, three = await inbox.claim(db, owner="a", limit=3, claim_seconds=30)
    assert await inbox.wait_for_telegram(
        db,
        one,
        owner="a",
        error="TelegramServerError: Bad Gateway",
        delay_seconds=600,
        until_telegram_answers=True,
    )
    assert await inbox.wait_for_telegram(
        db,
        two,
        owner="a",
        error="TelegramRetryAfter: retry after 600",
        delay_seconds=600,
        until_telegram_answers=False,
    )
    # a claim that is not ours any more changes nothing
    assert not await inbox.wait_for_telegram(
        db, one, owner="a", error="late", delay_seconds=0, until_telegram_answers=True
    )
    assert [r["attempts"] for r in await rows(db)] == [0, 0, 1]
    assert (await rows(db))[0][
        "last_error"
    ] == "waiting for Telegram: TelegramServerError: Bad Gateway"
    assert await inbox.claim(db, owner="a", limit=5, claim_seconds=30) == []  # none due

    # Telegram answers again: what waited for it is due, flood control still waits
    assert await inbox.telegram_answers_again(db) == 1
    assert await inbox.telegram_answers_again(db) == 0
    (back,) = await inbox.claim(db, owner="b", limit=5, claim_seconds=30)
    assert (back.update_id, back.attempts) == (1, 1)
    assert await inbox.mark_processed(db, three, owner="a")


async def test_given_up_updates_are_listed_and_replayed(db: Database) -> None:
    await inbox.store(db, [update(1), update(2, user=8), update(3, user=9)])
    one, two, three = await inbox.claim(db, owner="a", limit=3, claim_seconds=30)
    assert await inbox.give_up(db, one, owner="a", error="KeyError: 'x'")
    assert await inbox.give_up(db, two, owner="a", error="KeyError: 'y'")
    assert await inbox.mark_processed(db, three, owner="a")
    dead = await inbox.dead_updates(db)
    assert [d.update_id for d in dead] == [2, 1]
    assert dead[1].kind == "message" and dead[1].error == "KeyError: 'x'"
    assert dead[1].given_up_at >= dead[1].received_at

    assert await inbox.replay(db, [1, 3, 99]) == [1]  # only what was given up
    (again,) = await inbox.claim(db, owner="b", limit=5, claim_seconds=30)
    assert (again.update_id, again.attempts) == (1, 1)
    assert [d.update_id for d in await inbox.dead_updates(db)] == [2]
    assert await inbox.replay(db) == [2]
    assert await inbox.dead_updates(db) == []
    assert await inbox.replay(db) == []


async def test_prune_keeps_recent_and_pending_updates(db: Database) -> None:
    await inbox.store(db, [update(1), update(2), update(3)])
    one, two, _ = await inbox.claim(db, owner="a", limit=3, claim_seconds=30)
    await inbox.mark_processed(db, one, owner="a")
    await inbox.give_up(db, two, owner="a", error="x")

    async def age(conn: Connection) -> None:
        await conn.execute("update telegram_updates set received_at = now() - interval '8 days'")

    await db.transaction(age)
    assert await inbox.prune(db, older_than=timedelta(days=7)) == 1
    assert [r["update_id"] for r in await rows(db)] == [2, 3]


def test_the_chat_key_keeps_one_chats_updates_together() -> None:
    from datetime import UTC, datetime

    def wrap(payload: dict[str, Any]) -> inbox.InboxUpdate:
        return inbox.InboxUpdate(1, payload, 1, "a", datetime.now(UTC))

    assert wrap(update(1, user=42)).chat_key == 42
    query = {"update_id": 2, "callback_query": {"id": "q", "from": {"id": 5}, "data": "x"}}
    assert wrap(query).chat_key == 5
    assert wrap({"update_id": 3}).chat_key is None
