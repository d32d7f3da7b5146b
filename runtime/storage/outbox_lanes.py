"""Work through the outbox at the database's pace: batches on several lanes at once.

One loop per owner talks to the database, and each of its statements does all there is
to do at that moment: it completes every batch the handlers finished since the previous
statement and claims a batch for every idle lane (``outbox.complete_and_claim``), so one
round trip and one durable commit, one wait for the disk, settle several batches and feed
several lanes. The claimed jobs are split into batches of at most ``limit``, each handed to
the handler on a lane of its own. A job counts as done only when the statement that
completed it has returned, committed and flushed, exactly as with ``outbox.complete``; a
lane gets its next batch only then. The first claim, with nothing to complete yet, commits
without waiting for the disk, as ``outbox.claim`` does.

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
"""Told the ids of completed jobs, once their completion is committed."""


def _batches(claimed: Claimed, limit: int) -> list[Claimed]:
    """``claimed`` in lane batches of at most ``limit``; the first carries the buried."""
    return [
        Claimed(claimed[i : i + limit], claimed.buried if i == 0 else ())
        for i in range(0, len(claimed), limit)
    ]


class _Lanes:
    """The handlers' side: how many lanes are idle, and the jobs finished since the last
    statement. A failure of a handler is kept, to be raised as it is."""

    def __init__(self, handle: Handler, lanes: int) -> None:
        self._handle = handle
        self.idle = lanes
        self.finished: list[Job] = []
        self.failure: Exception | None = None
        self.changed = trio.Event()

    async def run(self, jobs: Claimed, cancel: trio.CancelScope) -> None:
        try:
            done = await self._handle(jobs)
        except Exception as exc:  # raised by drain as it is, not wrapped in a group
            if self.failure is None:
                self.failure = exc
            cancel.cancel()
            return
        self.finished.extend(done)
        self.idle += 1
        self.changed.set()

    async def wait(self) -> None:
        await self.changed.wait()
        self.changed = trio.Event()


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
    if limit < 1:
        raise ValueError("limit must be at least 1")
    state = _Lanes(handle, lanes)
    completed = 0
    exhausted = False
    failure: Exception | None = None

    async with trio.open_nursery() as nursery:
        try:
            while state.failure is None:
                done, state.finished = state.finished, []
                wanted = 0 if exhausted else state.idle
                if not done and not wanted:
                    if state.idle == lanes:
                        break
                    await state.wait()
                    continue
                if wanted:
                    counted, claimed = await outbox.complete_and_claim(
                        db,
                        done,
                        kinds=kinds,
                        owner=owner,
                        limit=limit * wanted,
                        claim_seconds=claim_seconds,
                        started=started,
                    )
                    exhausted = not claimed and not claimed.buried
                else:
                    counted, claimed = await outbox.complete(db, done, owner=owner), Claimed()
                completed += len(counted)
                if on_done is not None and counted:
                    on_done(counted)
                for batch in _batches(claimed, limit):
                    state.idle -= 1
                    nursery.start_soon(state.run, batch, nursery.cancel_scope)
        except Exception as exc:  # raised as it is, not wrapped in a group
            failure = exc
        nursery.cancel_scope.cancel()
    failure = state.failure or failure
    if failure is not None:
        raise failure
    return completed
