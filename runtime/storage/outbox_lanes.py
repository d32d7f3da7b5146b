"""Work through the outbox at the database's pace: batches on several lanes at once.

A lane claims a batch, hands it to the handler, then completes the jobs the handler
returns and claims its next batch in one statement (``outbox.complete_and_claim``): one
round trip and one durable commit per batch. ``lanes`` of them run at once for one owner,
so that while one lane's commit waits for the disk, another lane's batch runs and its
commit joins the same flush (PostgreSQL's group commit): the commits per batch stay one,
the waits for the disk are shared. A job counts as done only when the statement that
completed it has returned, committed and flushed, exactly as with ``outbox.complete``.

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


async def drain(
    db: Database,
    handle: Handler,
    *,
    kinds: Sequence[str],
    owner: str,
    limit: int,
    claim_seconds: float,
    lanes: int = 2,
    started: bool = True,
    on_done: Done | None = None,
) -> int:
    """Claim, handle and complete batches of up to ``limit`` jobs on ``lanes`` lanes until
    no job of ``kinds`` is due; returns how many jobs were completed.

    Each lane's first claim commits without waiting for the disk (see ``outbox.claim``);
    every later claim rides on the durable commit of the lane's completions. A failure
    (the database away, the handler's) stops every lane and is raised; the jobs a lane
    held are left to their claims' expiry, or to ``outbox.take_back`` at the next start.
    """
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    completed = 0

    async def lane() -> None:
        nonlocal completed
        jobs = await outbox.claim(
            db, kinds=kinds, owner=owner, limit=limit, claim_seconds=claim_seconds, started=started
        )
        while jobs:
            done = await handle(jobs)
            counted, jobs = await outbox.complete_and_claim(
                db,
                done,
                kinds=kinds,
                owner=owner,
                limit=limit,
                claim_seconds=claim_seconds,
                started=started,
            )
            completed += len(counted)
            if on_done is not None and counted:
                on_done(counted)

    failure: Exception | None = None

    async def guarded(cancel: trio.CancelScope) -> None:
        nonlocal failure
        try:
            await lane()
        except Exception as exc:  # raised as it is, not wrapped in a group
            if failure is None:
                failure = exc
            cancel.cancel()

    async with trio.open_nursery() as nursery:
        for _ in range(lanes):
            nursery.start_soon(guarded, nursery.cancel_scope)
    if failure is not None:
        raise failure
    return completed
