"""``outbox_lanes.drain``: batches on several lanes, each job done and completed once."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from runtime.bridge import stats as bridge_stats
from runtime.storage import Connection, Database
from runtime.storage.outbox import Claimed, Job, counts, enqueue_jobs, fail
from runtime.storage.outbox_lanes import drain

KIND = "test.job"


async def add_jobs(db: Database, n: int) -> None:
    await enqueue_jobs(db, kind=KIND, jobs=[(f"j{i}", {"i": i}) for i in range(n)])


@pytest.mark.parametrize(("consumers", "lanes"), [(1, 1), (1, 3), (3, 2)])
async def test_every_job_is_handled_and_completed_once(
    db: Database, consumers: int, lanes: int
) -> None:
    await add_jobs(db, 600)
    handled: Counter[int] = Counter()
    reported: Counter[int] = Counter()
    in_flight = 0
    most_in_flight = 0
    totals: list[int] = []

    async def handle(jobs: Claimed) -> list[Job]:
        nonlocal in_flight, most_in_flight
        handled.update(j.id for j in jobs)
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await trio.sleep(0.001)
        in_flight -= 1
        return list(jobs)

    async def consumer(owner: str) -> None:
        total = await drain(
            db,
            handle,
            kinds=[KIND],
            owner=owner,
            limit=7,
            claim_seconds=60,
            lanes=lanes,
            on_done=reported.update,
        )
        totals.append(total)

    async with trio.open_nursery() as nursery:
        for i in range(consumers):
            nursery.start_soon(consumer, f"consumer-{i}")

    assert len(handled) == 600 and set(handled.values()) == {1}
    assert set(reported) == set(handled) and set(reported.values()) == {1}
    assert sum(totals) == 600
    assert most_in_flight > 1 if lanes * consumers > 1 else most_in_flight == 1
    assert await counts(db) == {"pending": 0, "done": 600, "dead": 0}


async def test_only_the_jobs_the_handler_returns_are_completed(db: Database) -> None:
    await add_jobs(db, 40)

    async def handle(jobs: Claimed) -> list[Job]:
        done = []
        for job in jobs:
            if job.payload["i"] % 4 == 0:
                await fail(db, job, owner=job.claimed_by, error="no", permanent=True)
            else:
                done.append(job)
        return done

    total = await drain(db, handle, kinds=[KIND], owner="w", limit=6, claim_seconds=60, lanes=2)
    assert total == 30
    assert await counts(db) == {"pending": 0, "done": 30, "dead": 10}


async def test_a_failing_handler_stops_every_lane_and_is_raised_as_it_is(db: Database) -> None:
    await add_jobs(db, 100)
    batches = 0

    async def handle(jobs: Claimed) -> list[Job]:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise LookupError("the side effect failed")
        await trio.sleep(0.001)
        return list(jobs)

    with pytest.raises(LookupError, match="side effect"):
        await drain(db, handle, kinds=[KIND], owner="w", limit=5, claim_seconds=60, lanes=2)
    assert batches <= 4  # the other lane stopped at its next checkpoint

    async def held(conn: Connection) -> int:
        value: int = await conn.fetchval(
            "select count(*) from outbox where status = 'pending' and claimed_by = 'w'"
        )
        return value

    assert 0 < await db.read(held) <= 10  # left to their claims' expiry (or a take-back)
    with pytest.raises(ValueError):
        await drain(db, handle, kinds=[KIND], owner="w", limit=5, claim_seconds=60, lanes=0)


async def test_one_statement_completes_the_finished_batches_and_feeds_every_idle_lane(
    db: Database,
) -> None:
    await add_jobs(db, 200)
    batches: list[int] = []

    async def handle(jobs: Claimed) -> list[Job]:
        assert 0 < len(jobs) <= 5
        batches.append(len(jobs))
        return list(jobs)

    before = bridge_stats.crossings
    total = await drain(db, handle, kinds=[KIND], owner="w", limit=5, claim_seconds=60, lanes=4)
    statements = bridge_stats.crossings - before
    assert total == 200 and sum(batches) == 200
    # Four lanes finish together: each statement settles four batches and claims four more
    # (and the last finds nothing due), instead of a claim and a completion per batch.
    assert statements <= len(batches) // 4 + 2
    assert await counts(db) == {"pending": 0, "done": 200, "dead": 0}


async def test_a_claim_that_only_dead_letters_does_not_end_the_drain(db: Database) -> None:
    from runtime.storage.outbox import claim, enqueue_job

    for i in range(4):
        await enqueue_job(db, kind=KIND, dedup_key=f"poison{i}", payload={}, max_attempts=1)
    held = await claim(db, kinds=[KIND], owner="dead", limit=4, claim_seconds=0.1)
    assert len(held) == 4
    await trio.sleep(0.3)  # their worker "died" holding them: the claims expired
    await add_jobs(db, 3)  # due after the poison jobs, which fill the first claim's limit

    async def handle(jobs: Claimed) -> list[Job]:
        return list(jobs)

    total = await drain(db, handle, kinds=[KIND], owner="w", limit=1, claim_seconds=60, lanes=4)
    assert total == 3
    assert await counts(db) == {"pending": 0, "done": 3, "dead": 4}
