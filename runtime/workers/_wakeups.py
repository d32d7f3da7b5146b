"""Workers woken by the work itself: the process's wake-up hub and its listener actor.

A worker subscribes to topics (an outbox job kind, ``payment.invoiced``) and gets a
``Wakeup`` that ends its pause. Two things call it: ``deliver``, for the notifications
PostgreSQL sends at commit (``runtime.storage.wakeups``: any process's work wakes every
process's workers), and ``poke``, for work this process just queued (no round trip, and it
works while the listener is down).

The pause itself is a fallback (``idle_pause``): long while the listener is connected
(``[wakeups] fallback_interval_seconds``), the worker's own short interval while it is not,
and never past the moment work is due by the clock alone (a retry after its backoff).
Losing the listener wakes every worker and shortens their pauses at once, so nothing
waits for a notification that cannot come; ``wakeup_listener`` is degraded meanwhile
and says so, and it reconnects with backoff. With ``[wakeups] enabled = false`` no
listener runs and every worker polls at its own interval.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Iterable

import trio
from structlog.typing import FilteringBoundLogger

from runtime.failures import Outcome, classify
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.storage.wakeups import Listener
from runtime.supervision import (
    ActorContext,
    ActorSpec,
    Backoff,
    Budget,
    OnExhausted,
    Restart,
    Wakeup,
    backoff_delay,
)

LISTENER = "wakeup_listener"
PING_SECONDS = 60.0
"""How often the listening session is checked (a cut network shows only to a query)."""
PING_TIMEOUT = 10.0
LOST = "wake-up listener lost: workers poll at their own intervals until it is back"
RECONNECT = Backoff(min=1.0, max=10.0, multiplier=2.0, jitter=0.2)
"""Between attempts to listen again: polling covers the gap, so keep it short."""


class Wakeups:
    """One process's wake-up calls, by topic."""

    def __init__(self, *, fallback_interval: float) -> None:
        self.fallback_interval = fallback_interval
        self.listening = False
        """The listener is connected: notifications arrive, pauses may be long."""
        self.delivered = 0
        """Notifications received (for tests and figures)."""
        self._topics: dict[str, weakref.WeakSet[Wakeup]] = {}

    def subscribe(self, topics: Iterable[str]) -> Wakeup:
        """A new ``Wakeup`` called for each of ``topics`` (kept while its owner keeps it)."""
        wakeup = Wakeup()
        for topic in topics:
            self._topics.setdefault(topic, weakref.WeakSet()).add(wakeup)
        return wakeup

    def deliver(self, topic: str) -> None:
        """A notification from PostgreSQL (committed work, any process)."""
        self.delivered += 1
        self.poke(topic)

    def poke(self, *topics: str) -> None:
        """Work this process queued: wake its workers now."""
        for topic in topics:
            for wakeup in list(self._topics.get(topic, ())):
                wakeup.set()

    def set_listening(self, listening: bool) -> None:
        """The listener connected or was lost: either way every worker looks now (for what
        was committed while nobody listened), then pauses as long as the new state allows."""
        self.listening = listening
        for wakeups in self._topics.values():
            for wakeup in list(wakeups):
                wakeup.set()

    def idle_pause(
        self, interval: float, *, due_in: float | None = None, at_most: float = math.inf
    ) -> float:
        """The pause of a worker that found nothing more to do: ``fallback_interval`` while
        listening, its own ``interval`` while not, never past ``due_in`` (seconds until
        work is due by the clock) nor ``at_most``."""
        pause = self.fallback_interval if self.listening else interval
        if due_in is not None:
            pause = min(pause, max(0.0, due_in))
        return min(pause, at_most)


_HUBS: weakref.WeakKeyDictionary[Services, Wakeups] = weakref.WeakKeyDictionary()


def wakeups_of(services: Services) -> Wakeups:
    """The process's hub (one per ``Services``). It listens only when ``[wakeups] enabled``
    starts ``wakeup_listener`` (``worker_actors``)."""
    hub = _HUBS.get(services)
    if hub is None:
        config = services.settings.wakeups
        hub = Wakeups(fallback_interval=config.fallback_interval_seconds)
        _HUBS[services] = hub
    return hub


async def _listen(ctx: ActorContext, services: Services, hub: Wakeups) -> None:
    """Connect, listen and keep listening until stopped; reconnect with backoff on loss."""
    log = get_logger(LISTENER)
    failures = 0
    while not ctx.stop_requested.is_set():
        try:
            listener = await Listener.open(services.db, hub.deliver)
        except Exception as exc:
            failures += 1
            _lost(ctx, log, exc, failures, hub)
        else:
            try:
                hub.set_listening(True)
                ctx.record_success()
                log.info(
                    "listening for wake-ups: workers look on their own every"
                    f" {hub.fallback_interval:g} s at most",
                    operation="wakeups.listen",
                    outcome=Outcome.SUCCESS,
                    reconnects=failures,
                )
                failures = 0
                await listener.watch(
                    stop=ctx.stop_requested, ping_every=PING_SECONDS, ping_timeout=PING_TIMEOUT
                )
            except Exception as exc:
                failures += 1
                _lost(ctx, log, exc, failures, hub)
            finally:
                hub.set_listening(False)
                await listener.close()
        if failures and not ctx.stop_requested.is_set():
            delay = backoff_delay(RECONNECT, min(failures - 1, 16), random.random())
            with trio.move_on_after(delay):
                await ctx.stop_requested.wait()


def _lost(
    ctx: ActorContext, log: FilteringBoundLogger, exc: Exception, failures: int, hub: Wakeups
) -> None:
    """Polling takes over at once. The failure is reported like a failed iteration (the
    supervisor logs it with its type); the mark names the database when it is the cause,
    so a database outage stays one alert and clears with the database's probe."""
    hub.set_listening(False)
    failure = classify(exc)
    ctx.record_failure(exc)
    ctx.set_degraded(LOST, cause=failure.dependency)
    if failures == 1:
        log.warning(
            LOST,
            operation="wakeups.listen",
            failure_type=failure.type.value,
            error=failure.message[:300],
            outcome=Outcome.DEGRADED,
        )


def listener_spec(services: Services) -> ActorSpec:
    """The ``wakeup_listener`` actor: one listening session for the process's workers."""
    hub = wakeups_of(services)

    async def run(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            await _listen(ctx, services, hub)
        finally:
            hub.set_listening(False)

    return ActorSpec(
        LISTENER,
        run,
        restart=Restart.PERMANENT,
        backoff=RECONNECT,
        budget=Budget(
            max_failures=1000, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=60.0
        ),
        shutdown_timeout=5.0,
        critical=False,
    )
