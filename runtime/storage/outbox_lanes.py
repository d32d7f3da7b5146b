"""Work through the outbox at the database's pace: batches on several lanes at once.

A lane claims a batch (a claim commits without waiting for the disk: see
``outbox.claim``), hands it to the handler and waits until the jobs the handler returns
are completed. The lanes of one owner share their completions: one statement completes
every batch that finished while the previous statement ran, so one durable commit, one wait
for the disk, settles several batches. A job counts as done only when the statement that
completed it has returned, committed and flushed, exactly as with ``outbox.complete``; a
lane claims its next batch only then.

The handler does the side effects of a batch and returns the jobs it finished; the others
it settles itself (``outbox.fail``, ``outbox.release``) or leaves to their claim's expiry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from . import outbox
from ._database import Database
from .outbox import Claimed, Job

Handler = Callable[[Claimed], Awaitable[Sequence[Job]]]
"""Does a claimed batch; returns the jobs to complete."""
Done = Callable[[frozenset[int]], None]
"""Told the ids of every batch's completed jobs, once their completion is committed."""


class _Settler:
    """Completes the batches of every lane of one owner, together: each statement takes
    the batches that finished while the previous one ran, so one durable commit (one wait
    for the disk) settles them all. ``settle`` returns once its batch is committed; after
    a statement failed, every ``settle`` raises what it raised."""

    def __init__(self, db: Database, owner: str) -> None:
        self._db = db
        self._owner = owner
        self._waiting: list[tuple[Sequence[Job], trio.Event, list[frozenset[int]]]] = []
        self._arrived = trio.Event()
        self._failure: Exception | None = None
        self.statements = 0
        """Statements written so far (for tests and figures)."""

    async def settle(self, jobs: Sequence[Job]) -> frozenset[int]:
        """Complete ``jobs``; the ids that counted (see ``outbox.complete``)."""
        if self._failure is not None:
            raise self._failure
        if not jobs:
            return frozenset()
        written = trio.Event()
        result: list[frozenset[int]] = []
        self._waiting.append((jobs, written, result))
        self._arrived.set()
        await written.wait()
        if not result:
            assert self._failure is not None
            raise self._failure
        return result[0]

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived = trio.Event()
            batches, self._waiting = self._waiting, []
            try:
                counted = await outbox.complete(
                    self._db, [job for jobs, _, _ in batches for job in jobs], owner=self._owner
                )
            except Exception as exc:
                self._failure = exc
                for _, written, _ in batches:
                    written.set()
                return
            self.statements += 1
            for jobs, written, result in batches:
                result.append(frozenset(j.id for j in jobs) & counted)
                written.set()


async def drain(
    db: Database,
    handle: Handler,
    *,
    kinds: Sequence[str],
    owner: str,
    limit: int,
    claim_seconds: float,
    lanes: int = 4,
    started: bool = True,
    on_done: Done | None = None,
) -> int:
    """Claim, handle and complete batches of up to ``limit`` jobs on ``lanes`` lanes until
    no job of ``kinds`` is due; returns how many jobs were completed.

    A failure (the database away, the handler's) stops every lane and is raised as it is;
    the jobs the lanes held are left to their claims' expiry, or to ``outbox.take_back``
    at the next start.
    """
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    completed = 0
    failure: Exception | None = None
    settler = _Settler(db, owner)

    async def lane() -> None:
        nonlocal completed
        while True:
            jobs = await outbox.claim(
                db,
                kinds=kinds,
                owner=owner,
                limit=limit,
                claim_seconds=claim_seconds,
                started=started,
            )
            if not jobs:
                return
            counted = await settler.settle(await handle(jobs))
            completed += len(counted)
            if on_done is not None and counted:
                on_done(counted)

    async def guarded(cancel: trio.CancelScope) -> None:
        nonlocal failure
        try:
            await lane()
        except Exception as exc:  # raised as it is, not wrapped in a group
            if failure is None:
                failure = exc
            cancel.cancel()

    async with trio.open_nursery() as outer:
        outer.start_soon(settler.run)
        async with trio.open_nursery() as nursery:
            for _ in range(lanes):
                nursery.start_soon(guarded, nursery.cancel_scope)
        outer.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return completed
