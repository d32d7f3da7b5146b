"""The Telegram update inbox: updates are stored before they are acknowledged.

Whoever receives updates (the long poller, the webhook) calls ``store`` and only then
acknowledges them to Telegram (the next ``getUpdates`` offset, the webhook's 200). A
stored update is processed from here by any process:

1. ``claim`` a batch: one statement picks unprocessed updates whose claim is free or has
   expired, with ``FOR UPDATE SKIP LOCKED``, counts the attempt and stamps the claim
   (owner, expiry). A process killed mid-handler leaves its claim to expire (or its
   instance's restart takes it back at once, ``take_back``); the update is then claimed
   again and its handler runs again (handlers are safe to run twice). Such a lost claim
   gives its attempt back and counts in ``lost_claims``; an update whose claims were lost
   ``max_lost_claims`` times (its handler kills the process) is given up by ``claim``.
2. run the handler, then
3. ``mark_processed`` (``mark_many_processed``: a batch in one statement); or
   ``wait_for_telegram`` (Telegram's flood control or Telegram unreachable: due again
   later, the attempt not counted); or ``retry_later`` (a failure of the handling: due
   again after a delay, or given up once ``max_attempts`` are used); or ``give_up``; or
   ``release`` updates never started.

Outcomes count only for the claim that is still current: the row must be claimed by this
owner with the attempt number of the claim, as in the outbox. An update given up is marked
processed with its error kept in ``last_error``: ``given_up`` lists them and ``replay``
makes them pending again, with a fresh count of attempts.

``store`` may be fenced by a lease (the long poller's): a poller that lost its lease
stores nothing, so it cannot acknowledge what it did not keep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from runtime.logs import get_logger

from ._database import Connection, Database
from .leases import Lease, check_fence
from .users import User

_log = get_logger("inbox")

GAVE_UP = "gave up: "
"""``last_error`` of an update that was given up starts with this."""
WAITING_FOR_TELEGRAM = "waiting for Telegram: "
"""``last_error`` of an update waiting for an unreachable Telegram starts with this."""
MAX_LOST_CLAIMS = 5
"""Claims of one update lost to dead processes before ``claim`` gives it up."""


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """A claimed update. ``attempts`` counts this attempt (1 on the first) and fences it."""

    update_id: int
    payload: dict[str, Any]
    attempts: int
    claimed_by: str
    received_at: datetime
    sender: User | None = None
    """The user record of who sent it, as ``claim`` read it (None when unknown): the
    handler boundary skips recording a contact that would change nothing."""

    @property
    def chat_key(self) -> int | None:
        """Who the update is about (the user or chat), to keep one chat's updates in order."""
        for value in self.payload.values():
            if not isinstance(value, Mapping):
                continue
            sender = value.get("from")
            if isinstance(sender, Mapping) and isinstance(sender.get("id"), int):
                return int(sender["id"])
            chat = value.get("chat")
            if isinstance(chat, Mapping) and isinstance(chat.get("id"), int):
                return int(chat["id"])
        return None


@dataclass(frozen=True, slots=True)
class DeadUpdate:
    """An update given up: processed no more until it is replayed."""

    update_id: int
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    received_at: datetime
    given_up_at: datetime

    @property
    def kind(self) -> str:
        """The update's type (``message``, ``callback_query``, ...), one of the Bot API's."""
        return next((key for key in self.payload if key != "update_id"), "unknown")

    @property
    def error(self) -> str:
        """Why it was given up."""
        return (self.last_error or "").removeprefix(GAVE_UP)


UPDATE_ID_RANGE = range(-(2**63), 2**63)
"""What the ``update_id`` column (bigint) holds."""


class InvalidUpdate(ValueError):
    """Not a Telegram update the inbox can keep: no integer ``update_id``, or one beyond bigint."""


def _dead_update(row: asyncpg.Record) -> DeadUpdate:
    return DeadUpdate(
        update_id=row["update_id"],
        payload=row["payload"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        received_at=row["received_at"],
        given_up_at=row["processed_at"],
    )


def _valid(update: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise InvalidUpdate("a Telegram update needs an integer update_id")
    if update_id not in UPDATE_ID_RANGE:
        raise InvalidUpdate("the update_id is beyond a bigint")
    return update_id, dict(update)


def check_update(update: object) -> int:
    """The ``update_id`` of an update ``store`` accepts, or ``InvalidUpdate``."""
    if not isinstance(update, Mapping):
        raise InvalidUpdate("a Telegram update is a JSON object")
    return _valid(update)[0]


RENUMBERED_KEYS = 2**62
"""Where the keys of renumbered updates start: past any id Telegram gives."""
_RENUMBER_LOCK = 0x7670_6E62_6952
"""Serialises the processes that store renumbered updates (a transaction lock)."""


class Stored(int):
    """What ``store`` did: the number of updates that were new (renumbered ones included),
    and those that came with an id going backwards:

    - ``renumbered``: ``(id it came with, key it is kept under)`` of each update whose id
      was stored already with other content: its sender numbered updates anew. It is kept
      under a key of its own (``RENUMBERED_KEYS`` and up, in the order received) and
      handled once like any other; a redelivery of it is recognised by its content;
    - ``went_back``: ids of a fresh ``getUpdates`` page (the first after polling starts)
      stored as new though lower than the highest id already settled.

    The real Bot API never does either; an emulator that restarted does.
    """

    renumbered: tuple[tuple[int, int], ...]
    went_back: tuple[int, ...]

    def __new__(
        cls,
        new: int,
        renumbered: Sequence[tuple[int, int]] = (),
        went_back: Sequence[int] = (),
    ) -> Stored:
        stored = super().__new__(cls, new)
        stored.renumbered = tuple(renumbered)
        stored.went_back = tuple(went_back)
        return stored

    @property
    def went_backwards(self) -> bool:
        return bool(self.renumbered or self.went_back)


_STORE = """
with page as (
    select u.update_id, u.payload, u.ord
    from unnest($1::bigint[], $2::jsonb[]) with ordinality as u(update_id, payload, ord)
),
inserted as (
    insert into telegram_updates (update_id, payload)
    select update_id, payload from page
    on conflict (update_id) do nothing
    returning update_id
),
settled as (
    select max(update_id) as top from telegram_updates
    where $3 and update_id < $4 and processed_at is not null
)
select p.ord, p.update_id, i.update_id is not null as new,
       coalesce(t.payload <> p.payload, false) as differs,
       coalesce(p.update_id < s.top, false) as went_back
from page p
left join inserted i on i.update_id = p.update_id
left join telegram_updates t on t.update_id = p.update_id
cross join settled s
order by p.ord
"""
# ``t`` is what was stored before this statement (a data-modifying CTE's rows are not
# visible to the rest of it): an update just inserted joins no row there.

_STORE_RENUMBERED = """
with page as (
    select u.payload, u.ord from unnest($1::jsonb[]) with ordinality as u(payload, ord)
),
unseen as (
    select p.payload, p.ord from page p
    where not exists (
        select 1 from telegram_updates r where r.update_id >= $2 and r.payload = p.payload
    )
),
top as (
    select coalesce(max(update_id), $2 - 1) as top from telegram_updates where update_id >= $2
)
insert into telegram_updates (update_id, payload)
select top.top + row_number() over (order by u.ord), u.payload from unseen u, top
returning update_id, (payload ->> 'update_id')::bigint as telegram_update_id
"""


async def store(
    db: Database,
    updates: Sequence[Mapping[str, Any]],
    *,
    lease: Lease | None = None,
    fresh_page: bool = False,
) -> Stored:
    """Store updates (each a Bot API ``Update`` object as JSON) in one transaction.

    An update already stored with the same content is left as it is (a redelivery, a
    second webhook call); one whose id was stored with other content is new and kept
    under a key of its own (see ``Stored``). Returns how many were new, with what went
    backwards. ``fresh_page``: the updates are the first page of a ``getUpdates`` without
    an offset, whose ids should all be above those already settled. With ``lease`` the
    write happens only while the lease is current (``LeaseLost`` otherwise). Safe to
    retry, but not retried here: the caller must not acknowledge when this raises.
    """
    rows = [_valid(update) for update in updates]
    if not rows and lease is None:
        return Stored(0)

    async def unit(conn: Connection) -> Stored:
        if lease is not None:
            await check_fence(conn, lease)
        if not rows:
            return Stored(0)
        found = await conn.fetch(
            _STORE,
            [r[0] for r in rows],
            [r[1] for r in rows],
            fresh_page,
            RENUMBERED_KEYS,
        )
        new = {row["update_id"] for row in found if row["new"]}
        went_back = sorted({row["update_id"] for row in found if row["new"] and row["went_back"]})
        differing: list[dict[str, Any]] = []
        for row in found:
            payload = rows[row["ord"] - 1][1]
            if row["differs"] and payload not in differing:
                differing.append(payload)
        if not differing:
            return Stored(len(new), (), went_back)
        await conn.execute("select pg_advisory_xact_lock($1)", _RENUMBER_LOCK)
        kept = await conn.fetch(_STORE_RENUMBERED, differing, RENUMBERED_KEYS)
        renumbered = sorted((row["telegram_update_id"], row["update_id"]) for row in kept)
        return Stored(len(new) + len(kept), renumbered, went_back)

    return await db.transaction(unit)


# A due update that is still claimed is a lost claim (its claim expired with no outcome):
# it gives its attempt back and counts as lost.
_CLAIM = """
with due as materialized (
    select update_id, claimed_by is not null as lost
    from telegram_updates
    where processed_at is null and (claim_expires_at is null or claim_expires_at <= now())
    order by update_id
    limit $1
    for update skip locked
),
given_up as (
    update telegram_updates t
    set processed_at = now(), lost_claims = t.lost_claims + 1, attempts = t.attempts - 1,
        claimed_by = null, claim_expires_at = null,
        last_error = $5 || 'its handler never finished: the process died running it '
                     || (t.lost_claims + 1) || ' time(s)'
                     || coalesce('; before that: ' || t.last_error, '')
    from due
    where t.update_id = due.update_id and due.lost and t.lost_claims + 1 >= $4
    returning t.update_id, t.payload, t.attempts, t.claimed_by, t.received_at, t.last_error,
              t.processed_at
),
claimed as (
    update telegram_updates t
    set attempts = t.attempts + 1 - due.lost::int, lost_claims = t.lost_claims + due.lost::int,
        claimed_by = $2, claim_expires_at = now() + $3::interval
    from due
    where t.update_id = due.update_id and not (due.lost and t.lost_claims + 1 >= $4)
    returning t.update_id, t.payload, t.attempts, t.claimed_by, t.received_at,
              null::text as last_error, null::timestamptz as processed_at
)
select r.*, {sender_columns}
from (
    select false as given_up, * from claimed
    union all
    select true as given_up, * from given_up
) r
left join users s on not r.given_up and s.telegram_id = (
    select case when id = trunc(id) and id between {min_id} and {max_id} then id::bigint end
    from (select (jsonb_path_query_first(r.payload, '$.*.from.id ? (@.type() == "number")'))
          ::numeric as id) as sender
)
"""
_SENDER_FIELDS = tuple(User.__dataclass_fields__)
_CLAIM = _CLAIM.format(
    sender_columns=", ".join(f"s.{name} as sender_{name}" for name in _SENDER_FIELDS),
    min_id=-(2**63),
    max_id=2**63 - 1,
)


def _sender(row: asyncpg.Record) -> User | None:
    if row["sender_telegram_id"] is None:
        return None
    return User(**{name: row[f"sender_{name}"] for name in _SENDER_FIELDS})


class Claimed(list[InboxUpdate]):
    """The updates a ``claim`` handed out, plus ``given_up``: the due updates it gave up
    instead, because the process died running their handler ``max_lost_claims`` times."""

    __slots__ = ("given_up",)

    def __init__(
        self, updates: Sequence[InboxUpdate] = (), given_up: Sequence[DeadUpdate] = ()
    ) -> None:
        super().__init__(updates)
        self.given_up: tuple[DeadUpdate, ...] = tuple(given_up)


async def claim(
    db: Database,
    *,
    owner: str,
    limit: int,
    claim_seconds: float,
    max_lost_claims: int = MAX_LOST_CLAIMS,
) -> Claimed:
    """Claim up to ``limit`` due updates for ``claim_seconds``, oldest first. ``owner``
    names this start of the processor: the instance id first, unique per start."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if claim_seconds <= 0:
        raise ValueError("claim_seconds must be positive")
    if max_lost_claims < 1:
        raise ValueError("max_lost_claims must be at least 1")
    ttl = timedelta(seconds=claim_seconds)

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(_CLAIM, limit, owner, ttl, max_lost_claims, GAVE_UP)

    rows = await db.statement(unit)
    updates = [
        InboxUpdate(
            update_id=row["update_id"],
            payload=row["payload"],
            attempts=row["attempts"],
            claimed_by=row["claimed_by"],
            received_at=row["received_at"],
            sender=_sender(row),
        )
        for row in rows
        if not row["given_up"]
    ]
    given_up = [_dead_update(row) for row in rows if row["given_up"]]
    for dead in given_up:
        _log.error(
            "update given up: the process died running its handler, every time",
            operation="bot.inbox.claim",
            failure_type="bug",
            outcome="failed",
            update_id=dead.update_id,
        )
    return Claimed(sorted(updates, key=lambda u: u.update_id), given_up)


async def take_back(db: Database, *, owner_prefix: str) -> int:
    """Take back the claims of every owner whose name starts with ``owner_prefix``: an
    instance, at its start, taking back the updates its dead predecessor was handling (the
    instance id is held by one live process at a time). They are due at once instead of
    when the claims expire; each gives its attempt back and counts a lost claim. Returns
    how many."""
    if not owner_prefix:
        raise ValueError("an owner prefix is required")

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "update telegram_updates set attempts = attempts - 1,"
            " lost_claims = lost_claims + 1, claimed_by = null, claim_expires_at = null"
            " where processed_at is null and claimed_by is not null"
            " and starts_with(claimed_by, $1) returning update_id",
            owner_prefix,
        )
        return len(rows)

    return await db.transaction(unit, retry=True)


async def mark_processed(db: Database, update: InboxUpdate, *, owner: str) -> bool:
    """The handler finished; False when the claim was not ours any more (nothing changed)."""

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update telegram_updates set processed_at = now(), claimed_by = null,"
            " claim_expires_at = null where update_id = $1 and attempts = $2"
            " and claimed_by = $3 and processed_at is null returning 1",
            update.update_id,
            update.attempts,
            owner,
        )
        return row is not None

    return await db.transaction(unit, retry=True)


async def mark_many_processed(
    db: Database, updates: Sequence[InboxUpdate], *, owner: str
) -> list[int]:
    """``mark_processed`` for many updates in one statement; returns the ids whose claim
    was still ours, now processed."""
    if not updates:
        return []

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "update telegram_updates t set processed_at = now(), claimed_by = null,"
            " claim_expires_at = null"
            " from unnest($1::bigint[], $2::integer[]) as u(update_id, attempts)"
            " where t.update_id = u.update_id and t.attempts = u.attempts"
            " and t.claimed_by = $3 and t.processed_at is null returning t.update_id",
            [u.update_id for u in updates],
            [u.attempts for u in updates],
            owner,
        )

    rows = await db.statement(unit, retry=True)
    return [row["update_id"] for row in rows]


async def retry_later(
    db: Database,
    update: InboxUpdate,
    *,
    owner: str,
    error: str,
    delay_seconds: float,
    max_attempts: int,
) -> bool | None:
    """A transient failure: try again after ``delay_seconds``. Once ``max_attempts`` are
    used the update is given up instead (marked processed, the error kept).

    Returns True when scheduled again, False when given up, None when the claim was lost.
    """

    async def unit(conn: Connection) -> bool | None:
        gave_up: bool | None = await conn.fetchval(
            "update telegram_updates set"
            " processed_at = case when attempts >= $5 then now() end,"
            " last_error = case when attempts >= $5 then $6 || $4 else $4 end,"
            " claimed_by = null,"
            " claim_expires_at = case when attempts >= $5 then null"
            " else now() + $7::interval end"
            " where update_id = $1 and attempts = $2 and claimed_by = $3"
            " and processed_at is null returning processed_at is not null",
            update.update_id,
            update.attempts,
            owner,
            error[:4000],
            max_attempts,
            GAVE_UP,
            timedelta(seconds=max(0.0, delay_seconds)),
        )
        return gave_up

    gave_up = await db.transaction(unit, retry=True)
    return None if gave_up is None else not gave_up


async def wait_for_telegram(
    db: Database,
    update: InboxUpdate,
    *,
    owner: str,
    error: str,
    delay_seconds: float,
    until_telegram_answers: bool,
) -> bool:
    """Telegram, not the handling, failed: try again after ``delay_seconds`` without
    counting the attempt. With ``until_telegram_answers`` (Telegram unreachable) the
    update is also due as soon as ``telegram_answers_again`` is called, whoever calls it.

    False when the claim was not ours any more (nothing changed).
    """

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update telegram_updates set attempts = attempts - 1, claimed_by = null,"
            " claim_expires_at = now() + $4::interval, last_error = $5"
            " where update_id = $1 and attempts = $2 and claimed_by = $3"
            " and processed_at is null returning 1",
            update.update_id,
            update.attempts,
            owner,
            timedelta(seconds=max(0.0, delay_seconds)),
            (WAITING_FOR_TELEGRAM if until_telegram_answers else "") + error[:4000],
        )
        return row is not None

    return await db.transaction(unit, retry=True)


async def telegram_answers_again(db: Database) -> int:
    """Make every update waiting for an unreachable Telegram due now (it answers again);
    returns how many."""

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "update telegram_updates set claim_expires_at = now()"
            " where processed_at is null and claimed_by is null"
            " and claim_expires_at > now() and last_error like $1 || '%'"
            " returning update_id",
            WAITING_FOR_TELEGRAM,
        )
        return len(rows)

    return await db.transaction(unit, retry=True)


async def give_up(db: Database, update: InboxUpdate, *, owner: str, error: str) -> bool:
    """Stop trying an update (retrying cannot help): processed, with its error kept."""

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update telegram_updates set processed_at = now(), last_error = $4 || $5,"
            " claimed_by = null, claim_expires_at = null where update_id = $1"
            " and attempts = $2 and claimed_by = $3 and processed_at is null returning 1",
            update.update_id,
            update.attempts,
            owner,
            GAVE_UP,
            error[:4000],
        )
        return row is not None

    return await db.transaction(unit, retry=True)


async def release(db: Database, updates: Sequence[InboxUpdate], *, owner: str) -> int:
    """Hand claimed updates back untried (shutting down): due now, attempt not counted."""
    if not updates:
        return 0

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "update telegram_updates t set attempts = t.attempts - 1, claimed_by = null,"
            " claim_expires_at = null"
            " from unnest($1::bigint[], $2::integer[]) as u(update_id, attempts)"
            " where t.update_id = u.update_id and t.attempts = u.attempts"
            " and t.claimed_by = $3 and t.processed_at is null returning t.update_id",
            [u.update_id for u in updates],
            [u.attempts for u in updates],
            owner,
        )
        return len(rows)

    return await db.transaction(unit, retry=True)


async def pending_count(db: Database) -> int:
    """Updates not processed yet (claimed or not)."""

    async def unit(conn: Connection) -> int:
        count: int = await conn.fetchval(
            "select count(*) from telegram_updates where processed_at is null"
        )
        return count

    return await db.read(unit)


async def dead_updates(db: Database, limit: int = 100) -> list[DeadUpdate]:
    """Updates given up, newest first."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "select update_id, payload, attempts, last_error, received_at, processed_at"
            " from telegram_updates"
            " where processed_at is not null and last_error like $2 || '%'"
            " order by processed_at desc, update_id desc limit $1",
            limit,
            GAVE_UP,
        )

    return [_dead_update(row) for row in await db.read(unit)]


async def replay(db: Database, update_ids: Sequence[int] | None = None) -> list[int]:
    """Make given-up updates pending again, with no attempt counted and no error kept:
    those of ``update_ids`` (the others are ignored), or all of them with ``None``.
    Returns the ids made pending, in order."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "update telegram_updates set processed_at = null, attempts = 0,"
            " claimed_by = null, claim_expires_at = null, last_error = null"
            " where processed_at is not null and last_error like $1 || '%'"
            " and ($2::bigint[] is null or update_id = any($2::bigint[]))"
            " returning update_id",
            GAVE_UP,
            None if update_ids is None else list(update_ids),
        )

    return sorted(row["update_id"] for row in await db.transaction(unit, retry=True))


async def prune(db: Database, *, older_than: timedelta, limit: int = 5000) -> int:
    """Delete processed updates received before ``older_than`` ago (given-up ones stay for
    a month more, for operators); returns how many went."""

    async def unit(conn: Connection) -> int:
        rows = await conn.fetch(
            "delete from telegram_updates where update_id in ("
            " select update_id from telegram_updates where processed_at is not null"
            " and received_at < now() - $1::interval"
            " and (last_error is null or last_error not like $3 || '%'"
            "      or received_at < now() - $1::interval - interval '30 days')"
            " limit $2) returning update_id",
            older_than,
            limit,
            GAVE_UP,
        )
        return len(rows)

    return await db.transaction(unit, retry=True)
