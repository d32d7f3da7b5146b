"""``fast_expiry_cleanup``: every few seconds, subscriptions past their expiry end.

Each iteration is ``Access.expire_due``: one transaction marks a batch of lapsed
subscriptions expired and queues the revocation of their VPN accounts, reading the
partial index of active subscriptions by expiry (what is due, not the table) with SKIP
LOCKED, so any number of processes share the work. The revocations themselves are panel
calls, done by ``activation_worker``, the one owner of every panel call: the cleanup only
touches the database and keeps its pace while a panel is down.
"""

from __future__ import annotations

from typing import Any

from runtime.plugin_api import Services
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import items, worker_spec

NAME = "fast_expiry_cleanup"
INTERVAL = 5.0
MIN_SLEEP_ON_FAILURE = 10.0
BUDGET = Budget(max_failures=30, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=300.0)


class ExpiryCleanup:
    def __init__(self, services: Services, *, batch: int = 500) -> None:
        self.services = services
        self.batch = batch

    async def iteration(self, ctx: ActorContext) -> float | None:
        expired = await self.services.access.expire_due(limit=self.batch)
        if expired:
            items(self.services.metrics).labels(NAME, "expired").inc(expired)
        return 0.0 if expired >= self.batch else None

    async def close(self) -> None:
        return None


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> ExpiryCleanup:
        return ExpiryCleanup(services, **options)

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
