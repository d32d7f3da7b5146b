"""Claimed jobs' progress, written the moment it happens, in shared statements.

A worker that settles a whole batch after doing all of it repeats the whole batch when it
is killed halfway. Settling each job as its side effect happens bounds the repeats to the
side effects in flight at the kill, but costs a round trip per job. The ledger keeps the
bound and most of the saving: a task that writes a mark waits until it is committed, and
every mark that arrives while one statement runs goes into the next one
(``outbox.record``), so concurrent senders share their round trips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from runtime.storage import Database, outbox


@dataclass(eq=False)
class _Entry:
    mark: outbox.Mark
    written: trio.Event = field(default_factory=trio.Event)
    counted: bool = False
    error: Exception | None = None


class Ledger:
    """Run ``run`` in a nursery that outlives every ``write``; cancel it after them."""

    def __init__(self, db: Database, owner: str) -> None:
        self._db = db
        self._owner = owner
        self._waiting: list[_Entry] = []
        self._arrived = trio.Event()
        self.statements = 0
        """Statements written so far (for tests and figures)."""

    async def write(self, mark: outbox.Mark) -> bool:
        """Write ``mark`` (one at a time per job); True when the claim was still current.
        Raises what the statement raised (the database away, say)."""
        entry = _Entry(mark)
        self._waiting.append(entry)
        self._arrived.set()
        await entry.written.wait()
        if entry.error is not None:
            raise entry.error
        return entry.counted

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived = trio.Event()
            entries, self._waiting = self._waiting, []
            try:
                counted = await outbox.record(
                    self._db, [e.mark for e in entries], owner=self._owner
                )
            except Exception as exc:
                for entry in entries:
                    entry.error = exc
            except BaseException:  # cancelled: whoever still waits must not read "lost"
                for entry in entries:
                    entry.error = RuntimeError("the ledger stopped before writing this mark")
                    entry.written.set()
                raise
            else:
                for entry in entries:
                    entry.counted = entry.mark.job.id in counted
            self.statements += 1
            for entry in entries:
                entry.written.set()
