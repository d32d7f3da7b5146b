"""How much work waits: the outbox's due jobs and the inbox's unhandled updates.

One read of two partial indexes (``outbox_claim``: pending jobs by kind and due time;
``telegram_updates_pending``), for the metrics an operator alerts on. A claimed job's due
time is its claim's expiry, so it is not counted as waiting while a worker holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._database import Connection, Database

_QUERY = """
select 'outbox' as queue, kind, count(*) as waiting,
       coalesce(extract(epoch from now() - min(next_attempt_at)), 0)::float8 as oldest
  from outbox where status = 'pending' and next_attempt_at <= now()
 group by kind
union all
select 'inbox', '', count(*),
       coalesce(extract(epoch from now() - min(received_at)), 0)::float8
  from telegram_updates where processed_at is null
"""


@dataclass(frozen=True, slots=True)
class Waiting:
    count: int
    oldest_seconds: float
    """How long the oldest has waited since it was due (0 when nothing waits)."""


@dataclass(frozen=True, slots=True)
class Backlog:
    outbox: dict[str, Waiting] = field(default_factory=dict)
    """Due jobs by kind; kinds with nothing due are absent."""
    inbox: Waiting = Waiting(0, 0.0)


async def read(db: Database) -> Backlog:
    async def unit(conn: Connection) -> Backlog:
        outbox: dict[str, Waiting] = {}
        inbox = Waiting(0, 0.0)
        for row in await conn.fetch(_QUERY):
            waiting = Waiting(int(row["waiting"]), max(0.0, float(row["oldest"])))
            if row["queue"] == "inbox":
                inbox = waiting
            else:
                outbox[str(row["kind"])] = waiting
        return Backlog(outbox, inbox)

    return await db.read(unit, retry=False)
