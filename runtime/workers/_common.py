"""What the workers share: their actor specs, a degraded state that outlives successful
iterations, leases for work done in one process at a time, and their counters."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import trio
from prometheus_client import Counter

from runtime.logs import get_logger
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Database, leases
from runtime.supervision import ActorContext, ActorSpec, Backoff, Budget, Restart, loop_worker

CLOSE_TIMEOUT = 5.0
WORKER_BACKOFF = Backoff(min=1.0, max=60.0, multiplier=2.0, jitter=0.2, reset_after=120.0)
"""Between restarts of a worker whose body crashed (a failed iteration is not a crash)."""


class Worker(Protocol):
    """One worker's state for one start of its actor."""

    async def iteration(self, ctx: ActorContext) -> float | None:
        """One unit of work (a boundary). Returns the pause before the next one: 0 when a
        full batch suggests more is due, None for the actor's interval."""
        ...

    async def close(self) -> None:
        """Give back what the worker holds (leases, clients); runs shielded on stop."""
        ...


def worker_spec(
    name: str,
    make: Callable[[ActorContext], Worker],
    *,
    interval: float,
    min_sleep_on_failure: float,
    budget: Budget,
    backoff: Backoff = WORKER_BACKOFF,
    shutdown_timeout: float = 10.0,
) -> ActorSpec:
    """A worker as an actor: ``loop_worker`` over a fresh ``make(ctx)`` per start.

    A worker with a ``wakeup`` attribute (a ``Wakeup``, usually from
    ``wakeups_of(services).subscribe``) has its pauses ended by it.

    Workers are not critical (readiness does not wait for them; one parked makes the
    service degraded) and restart permanently. Everything here is a default that
    ``[actors.<name>]`` overrides.
    """

    async def run(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        worker = make(ctx)
        body = loop_worker(
            worker.iteration, interval=interval, wakeup=getattr(worker, "wakeup", None)
        )
        try:
            await body(StickyDegraded(ctx), task_status=task_status)
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                try:
                    await worker.close()
                except Exception as exc:
                    get_logger(name).warning(
                        "worker cleanup failed",
                        operation="worker.close",
                        outcome="failed",
                        error=repr(exc),
                    )

    return ActorSpec(
        name,
        run,
        restart=Restart.PERMANENT,
        backoff=backoff,
        budget=budget,
        shutdown_timeout=shutdown_timeout,
        critical=False,
        min_sleep_on_failure=min_sleep_on_failure,
    )


def effective_interval(ctx: ActorContext, default: float) -> float:
    """The interval ``loop_worker`` uses: ``[actors.<name>] interval_seconds`` or ours."""
    return float(ctx.spec.extra.get("interval", default))


class StickyDegraded(ActorContext):
    """An actor's context whose degraded state outlives successful iterations.

    ``loop_worker`` reports every iteration that returns as a success, and a success clears
    the degraded mark. A worker whose dependency is down (a VPN panel) still finishes its
    iterations (it holds the work back instead of failing), so it marks itself degraded
    with ``set_degraded(reason, cause=...)`` and stays so until it calls
    ``set_degraded(None)``. Meanwhile its iterations do not reset the failure budget
    either. A failed iteration is reported as usual.
    """

    def __init__(self, inner: ActorContext) -> None:  # shares the inner context's state
        self._inner = inner
        self.spec = inner.spec
        self.stop_requested = inner.stop_requested
        self._reason: str | None = None
        self._cause: str | None = None

    @property
    def degraded_reason(self) -> str | None:
        return self._reason

    def boundary(self) -> AbstractContextManager[Any]:
        return self._inner.boundary()

    def record_failure(self, exc: BaseException) -> None:
        self._inner.record_failure(exc)

    def record_success(self) -> None:
        if self._reason is None:
            self._inner.record_success()
        else:  # a failed iteration may have put its own reason in place meanwhile
            self._inner.set_degraded(self._reason, cause=self._cause)

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        self._reason = reason
        self._cause = None if reason is None else cause
        self._inner.set_degraded(reason, cause=self._cause)


def owner_id(services: Services, worker: str) -> str:
    """The claim owner of one start of a worker: the instance's prefix, unique per start."""
    return services.claim_owner(worker)


def holder_id(services: Services, worker: str) -> str:
    """The lease holder of a worker: the same in every start and restart of the instance."""
    return services.lease_holder(worker)


class SoleRunner:
    """Work one process at a time does (polling a provider, sending at a global rate).

    Each iteration calls ``acquire``: the first takes the lease when it is free, expired
    or held under this very holder name (a restart of this instance takes over from its
    dead predecessor at once), later ones renew it. The ttl outlives a few intervals, so
    another instance replaces a dead holder within the ttl; a clean stop releases it at
    once.
    """

    def __init__(self, name: str, holder: str, *, ttl_seconds: float) -> None:
        self.name = name
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self.lease: leases.Lease | None = None

    async def acquire(self, db: Database) -> bool:
        """Whether this process holds the lease now (renewed, or newly taken)."""
        if self.lease is not None:
            renewed = await leases.renew(db, self.lease)
            if renewed is not None:
                self.lease = renewed
                return True
            self.lease = None  # expired or taken over: a fresh tenure, if it is free
        self.lease = await leases.acquire(db, self.name, self.holder, self.ttl_seconds)
        return self.lease is not None

    async def release(self, db: Database) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            await leases.release(db, lease)


_COUNTERS: weakref.WeakKeyDictionary[Metrics, Counter] = weakref.WeakKeyDictionary()


def items(metrics: Metrics) -> Counter:
    """``vpnbot_worker_items_total{worker, outcome}``: what the workers did, by outcome."""
    counter = _COUNTERS.get(metrics)
    if counter is None:
        counter = Counter(
            "vpnbot_worker_items_total",
            "Items the background workers handled, by worker and outcome.",
            ["worker", "outcome"],
            registry=metrics.registry,
        )
        _COUNTERS[metrics] = counter
    return counter
