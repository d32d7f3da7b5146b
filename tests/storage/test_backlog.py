"""The backlog read against a real PostgreSQL: what waits, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runtime.storage import Connection, Database, inbox
from runtime.storage.backlog import read
from runtime.storage.outbox import claim, enqueue


async def _jobs(db: Database, *jobs: tuple[str, str, datetime | None]) -> None:
    async def unit(conn: Connection) -> None:
        for kind, key, run_at in jobs:
            await enqueue(conn, kind=kind, dedup_key=key, payload={}, run_at=run_at)

    await db.transaction(unit)


async def test_nothing_waits_in_an_empty_database(db: Database) -> None:
    backlog = await read(db)
    assert backlog.outbox == {}
    assert (backlog.inbox.count, backlog.inbox.oldest_seconds) == (0, 0.0)


async def test_due_jobs_count_by_kind_and_claimed_or_future_ones_do_not(db: Database) -> None:
    now = datetime.now(UTC)
    await _jobs(
        db,
        ("notify", "n1", now - timedelta(minutes=5)),
        ("notify", "n2", None),
        ("activate", "a1", now - timedelta(seconds=30)),
        ("activate", "a2", now + timedelta(hours=1)),
        ("revoke", "r1", None),
    )
    await claim(db, kinds=["revoke"], owner="test", limit=10, claim_seconds=300)
    backlog = await read(db)
    assert {kind: w.count for kind, w in backlog.outbox.items()} == {"notify": 2, "activate": 1}
    assert 290 <= backlog.outbox["notify"].oldest_seconds < 3600
    assert 25 <= backlog.outbox["activate"].oldest_seconds < 3600


async def test_unhandled_updates_are_counted_until_processed(db: Database) -> None:
    updates = [{"update_id": n, "message": {"message_id": n, "date": 0}} for n in (1, 2, 3)]
    await inbox.store(db, updates)

    async def handled(conn: Connection) -> None:
        await conn.execute("update telegram_updates set processed_at = now() where update_id = 1")

    await db.transaction(handled)
    backlog = await read(db)
    assert backlog.inbox.count == 2
    assert backlog.inbox.oldest_seconds >= 0.0
