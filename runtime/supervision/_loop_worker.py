"""Periodic workers whose iterations fail alone, never in a tight loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._context import ActorContext
from ._spec import RunFunction
from ._wakeup import Wakeup, wait_any

Iteration = Callable[[ActorContext], Awaitable[float | None]]
"""One unit of a worker's work. It may return how long to wait before the next one
(0 when a full batch suggests more is due); None means the worker's interval."""


def loop_worker(
    iteration: Iteration, *, interval: float, wakeup: Wakeup | None = None
) -> RunFunction:
    """Build an actor body that runs ``iteration`` until asked to stop.

    ``interval`` is the pause after a successful iteration; an ``interval`` key in the
    actor spec's ``extra`` (set from ``[actors.<name>] interval_seconds``) overrides it.
    A ``wakeup`` call ends the pause after a successful iteration at once, and one that
    arrives while an iteration runs ends the pause after it: the pause is then a fallback
    for calls that never come. The sleep after a failure is never cut short.

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
            if wakeup is not None:
                wakeup.clear()
            with ctx.boundary():
                try:
                    next_in = await iteration(ctx)
                except Exception as exc:
                    ctx.record_failure(exc)
                    pause = max(every, ctx.spec.min_sleep_on_failure)
                    woken_by = None  # a failure's sleep is not cut short: no tight loop
                else:
                    ctx.record_success()
                    pause = every if next_in is None else max(0.0, next_in)
                    woken_by = wakeup
            with trio.move_on_after(pause):
                if woken_by is None:
                    await ctx.stop_requested.wait()
                else:
                    await wait_any(ctx.stop_requested, woken_by)
            if pause == 0:
                await trio.lowlevel.checkpoint()

    return run
