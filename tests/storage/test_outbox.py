"""The outbox against a real PostgreSQL: dedup, claims by tasks and by processes, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.failures import DomainError
from runtime.storage import Connection, Database
from runtime.storage.outbox import (
    FailOutcome,
    Job,
    claim,
    complete,
    complete_and_claim,
    counts,
    dead_letters,
    enqueue,
    enqueue_job,
    enqueue_jobs,
    fail,
    release,
    requeue_dead,
)
from runtime.supervision import Backoff

ROOT = Path(__file__).resolve().parents[2]
CLAIMER = Path(__file__).with_name("outbox_claimer_proc.py")
KIND = "test.job"  # the kind the claimer process works on


async def add_jobs(db: Database, n: int, *, kind: str = KIND) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(
            "insert into outbox (kind, dedup_key, payload)"
            " select $1, $1 || ':' || i, jsonb_build_object('i', i)"
            " from generate_series(1, $2) as i",
            kind,
            n,
        )

    await db.transaction(unit)


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def execute(db: Database, sql: str, *args: Any) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


# -- enqueueing ---------------------------------------------------------------------------


async def test_the_same_dedup_key_makes_one_job(db: Database) -> None:
    assert await enqueue_job(db, kind="notify", dedup_key="pay:1", payload={"user": 1})
    assert not await enqueue_job(db, kind="notify", dedup_key="pay:1", payload={"user": 2})
    rows = await fetch(db, "select kind, payload, status from outbox")
    assert rows == [{"kind": "notify", "payload": {"user": 1}, "status": "pending"}]


async def test_a_job_exists_only_if_its_transaction_commits(db: Database) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute("insert into users (telegram_id) values (7)")
        assert await enqueue(conn, kind="notify", dedup_key="welcome:7", payload={})
        raise DomainError("the state change is refused")

    with pytest.raises(DomainError):
        await db.transaction(unit)
    assert await counts(db) == {"pending": 0, "done": 0, "dead": 0}

    async def committed(conn: Connection) -> bool:
        await conn.execute("insert into users (telegram_id) values (7)")
        return await enqueue(conn, kind="notify", dedup_key="welcome:7", payload={})

    assert await db.transaction(committed)
    assert await counts(db) == {"pending": 1, "done": 0, "dead": 0}


async def test_claims_take_due_jobs_of_the_asked_kinds_only(db: Database) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await enqueue_job(db, kind="a", dedup_key="a1", payload={})
    await enqueue_job(db, kind="b", dedup_key="b1", payload={})
    await enqueue_job(db, kind="a", dedup_key="a2", payload={}, run_at=later)
    jobs = await claim(db, kinds=["a"], owner="w", limit=10, claim_seconds=30)
    assert [j.dedup_key for j in jobs] == ["a1"]
    assert jobs[0].attempts == 1 and jobs[0].claimed_by == "w"
    # claimed: no longer due, for anyone
    assert await claim(db, kinds=["a", "b"], owner="v", limit=10, claim_seconds=30) == [
        await _only(db, "b1")
    ]


async def _only(db: Database, dedup_key: str) -> Job:
    (row,) = await fetch(db, "select * from outbox where dedup_key = $1", dedup_key)
    return Job(
        row["id"],
        row["kind"],
        row["dedup_key"],
        row["payload"],
        row["attempts"],
        row["max_attempts"],
        row["claimed_by"],
        row["claim_expires_at"],
        row["claims"],
    )


# -- claiming: exactly once ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 50])
async def test_concurrent_claimers_do_every_job_exactly_once(db: Database, batch: int) -> None:
    await add_jobs(db, 1000)
    claimed: Counter[int] = Counter()
    completed: Counter[int] = Counter()

    async def worker(owner: str) -> None:
        while True:
            jobs = await claim(db, kinds=[KIND], owner=owner, limit=batch, claim_seconds=30)
            if not jobs:
                return
            claimed.update(j.id for j in jobs)
            completed.update(await complete(db, jobs, owner=owner))

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(worker, f"worker-{i}")

    ids = {row["id"] for row in await fetch(db, "select id from outbox")}
    assert len(ids) == 1000
    assert set(claimed) == ids and set(claimed.values()) == {1}
    assert set(completed) == ids and set(completed.values()) == {1}
    assert await counts(db) == {"pending": 0, "done": 1000, "dead": 0}


async def test_a_job_is_completed_once_and_only_by_its_current_claim(db: Database) -> None:
    await add_jobs(db, 2)
    first = await claim(db, kinds=[KIND], owner="slow", limit=2, claim_seconds=0.2)
    await trio.sleep(0.3)  # both claims expire
    # another worker takes one over; the slow one takes the other over itself
    (taken,) = await claim(db, kinds=[KIND], owner="fast", limit=1, claim_seconds=30)
    (again,) = await claim(db, kinds=[KIND], owner="slow", limit=1, claim_seconds=30)
    # the lost claims gave their attempts back; the claims are numbered on
    assert (taken.attempts, taken.claim) == (again.attempts, again.claim) == (1, 2)

    assert await complete(db, first, owner="slow") == frozenset()  # stale claims: fenced off
    assert await complete(db, taken, owner="fast")
    assert await complete(db, again, owner="slow")
    assert not await complete(db, again, owner="slow")  # done once
    assert await fail(db, taken, owner="fast", error="late") is FailOutcome.LOST
    assert await counts(db) == {"pending": 0, "done": 2, "dead": 0}


async def test_an_expired_claim_not_yet_taken_over_still_counts(db: Database) -> None:
    await add_jobs(db, 1)
    jobs = await claim(db, kinds=[KIND], owner="w", limit=1, claim_seconds=0.1)
    await trio.sleep(0.2)
    assert await complete(db, jobs, owner="w") == {jobs[0].id}
    assert await claim(db, kinds=[KIND], owner="v", limit=1, claim_seconds=30) == []


async def test_released_jobs_are_due_again_without_spending_an_attempt(db: Database) -> None:
    await add_jobs(db, 3)
    jobs = await claim(db, kinds=[KIND], owner="w", limit=3, claim_seconds=30)
    assert await release(db, jobs[:2], owner="w") == {jobs[0].id, jobs[1].id}
    again = await claim(db, kinds=[KIND], owner="v", limit=3, claim_seconds=30)
    assert [(j.id, j.attempts) for j in again] == [(jobs[0].id, 1), (jobs[1].id, 1)]


# -- claiming from several processes ------------------------------------------------------------


class Claimer:
    """An outbox_claimer_proc.py process, read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, dsn: str, owner: str, mode: str, *args: str) -> Claimer:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = await trio.lowlevel.open_process(
            [sys.executable, str(CLAIMER), dsn, owner, mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            with trio.fail_after(60):
                chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError("the claimer process ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def go(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")

    async def results(self) -> list[dict[str, Any]]:
        """The JSON lines up to ``done``."""
        found = []
        while (line := await self.line()) != "done":
            found.append(json.loads(line))
        with trio.fail_after(60):
            assert await self.process.wait() == 0
        return found

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


async def start_claimers(specs: list[tuple[str, str, list[str]]], dsn: str) -> list[Claimer]:
    """Start processes, wait until each is connected, then let them all go at once."""
    claimers = [await Claimer.start(dsn, owner, mode, *args) for owner, mode, args in specs]
    for c in claimers:
        assert await c.line() == "ready"
    for c in claimers:
        await c.go()
    return claimers


async def test_claimer_processes_do_every_job_exactly_once(db: Database, database_dsn: str) -> None:
    await add_jobs(db, 1500)
    specs = [(f"proc-{i}", "run", ["--batch", str(b)]) for i, b in enumerate((1, 10, 50))]
    claimers = await start_claimers(specs, database_dsn)
    try:
        claimed: Counter[int] = Counter()
        completed: Counter[int] = Counter()
        busy: list[int] = []
        for c in claimers:
            lines = await c.results()
            busy.append(sum(len(line["completed"]) for line in lines))
            for line in lines:
                claimed.update(line["claimed"])
                completed.update(line["completed"])
    finally:
        for c in claimers:
            c.kill()

    ids = {row["id"] for row in await fetch(db, "select id from outbox")}
    assert set(claimed) == ids and set(claimed.values()) == {1}
    assert set(completed) == ids and set(completed.values()) == {1}
    assert await counts(db) == {"pending": 0, "done": 1500, "dead": 0}
    assert all(busy), f"every process should have taken part: {busy}"


async def test_a_killed_claimers_jobs_are_done_by_another_after_the_claim_expires(
    db: Database, database_dsn: str
) -> None:
    await add_jobs(db, 30)
    (victim,) = await start_claimers(
        [("victim", "hang", ["--batch", "10", "--ttl", "1"])], database_dsn
    )
    try:
        hung = json.loads(await victim.line())["hung"]
        victim.kill()
        with trio.fail_after(60):
            await victim.process.wait()
    finally:
        victim.kill()
    stale = [
        Job(**{**j, "claim_expires_at": datetime.fromisoformat(j["claim_expires_at"])})
        for j in hung
    ]
    assert len(stale) == 10 and {j.attempts for j in stale} == {1}

    (rescuer,) = await start_claimers([("rescuer", "run", ["--batch", "4"])], database_dsn)
    try:
        lines = await rescuer.results()
    finally:
        rescuer.kill()
    completed = Counter(i for line in lines for i in line["completed"])
    ids = {row["id"] for row in await fetch(db, "select id from outbox")}
    assert set(completed) == ids and set(completed.values()) == {1}

    rows = await fetch(
        db,
        "select id, attempts, claimed_by, status from outbox where id = any($1::bigint[])",
        [j.id for j in stale],
    )
    # the victim's death cost no attempt: it counts as a lost claim of each job it ran
    assert {(r["attempts"], r["claimed_by"], r["status"]) for r in rows} == {(1, "rescuer", "done")}
    lost = await fetch(
        db, "select lost_claims, claims from outbox where id = any($1)", [j.id for j in stale]
    )
    assert {(r["lost_claims"], r["claims"]) for r in lost} == {(1, 2)}
    # the killed claimer's late outcomes do not count
    assert await complete(db, stale, owner="victim") == frozenset()
    assert await fail(db, stale[0], owner="victim", error="late") is FailOutcome.LOST
    assert await counts(db) == {"pending": 0, "done": 30, "dead": 0}


# -- failures ---------------------------------------------------------------------------------


async def _make_due(db: Database) -> None:
    await execute(db, "update outbox set next_attempt_at = now() where status = 'pending'")


async def test_failures_back_off_then_dead_letter_and_operators_requeue(db: Database) -> None:
    backoff = Backoff(min=10.0, max=1000.0, multiplier=3.0, jitter=0.0)
    await enqueue_job(db, kind="k", dedup_key="j", payload={"x": 1}, max_attempts=3)
    delays = []
    outcomes = []
    for _ in range(3):
        (job,) = await claim(db, kinds=["k"], owner="w", limit=1, claim_seconds=30)
        outcomes.append(
            await fail(db, job, owner="w", error=f"boom {job.attempts}", backoff=backoff)
        )
        (row,) = await fetch(
            db,
            "select extract(epoch from next_attempt_at - updated_at)::float8 as delay from outbox",
        )
        delays.append(row["delay"])
        if outcomes[-1] is FailOutcome.RETRY:
            assert await claim(db, kinds=["k"], owner="w", limit=1, claim_seconds=30) == []
            await _make_due(db)
    assert outcomes == [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.DEAD]
    assert delays[:2] == pytest.approx([10.0, 30.0], abs=0.01)

    (dead,) = await dead_letters(db)
    assert (dead.dedup_key, dead.attempts, dead.last_error, dead.payload) == (
        "j",
        3,
        "boom 3",
        {"x": 1},
    )
    assert await counts(db) == {"pending": 0, "done": 0, "dead": 1}
    assert await claim(db, kinds=["k"], owner="w", limit=1, claim_seconds=30) == []

    assert await requeue_dead(db, [dead.id]) == 1
    assert await requeue_dead(db, [dead.id]) == 0  # not dead any more
    (job,) = await claim(db, kinds=["k"], owner="w", limit=1, claim_seconds=30)
    assert (job.attempts, job.max_attempts) == (1, 3)
    assert await complete(db, job, owner="w")
    assert await counts(db) == {"pending": 0, "done": 1, "dead": 0}


async def test_a_peer_hint_replaces_the_backoff_and_permanent_failures_die_at_once(
    db: Database,
) -> None:
    await enqueue_job(db, kind="k", dedup_key="a", payload={})
    await enqueue_job(db, kind="k", dedup_key="b", payload={})
    first, second = await claim(db, kinds=["k"], owner="w", limit=2, claim_seconds=30)
    assert await fail(db, first, owner="w", error="429", retry_after=42) is FailOutcome.RETRY
    assert await fail(db, second, owner="w", error="bad", permanent=True) is FailOutcome.DEAD
    rows = await fetch(
        db,
        "select dedup_key, status,"
        " extract(epoch from next_attempt_at - updated_at)::float8 as delay"
        " from outbox order by dedup_key",
    )
    assert [(r["dedup_key"], r["status"]) for r in rows] == [("a", "pending"), ("b", "dead")]
    assert rows[0]["delay"] == pytest.approx(42, abs=0.01)


async def test_a_job_whose_claims_keep_expiring_is_dead_lettered_not_handed_out(
    db: Database,
) -> None:
    await enqueue_job(db, kind="k", dedup_key="poison", payload={}, max_attempts=1)
    (job,) = await claim(db, kinds=["k"], owner="w", limit=5, claim_seconds=0.1)
    await trio.sleep(0.2)  # the worker "died" holding it
    jobs = await claim(db, kinds=["k"], owner="w", limit=5, claim_seconds=0.1)
    assert jobs == [] and [d.id for d in jobs.buried] == [job.id]
    assert "its worker died while running it, 1 time(s)" in (jobs.buried[0].last_error or "")
    assert await counts(db) == {"pending": 0, "done": 0, "dead": 1}
    assert not await complete(db, job, owner="w")


async def test_a_job_that_kills_its_worker_every_time_is_still_dead_lettered(
    db: Database, database_dsn: str
) -> None:
    """A poison job among good ones, worked by an instance that restarts under the same
    id whenever it dies: every restart takes back the dead run's claims at once (nothing
    waits for a claim to expire), the deaths cost no attempt, and the poison job is
    dead-lettered after ``max_attempts`` lost claims while every good job is done once."""
    await add_jobs(db, 12)
    await enqueue_job(db, kind=KIND, dedup_key="poison", payload={"poison": True}, max_attempts=3)
    deaths = 0
    while True:
        (worker,) = await start_claimers(
            [("vpn-1", "poisoned", ["--batch", "5", "--ttl", "86400"])], database_dsn
        )
        try:
            with trio.fail_after(60):
                outcome = await worker.process.wait()
        finally:
            worker.kill()
        if outcome == 0:
            break
        assert outcome == -signal.SIGKILL
        deaths += 1
        assert deaths <= 3, "the poison job was handed out after its last lost claim"
    assert deaths == 3
    rows = await fetch(
        db, "select dedup_key, status, attempts, lost_claims, last_error from outbox order by id"
    )
    poison = rows[-1]
    assert (poison["status"], poison["attempts"], poison["lost_claims"]) == ("dead", 0, 3)
    assert "its worker died while running it, 3 time(s)" in poison["last_error"]
    good = rows[:-1]
    assert {(r["status"], r["attempts"], r["lost_claims"]) for r in good} == {("done", 1, 0)}


async def test_enqueue_many_adds_new_jobs_in_one_statement_and_skips_known_keys(
    db: Database,
) -> None:
    from runtime.storage.outbox import enqueue_many

    async def unit(conn: Connection) -> tuple[int, int]:
        first = await enqueue_many(
            conn, kind="bulk", jobs=[("bulk:1", {"n": 1}), ("bulk:2", {"n": 2})]
        )
        again = await enqueue_many(
            conn, kind="bulk", jobs=[("bulk:2", {"n": 2}), ("bulk:3", {"n": 3})], max_attempts=3
        )
        return first, again

    assert await db.transaction(unit) == (2, 1)

    async def rows(conn: Connection) -> list[tuple[str, dict[str, Any], int]]:
        found = await conn.fetch(
            "select dedup_key, payload, max_attempts from outbox where kind = 'bulk' order by id"
        )
        return [(r["dedup_key"], r["payload"], r["max_attempts"]) for r in found]

    assert await db.read(rows) == [
        ("bulk:1", {"n": 1}, 10),
        ("bulk:2", {"n": 2}, 10),
        ("bulk:3", {"n": 3}, 3),
    ]


async def test_enqueue_many_keeps_keys_and_payloads_exactly(db: Database) -> None:
    """The batch travels as one JSON document: keys and payloads come back as they went,
    whatever they hold, and a key twice in one batch makes one job."""
    from runtime.storage.outbox import enqueue_many

    jobs = [
        ('odd:"quoted"\\back', {"text": "Привет, мир ✓", "nested": [1, {"a": None}], "n": 2.5}),
        ("odd:[0]", {}),
        ("odd:[0]", {"second": True}),
    ]

    async def unit(conn: Connection) -> int:
        return await enqueue_many(conn, kind="odd", jobs=jobs)

    assert await db.transaction(unit) == 2

    async def rows(conn: Connection) -> list[tuple[str, dict[str, Any]]]:
        found = await conn.fetch(
            "select dedup_key, payload from outbox where kind = 'odd' order by id"
        )
        return [(r["dedup_key"], r["payload"]) for r in found]

    assert await db.read(rows) == [jobs[0], jobs[1]]


async def test_batched_enqueues_racing_on_the_same_keys_make_each_job_once(db: Database) -> None:
    new: list[int] = []

    async def producer(offset: int) -> None:
        for start in range(offset, 200 + offset, 10):
            keys = [(f"batch:{i}", {"i": i}) for i in range(start, start + 10)]
            new.append(await enqueue_jobs(db, kind=KIND, jobs=keys))

    async with trio.open_nursery() as nursery:
        for offset in (0, 0, 5, 100):
            nursery.start_soon(producer, offset)

    rows = await fetch(db, "select dedup_key, payload from outbox")
    assert sorted(r["dedup_key"] for r in rows) == sorted(f"batch:{i}" for i in range(300))
    assert all(r["payload"] == {"i": int(r["dedup_key"].split(":")[1])} for r in rows)
    assert sum(new) == 300


@pytest.mark.parametrize("batch", [1, 10, 50])
async def test_completing_and_claiming_in_one_statement_does_every_job_exactly_once(
    db: Database, batch: int
) -> None:
    await add_jobs(db, 1000)
    claimed: Counter[int] = Counter()
    completed: Counter[int] = Counter()

    async def worker(owner: str) -> None:
        jobs = await claim(db, kinds=[KIND], owner=owner, limit=batch, claim_seconds=30)
        while jobs:
            claimed.update(j.id for j in jobs)
            counted, jobs = await complete_and_claim(
                db, jobs, kinds=[KIND], owner=owner, limit=batch, claim_seconds=30
            )
            completed.update(counted)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(worker, f"worker-{i}")

    ids = {row["id"] for row in await fetch(db, "select id from outbox")}
    assert len(ids) == 1000
    assert set(claimed) == ids and set(claimed.values()) == {1}
    assert set(completed) == ids and set(completed.values()) == {1}
    assert await counts(db) == {"pending": 0, "done": 1000, "dead": 0}


async def test_complete_and_claim_is_fenced_and_picks_up_expired_claims(db: Database) -> None:
    await add_jobs(db, 3)
    dying = await claim(db, kinds=[KIND], owner="dying", limit=2, claim_seconds=30)
    (mine,) = await claim(db, kinds=[KIND], owner="alive", limit=1, claim_seconds=30)
    # the dying worker's claims run out (on the database's clock)
    await execute(
        db,
        "update outbox set next_attempt_at = now(), claim_expires_at = now()"
        " where claimed_by = 'dying'",
    )
    counted, taken = await complete_and_claim(
        db, [mine], kinds=[KIND], owner="alive", limit=5, claim_seconds=30
    )
    assert counted == {mine.id}
    assert sorted(j.id for j in taken) == sorted(j.id for j in dying)
    assert all(j.claim == 2 and j.attempts == 1 for j in taken)  # lost claims cost no attempt
    # the dying worker comes back: its stale claims count for nothing, and it gets nothing
    stale, nothing = await complete_and_claim(
        db, dying, kinds=[KIND], owner="dying", limit=5, claim_seconds=30
    )
    assert stale == frozenset() and nothing == []
    counted, rest = await complete_and_claim(
        db, taken, kinds=[KIND], owner="alive", limit=5, claim_seconds=30
    )
    assert counted == {j.id for j in taken} and rest == []
    assert await counts(db) == {"pending": 0, "done": 3, "dead": 0}


async def test_a_claim_reads_its_kind_in_index_order_without_sorting_the_backlog(
    db: Database,
) -> None:
    from runtime.storage.outbox import _CLAIM_QUERIES

    await add_jobs(db, 5000)
    await add_jobs(db, 5000, kind="other")
    await execute(db, "analyze outbox")

    async def plan(conn: Connection) -> str:
        rows = await conn.fetch(
            "explain " + _CLAIM_QUERIES[True, False], KIND, 10, "w", timedelta(seconds=30), True
        )
        return "\n".join(r[0] for r in rows)

    text = await db.transaction(plan)
    assert "outbox_claim" in text and "Sort" not in text, text


@pytest.mark.parametrize("settle", [False, True])
async def test_outcomes_reach_their_rows_by_primary_key_under_a_generic_plan(
    db: Database, settle: bool
) -> None:
    """asyncpg prepares every statement and PostgreSQL may plan it generically from its sixth
    execution on, with statistics of a table that was empty when last analyzed (as after a
    truncate): the outcome must still find its rows by id, not read a partial index whole
    or hash the table."""
    from runtime.storage.outbox import _CLAIM_QUERIES, _COMPLETE

    async def vacuum(conn: Connection) -> None:
        await conn.execute("vacuum analyze outbox")

    await db.session(vacuum)
    await add_jobs(db, 3000)
    jobs = await claim(db, kinds=[KIND], owner="w", limit=200, claim_seconds=30)
    ids, claims = [j.id for j in jobs], [j.claim for j in jobs]

    def array(values: list[int]) -> str:
        return "'{" + ",".join(str(int(v)) for v in values) + "}'"

    async def plan(conn: Connection) -> str:
        await conn.execute("set local plan_cache_mode = force_generic_plan")
        if settle:
            types = "text, integer, text, interval, boolean, bigint[], integer[]"
            query, args = _CLAIM_QUERIES[True, True], f"'{KIND}', 200, 'w', '30 s', true"
            args += f", {array(ids)}, {array(claims)}"
        else:
            types, query = "bigint[], integer[], text", _COMPLETE
            args = f"{array(ids)}, {array(claims)}, 'w'"
        await conn.execute(f"prepare outcome ({types}) as {query}")
        rows = await conn.fetch(f"explain execute outcome ({args})")
        await conn.execute("deallocate outcome")
        return "\n".join(r[0] for r in rows)

    text = await db.transaction(plan)
    outcome = text.split("CTE due")[0]  # the completion (all of it without settle)
    assert "outbox_pkey" in outcome and "outbox_claim" not in outcome, text
    assert "Seq Scan" not in text and "Function Scan" not in text, text


async def test_a_claim_alone_commits_without_waiting_for_the_disk_and_outcomes_wait(
    db: Database,
) -> None:
    from runtime.storage.outbox import _CLAIM_QUERIES

    await add_jobs(db, 4)
    args = (KIND, 2, "w", timedelta(seconds=30), True)

    async def setting_after(conn: Connection, query: str, *extra: Any) -> tuple[int, str]:
        await conn.execute("set local synchronous_commit = on")  # the test server's is off
        rows = await conn.fetch(query, *args, *extra)
        return len(rows), await conn.fetchval("show synchronous_commit")

    async def claim_alone(conn: Connection) -> tuple[int, str]:
        return await setting_after(conn, _CLAIM_QUERIES[True, False])

    assert await db.transaction(claim_alone) == (2, "off")

    async def notifications_claim(conn: Connection) -> str:
        from runtime.storage.scans import _CLAIM_DIRECT

        await conn.execute("set local synchronous_commit = on")
        await conn.fetch(_CLAIM_DIRECT, 1, "w", timedelta(seconds=30), False)
        value: str = await conn.fetchval("show synchronous_commit")
        return value

    assert await db.transaction(notifications_claim) == "off"
    (job,) = await claim(db, kinds=[KIND], owner="w", limit=1, claim_seconds=30)

    async def settle_and_claim(conn: Connection) -> tuple[int, str]:
        return await setting_after(conn, _CLAIM_QUERIES[True, True], [job.id], [job.claim])

    assert await db.transaction(settle_and_claim) == (2, "on")  # one done, one claimed
