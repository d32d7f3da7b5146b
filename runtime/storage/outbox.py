"""The outbox: durable jobs shared by every worker on every host, claimed with row locks.

Enqueue a job in the same transaction as the state change it follows from (``enqueue``
inside a unit of work), so the job exists exactly when the change committed. Workers then:

1. ``claim`` a batch: one statement picks due rows with ``FOR UPDATE SKIP LOCKED``, counts
   the attempt and stamps the claim (owner, expiry). The claim moves ``next_attempt_at`` to
   the claim's expiry, so the due scan skips claimed rows and finds them again if the
   claimer dies: a killed worker's jobs run again after ``claim_seconds``, or at once when
   its instance restarts (``take_back``).
2. do the side effect (idempotently: a job whose claim expired may run twice), ``record``
   each job's progress as it goes if the batch takes a while, then
3. ``complete`` the batch in one statement (or ``complete_and_claim``: complete it and
   claim the next batch in the same statement), or ``fail`` a job: it is scheduled again
   after a backoff, or dead-lettered once it has used ``max_attempts`` (the caller sees
   which, to alert).

Every one of these is a single statement, committed on its own (no ``BEGIN``/``COMMIT``
around it): a job reported complete is committed. A claim alone commits without waiting
for its WAL to reach the disk (a claim lost in a server crash leaves its job due again, as
a dead claimer's does); every outcome waits, and flushes the claim it fences with it.
``outbox_lanes.drain`` runs batches on several lanes, one statement completing the
batches they finished and claiming their next ones.

``complete``, ``record`` and ``fail`` count only for the claim that is still current: the
row must be claimed by this owner under the number of the claim (``claims`` counts every
claim of a row; with the owner it is the claim's fencing token). A worker whose claim
expired and was taken over learns it lost (``False``, ``FailOutcome.LOST``) and changes
nothing. A job marked done is done once.

Attempts count failures. A claim that ends with no outcome because its claimer died is a
*lost claim*: it gives its attempt back, and counts in ``lost_claims`` instead if the job
had started (a claimer that works through a batch one job at a time claims with
``started=False`` and ``record``s each start). A job whose claims were lost
``max_attempts`` times (a job that kills its worker, say) is dead-lettered by the next
``claim`` instead of being handed out again; ``Claimed.buried`` lists those.

``Connection``-level functions (``enqueue``) run on the asyncio side inside a unit of work;
everything else is a trio function running one unit of work.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

import asyncpg

from runtime.logs import get_logger
from runtime.supervision import Backoff, backoff_delay

from ._database import Connection, Database

STATUSES = ("pending", "done", "dead")

DEFAULT_RETRY_BACKOFF = Backoff(min=5.0, max=3600.0, multiplier=2.0, jitter=0.2)
"""Between attempts of a job: 5 s, 10 s, 20 s ... at most an hour, shrunk by up to 20 %."""

_log = get_logger("outbox")


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job. ``attempts`` counts this attempt (1 on the first; failures count,
    lost claims do not); ``claim`` numbers this claim among all of the job's and fences it."""

    id: int
    kind: str
    dedup_key: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    claimed_by: str
    claim_expires_at: datetime
    """When the claim runs out, on the database's clock."""
    claim: int
    steps_done: int = 0
    """How many of the job's steps earlier claims finished (``record``): resume after them."""

    @property
    def last_attempt(self) -> bool:
        """A failure now dead-letters the job."""
        return self.attempts >= self.max_attempts


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that will not run again unless an operator requeues it."""

    id: int
    kind: str
    dedup_key: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    last_error: str | None
    dead_since: datetime


class Claimed(list[Job]):
    """The jobs a ``claim`` handed out, plus ``buried``: the due jobs it dead-lettered
    instead, because their worker died while running them ``max_attempts`` times."""

    __slots__ = ("buried",)

    def __init__(self, jobs: Sequence[Job] = (), buried: Sequence[DeadLetter] = ()) -> None:
        super().__init__(jobs)
        self.buried: tuple[DeadLetter, ...] = tuple(buried)


class FailOutcome(enum.StrEnum):
    """What ``fail`` did to a job."""

    RETRY = "retry"
    """Scheduled for another attempt after the backoff."""
    DEAD = "dead"
    """Dead-lettered: no attempt left (or the failure was permanent). Alert someone."""
    LOST = "lost"
    """Nothing: the claim was no longer this owner's (it expired and was taken over)."""


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    return moment


# -- enqueueing --------------------------------------------------------------------------


async def enqueue(
    conn: Connection,
    *,
    kind: str,
    dedup_key: str,
    payload: dict[str, Any],
    max_attempts: int = 10,
    run_at: datetime | None = None,
) -> bool:
    """Add a job inside the caller's unit of work; True when new, False when ``dedup_key``
    is already known (in any status: a done job is not enqueued again)."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    inserted = await conn.fetchval(
        "insert into outbox (kind, dedup_key, payload, max_attempts, next_attempt_at)"
        " values ($1, $2, $3, $4, coalesce($5, now()))"
        " on conflict (dedup_key) do nothing returning id",
        kind,
        dedup_key,
        payload,
        max_attempts,
        None if run_at is None else _aware(run_at),
    )
    return inserted is not None


async def enqueue_many(
    conn: Connection,
    *,
    kind: str,
    jobs: Sequence[tuple[str, dict[str, Any]]],
    max_attempts: int = 10,
) -> int:
    """Add many jobs of one kind, ``(dedup_key, payload)`` each, in one statement inside
    the caller's unit of work; returns how many were new.

    The jobs travel as one JSON document, ``[[key, payload], ...]``: as two arrays (``text[]``
    and ``jsonb[]``), asyncpg encoded each payload on its own and checked every element's
    type against abstract base classes, which cost a third of a batch's client CPU."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if not jobs:
        return 0
    status = await conn.execute(
        "insert into outbox (kind, dedup_key, payload, max_attempts)"
        " select $1, j->>0, j->1, $3 from jsonb_array_elements($2::jsonb) as j"
        " on conflict (dedup_key) do nothing",
        kind,
        [[key, payload] for key, payload in jobs],
        max_attempts,
    )
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"


async def enqueue_job(
    db: Database,
    *,
    kind: str,
    dedup_key: str,
    payload: dict[str, Any],
    max_attempts: int = 10,
    run_at: datetime | None = None,
) -> bool:
    """``enqueue`` in a transaction of its own (retried: the dedup key makes it safe)."""

    async def unit(conn: Connection) -> bool:
        return await enqueue(
            conn,
            kind=kind,
            dedup_key=dedup_key,
            payload=payload,
            max_attempts=max_attempts,
            run_at=run_at,
        )

    return await db.statement(unit, retry=True)


async def enqueue_jobs(
    db: Database,
    *,
    kind: str,
    jobs: Sequence[tuple[str, dict[str, Any]]],
    max_attempts: int = 10,
) -> int:
    """``enqueue_many`` on its own: one statement, committed when it returns (retried: the
    dedup keys make it safe); returns how many were new."""

    async def unit(conn: Connection) -> int:
        return await enqueue_many(conn, kind=kind, jobs=jobs, max_attempts=max_attempts)

    return await db.statement(unit, retry=True)


# -- claiming and outcomes -------------------------------------------------------------

# A due row that is still claimed is a lost claim (its claim expired with no outcome): it
# gives its attempt back, and counts as lost if its work had started. For one kind the
# index outbox_claim returns the due rows in claim order, so the scan stops at the limit;
# ``kind = any(...)`` would make it sort the whole backlog first. The updates reach the due
# rows through the primary key (``id = any(array(...))``) and compute from the row itself,
# which the due scan locked: joined with the due rows instead, the planner hashed the whole
# table at every claim, or (a generic plan, from the sixth execution of the prepared
# statement on) probed the index once per pair of rows. A row is buried when its lost
# claims, this one counted, have reached ``max_attempts``.
LOST_CLAIM = "(claimed_by is not null and started_at is not null)::int"
"""1 when a due row's claim, now expired, was lost with its work started, else 0."""

_CLAIM = """
with {settle}due as materialized (
    select id, lost_claims + {lost} >= max_attempts as bury
    from outbox
    where status = 'pending' and {kinds} and next_attempt_at <= now(){exclude}{lazy}
    order by next_attempt_at, id
    limit $2
    for update skip locked
),
buried as (
    update outbox o
    set status = 'dead', attempts = o.attempts - (o.claimed_by is not null)::int,
        lost_claims = o.lost_claims + {lost},
        claimed_by = null, claim_expires_at = null, started_at = null, updated_at = now(),
        last_error = 'its worker died while running it, ' || o.lost_claims + {lost}
                     || ' time(s)' || coalesce('; before that: ' || o.last_error, '')
    where o.id = any(array(select id from due where bury))
    returning o.id, o.kind, o.dedup_key, o.payload, o.attempts, o.max_attempts,
              o.claimed_by, o.claim_expires_at, o.claims, o.steps_done, o.last_error,
              o.updated_at
),
claimed as (
    update outbox o
    set attempts = o.attempts - (o.claimed_by is not null)::int + 1, claims = o.claims + 1,
        lost_claims = o.lost_claims + {lost}, claimed_by = $3,
        claim_expires_at = now() + $4::interval, next_attempt_at = now() + $4::interval,
        started_at = case when $5 then now() end, updated_at = now()
    where o.id = any(array(select id from due where not bury))
    returning o.id, o.kind, o.dedup_key, o.payload, o.attempts, o.max_attempts,
              o.claimed_by, o.claim_expires_at, o.claims, o.steps_done,
              null::text as last_error, o.updated_at
)
select 'claimed' as outcome, * from claimed
union all
select 'buried', * from buried{settled}
"""


def claim_is_current(*, ids: int, claims: int, owner: int) -> str:
    """The row is one of the jobs ``ids`` (an array parameter, by number), still claimed by
    the owner under the claim number in the same place of ``claims``.

    The rows are found through the primary key and each checks its own claim number: no
    join with the arrays, which a generic plan (asyncpg prepares every statement, and
    PostgreSQL may plan it generically from its sixth execution on) ran as a nested loop,
    one pass over the arrays per row. "Not done nor dead" says "pending" (the only other
    status) in words that do not match the partial indexes' ``status = 'pending'``: a
    generic plan read the whole of ``outbox_claim`` to find the ids, one row at a time.
    """
    return (
        f"o.id = any(${ids}::bigint[])"
        f" and o.claims = (${claims}::integer[])[array_position(${ids}::bigint[], o.id)]"
        f" and o.claimed_by = ${owner} and o.status not in ('done', 'dead')"
    )


def _complete_sql(*, ids: int, claims: int, owner: int) -> str:
    """Mark done the jobs whose claims are still the owner's (parameters by number)."""
    return f"""
update outbox o
set status = 'done', done_at = now(), updated_at = now(), claim_expires_at = null
where {claim_is_current(ids=ids, claims=claims, owner=owner)}
returning o.id
"""


# Complete a batch and claim the next in one statement (and one commit). The due scan
# leaves out the jobs being completed: a statement must not update a row twice.
_SETTLE = f"settled as ({_complete_sql(ids=6, claims=7, owner=3)}),\n"
_SETTLED_ROWS = """
union all
select 'done', id, null, null, null, null, null, null, null, null, null, null, null
from settled"""


# A claim alone need not wait for the disk: this setting lasts for the statement's own
# transaction, which commits without waiting for its WAL to be flushed. If the server
# crashes before the flush, the claim is gone and the job due again, as if its claimer had
# died; any durable outcome of the job (``complete``, ``record``, ``fail``) flushes the WAL
# up to its own commit, so the claim it fences is on disk by then. The filter is an
# InitPlan: it runs once, before the scan. (For the due scan of a claim statement.)
LAZY_COMMIT = "\n      and (select set_config('synchronous_commit', 'off', true)) = 'off'"


def _claim_query(*, one_kind: bool, settle: bool) -> str:
    return _CLAIM.format(
        lost=LOST_CLAIM,
        settle=_SETTLE if settle else "",
        kinds="kind = $1::text" if one_kind else "kind = any($1::text[])",
        exclude=" and id <> all($6::bigint[])" if settle else "",
        lazy="" if settle else LAZY_COMMIT,
        settled=_SETTLED_ROWS if settle else "",
    )


_CLAIM_QUERIES = {
    (one_kind, settle): _claim_query(one_kind=one_kind, settle=settle)
    for one_kind in (True, False)
    for settle in (True, False)
}


def _job(row: asyncpg.Record) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        dedup_key=row["dedup_key"],
        payload=row["payload"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        claimed_by=row["claimed_by"],
        claim_expires_at=row["claim_expires_at"],
        claim=row["claims"],
        steps_done=row["steps_done"],
    )


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        kind=row["kind"],
        dedup_key=row["dedup_key"],
        payload=row["payload"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        last_error=row["last_error"],
        dead_since=row["updated_at"],
    )


async def claim(
    db: Database,
    *,
    kinds: Sequence[str],
    owner: str,
    limit: int,
    claim_seconds: float,
    started: bool = True,
) -> Claimed:
    """Claim up to ``limit`` due jobs of ``kinds`` for ``claim_seconds``, oldest due first.

    Rows other workers hold locked are skipped, never waited for. ``owner`` names this
    start of a worker: the instance id first, unique per start
    (``Services.claim_owner``). ``started`` says the claimer starts every job at once;
    one that works through the batch claims with ``started=False`` and ``record``s each
    job's start, so that its death counts a lost claim only for the jobs it was running.
    """
    _, claimed = await _claim(
        db,
        (),
        kinds=kinds,
        owner=owner,
        limit=limit,
        claim_seconds=claim_seconds,
        started=started,
    )
    return claimed


async def complete_and_claim(
    db: Database,
    done: Sequence[Job],
    *,
    kinds: Sequence[str],
    owner: str,
    limit: int,
    claim_seconds: float,
    started: bool = True,
) -> tuple[frozenset[int], Claimed]:
    """``complete`` the jobs ``done`` and ``claim`` the next batch, in one statement: the
    completions are committed when this returns, exactly as ``complete``'s. Returns the
    ids that counted (as ``complete``) and the new claim (as ``claim``). For a worker that
    settles a batch before it takes the next: one round trip and one commit instead of two.
    """
    return await _claim(
        db,
        done,
        kinds=kinds,
        owner=owner,
        limit=limit,
        claim_seconds=claim_seconds,
        started=started,
    )


async def _claim(
    db: Database,
    done: Sequence[Job],
    *,
    kinds: Sequence[str],
    owner: str,
    limit: int,
    claim_seconds: float,
    started: bool,
) -> tuple[frozenset[int], Claimed]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if claim_seconds <= 0:
        raise ValueError("claim_seconds must be positive")
    args: list[Any] = [
        kinds[0] if len(kinds) == 1 else list(kinds),
        limit,
        owner,
        timedelta(seconds=claim_seconds),
        started,
    ]
    if done:
        args += [[j.id for j in done], [j.claim for j in done]]
    query = _CLAIM_QUERIES[len(kinds) == 1, bool(done)]

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(query, *args)

    rows = await db.statement(unit)
    jobs = sorted((_job(r) for r in rows if r["outcome"] == "claimed"), key=lambda j: j.id)
    buried = [_dead_letter(r) for r in rows if r["outcome"] == "buried"]
    for dead in buried:
        _log.error(
            "job dead-lettered: its worker died while running it, every time",
            operation="outbox.claim",
            failure_type="bug",
            outcome="failed",
            job_id=dead.id,
            kind=dead.kind,
            dedup_key=dead.dedup_key,
            attempts=dead.attempts,
        )
    counted = frozenset(r["id"] for r in rows if r["outcome"] == "done")
    return counted, Claimed(jobs, buried)


_COMPLETE = _complete_sql(ids=1, claims=2, owner=3)


@overload
async def complete(db: Database, jobs: Job, *, owner: str) -> bool: ...
@overload
async def complete(db: Database, jobs: Sequence[Job], *, owner: str) -> frozenset[int]: ...
async def complete(db: Database, jobs: Job | Sequence[Job], *, owner: str) -> bool | frozenset[int]:
    """Mark jobs done, in one statement. For one job: whether it counted; for a sequence:
    the ids that counted. A job counts when its claim is still this owner's (not taken
    over after expiry) and it is not done already."""
    batch = [jobs] if isinstance(jobs, Job) else list(jobs)
    if not batch:
        return frozenset()

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(_COMPLETE, [j.id for j in batch], [j.claim for j in batch], owner)

    counted = frozenset(row["id"] for row in await db.statement(unit))
    if isinstance(jobs, Job):
        return jobs.id in counted
    return counted


@dataclass(frozen=True, slots=True)
class Mark:
    """A claimed job's progress, for ``record``: its work ``started`` (under this claim),
    ``steps_done`` of its steps are done in all, it is ``done``."""

    job: Job
    started: bool = False
    steps_done: int | None = None
    done: bool = False
    result: dict[str, Any] | None = None
    """What the side effect produced (a sent message's id), kept in the job's ``result``."""


_RECORD = """
update outbox o
set started_at = case when m.started then now() else o.started_at end,
    steps_done = coalesce(m.steps_done, o.steps_done),
    status = case when m.done then 'done' else o.status end,
    done_at = case when m.done then now() else o.done_at end,
    claim_expires_at = case when m.done then null else o.claim_expires_at end,
    result = coalesce(m.result, o.result),
    updated_at = now()
from unnest($1::bigint[], $2::integer[], $3::boolean[], $4::integer[], $5::boolean[],
            $7::jsonb[])
     as m(id, claims, started, steps_done, done, result)
where o.id = any($1::bigint[]) and o.id = m.id and o.claims = m.claims
  and o.claimed_by = $6 and o.status not in ('done', 'dead')  -- see claim_is_current
returning o.id
"""


async def record(db: Database, marks: Sequence[Mark], *, owner: str) -> frozenset[int]:
    """Write the progress of claimed jobs as it happens, in one statement (at most one mark
    per job); returns the ids whose claims were still current.

    A worker that settles each job the moment its side effect happened (``done``) repeats
    at most the side effects in flight when it dies, not its whole batch; ``steps_done``
    does the same for the steps of one job; ``started`` makes its death count as a lost
    claim of the job (see ``claim``).
    """
    if not marks:
        return frozenset()
    if len({m.job.id for m in marks}) != len(marks):
        raise ValueError("one mark per job in a record")

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            _RECORD,
            [m.job.id for m in marks],
            [m.job.claim for m in marks],
            [m.started for m in marks],
            [m.steps_done for m in marks],
            [m.done for m in marks],
            owner,
            [m.result for m in marks],
        )

    return frozenset(row["id"] for row in await db.statement(unit))


_FAIL = """
update outbox
set status = case when $5 or attempts >= max_attempts then 'dead' else 'pending' end,
    next_attempt_at = case when $5 or attempts >= max_attempts then next_attempt_at
                           else now() + $4::interval end,
    claimed_by = null, claim_expires_at = null, last_error = $3, updated_at = now()
where id = $1 and claims = $2 and claimed_by = $6 and status = 'pending'
returning status
"""


async def fail(
    db: Database,
    job: Job,
    *,
    owner: str,
    error: str,
    backoff: Backoff = DEFAULT_RETRY_BACKOFF,
    retry_after: float | None = None,
    permanent: bool = False,
    rng: random.Random | None = None,
) -> FailOutcome:
    """Record a failed attempt: schedule the next one or dead-letter the job.

    The delay is ``backoff_delay(backoff, job.attempts - 1, ...)``, so it grows with every
    attempt; a peer's ``retry_after`` hint replaces it. ``permanent`` dead-letters at once
    (retrying cannot help). ``FailOutcome.DEAD`` means an admin should hear of it.
    """
    if retry_after is not None and retry_after >= 0:
        delay = retry_after
    else:
        draw = rng.random() if rng is not None else random.random()
        delay = backoff_delay(backoff, max(0, job.attempts - 1), draw)

    async def unit(conn: Connection) -> str | None:
        status: str | None = await conn.fetchval(
            _FAIL,
            job.id,
            job.claim,
            error[:4000],
            timedelta(seconds=delay),
            permanent,
            owner,
        )
        return status

    status = await db.statement(unit)
    if status is None:
        return FailOutcome.LOST
    return FailOutcome.DEAD if status == "dead" else FailOutcome.RETRY


async def release(db: Database, jobs: Sequence[Job], *, owner: str) -> frozenset[int]:
    """Hand claimed jobs back untried (shutting down before starting them): due now, and
    the attempt is not counted. Returns the ids released."""
    if not jobs:
        return frozenset()

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            """
            update outbox o
            set attempts = o.attempts - 1, next_attempt_at = now(), claimed_by = null,
                claim_expires_at = null, started_at = null, updated_at = now()
            where """
            + claim_is_current(ids=1, claims=2, owner=3)
            + " returning o.id",
            [j.id for j in jobs],
            [j.claim for j in jobs],
            owner,
        )

    return frozenset(row["id"] for row in await db.statement(unit))


_TAKE_BACK = """
with held as (
    select id, started_at is not null as started
    from outbox
    where status = 'pending' and claimed_by is not null and starts_with(claimed_by, $1)
    for update
)
update outbox o
set attempts = o.attempts - 1, lost_claims = o.lost_claims + held.started::int,
    claimed_by = null, claim_expires_at = null, started_at = null,
    next_attempt_at = now(), updated_at = now()
from held
where o.id = held.id
returning held.started
"""


@dataclass(frozen=True, slots=True)
class TakenBack:
    jobs: int
    """Claims taken back: the jobs are due again, their attempts given back."""
    lost: int
    """Of those, jobs that had started: each counts a lost claim."""


async def take_back(db: Database, *, owner_prefix: str) -> TakenBack:
    """Take back the claims of every owner whose name starts with ``owner_prefix``: an
    instance, at its start, taking back what its dead predecessor held (the instance id is
    held by one live process at a time, so no live worker has such a claim). The jobs are
    due at once instead of when the claims expire; no attempt is spent, and the jobs that
    had started count a lost claim."""
    if not owner_prefix:
        raise ValueError("an owner prefix is required")

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(_TAKE_BACK, owner_prefix)

    rows = await db.statement(unit, retry=True)
    return TakenBack(jobs=len(rows), lost=sum(1 for r in rows if r["started"]))


# -- operators and metrics ----------------------------------------------------------------


async def dead_letters(
    db: Database, limit: int = 100, *, kinds: Sequence[str] | None = None
) -> list[DeadLetter]:
    """The most recently dead-lettered jobs, newest first."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "select id, kind, dedup_key, payload, attempts, max_attempts, last_error, updated_at"
            " from outbox where status = 'dead' and ($2::text[] is null or kind = any($2))"
            " order by updated_at desc, id desc limit $1",
            limit,
            None if kinds is None else list(kinds),
        )

    return [_dead_letter(row) for row in await db.read(unit)]


async def requeue_dead(db: Database, ids: Sequence[int]) -> int:
    """Give dead jobs a fresh set of attempts, due now; returns how many were requeued."""

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "update outbox set status = 'pending', attempts = 0, lost_claims = 0,"
            " next_attempt_at = now(), claimed_by = null, claim_expires_at = null,"
            " updated_at = now()"
            " where id = any($1::bigint[]) and status = 'dead' returning id",
            list(ids),
        )
        return len(rows)

    return await db.statement(unit, retry=True)


async def counts(db: Database) -> dict[str, int]:
    """Jobs per status (every status present), for metrics."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch("select status, count(*) as n from outbox group by status")

    found = {status: 0 for status in STATUSES}
    for row in await db.read(unit):
        found[row["status"]] = int(row["n"])
    return found
