"""Gauges of the work waiting in the database, read when Prometheus scrapes.

A scrape refreshes the snapshot at most once per ``min_interval`` and waits at most
``timeout`` for it, whoever sends the requests and however often: ``/metrics`` never
costs the database more than one read per interval, and a slow or unreachable database
leaves the last snapshot in place, its age growing (``vpnbot_backlog_age_seconds``).
Nothing is read while nobody scrapes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

import trio
from prometheus_client.core import GaugeMetricFamily, Metric


class Waiting(Protocol):
    @property
    def count(self) -> int: ...
    @property
    def oldest_seconds(self) -> float: ...


class Snapshot(Protocol):
    @property
    def outbox(self) -> Mapping[str, Waiting]: ...
    @property
    def inbox(self) -> Waiting: ...


class BacklogCollector:
    def __init__(
        self,
        read: Callable[[], Awaitable[Snapshot]],
        *,
        min_interval: float = 10.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._min_interval = min_interval
        self._timeout = timeout
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._taken_at = -math.inf
        self._tried_at = -math.inf
        self._lock = trio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if self._clock() - self._tried_at < self._min_interval:
                return
            self._tried_at = self._clock()
            with trio.move_on_after(self._timeout):
                try:
                    snapshot = await self._read()
                except Exception:
                    return  # the database's own failures are reported by its actor
                self._snapshot, self._taken_at = snapshot, self._clock()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        if snapshot is None:
            return
        due = GaugeMetricFamily(
            "vpnbot_outbox_due_jobs",
            "Outbox jobs due and not claimed by a worker, by kind.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "vpnbot_outbox_oldest_due_seconds",
            "How long the oldest due, unclaimed outbox job has waited, by kind.",
            labels=["kind"],
        )
        for kind, waiting in sorted(snapshot.outbox.items()):
            due.add_metric([kind], waiting.count)
            oldest.add_metric([kind], waiting.oldest_seconds)
        yield due
        yield oldest
        yield GaugeMetricFamily(
            "vpnbot_inbox_pending_updates",
            "Telegram updates stored and not yet handled.",
            value=snapshot.inbox.count,
        )
        yield GaugeMetricFamily(
            "vpnbot_inbox_oldest_pending_seconds",
            "How long the oldest unhandled Telegram update has waited.",
            value=snapshot.inbox.oldest_seconds,
        )
        yield GaugeMetricFamily(
            "vpnbot_backlog_age_seconds",
            "How old the outbox and inbox figures are (the last read that succeeded).",
            value=self._clock() - self._taken_at,
        )
