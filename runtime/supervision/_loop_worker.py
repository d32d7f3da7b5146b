"""Periodic workers whose iterations fail alone, never in a tight loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._context import ActorContext
from ._spec import RunFunction

Iteration = Callable[[ActorContext], Awaitable[float | None]]
"""One unit of a worker's work. It may return how long to wait before the next one
(0 when a full batch suggests more is due); None means the worker's interval."""


def loop_worker(iteration: Iteration, *, interval: float) -> RunFunction:
    """Build an actor body that runs ``iteration`` until asked to stop.

    ``interval`` is the pause after a successful iteration; an ``interval`` key in the
    actor spec's ``extra`` (set from ``[actors.<name>] interval_seconds``) overrides it.

    Each iteration is its own boundary: an exception is reported to the supervisor (it is
    logged there with its failure type and counts against the actor's budget) and is
    followed by at least the actor's ``min_sleep_on_failure``. A successful iteration
    resets the count of consecutive failures. Exhausting the budget ends the actor with
    the budget's action (park or escalate).
    """
    if interval < 0:
        raise ValueError("interval must not be negative")

    async def run(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        every = float(ctx.spec.extra.get("interval", interval))
        task_status.started()
        while not ctx.stop_requested.is_set():
            with ctx.boundary():
                try:
                    next_in = await iteration(ctx)
                except Exception as exc:
                    ctx.record_failure(exc)
                    pause = max(every, ctx.spec.min_sleep_on_failure)
                else:
                    ctx.record_success()
                    pause = every if next_in is None else max(0.0, next_in)
            with trio.move_on_after(pause):
                await ctx.stop_requested.wait()
            if pause == 0:
                await trio.lowlevel.checkpoint()

    return run
