"""``fast_expiry_cleanup``: subscriptions end when their expiry comes, and the accounts of
long-ended ones are let go.

It sleeps until the next expiry (or the end of the next revoked account's retention: both
read from the first entry of a partial index), at most ``interval`` (60 s; a subscription
runs at least an hour from when it starts or is extended, so none comes due unseen).

Each iteration reads when work is next due, and when it is due now, runs two transactions:

- ``Access.expire_due`` marks a batch of lapsed subscriptions expired and queues the
  revocation of their VPN accounts, reading the partial index of active subscriptions by
  expiry (what is due, not the table) with SKIP LOCKED;
- ``Access.queue_deletions`` queues the deletion of accounts revoked longer ago than
  ``[access] revoked_retention_days``, reading the partial index of revoked accounts the
  same way, so panels do not fill up with dead accounts.

Any number of processes share the work. The panel calls themselves are done by
``activation_worker``, the one owner of every panel call: the cleanup only touches the
database and keeps its pace while a panel is down.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from runtime.plugin_api import Services
from runtime.storage import job_kinds, scans
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import effective_interval, items, worker_spec
from ._wakeups import wakeups_of

NAME = "fast_expiry_cleanup"
INTERVAL = 60.0
SHORTEST_PAUSE = 1.0
"""After a partial batch: what the index still says is due may be rows another process
holds locked, so look again after this, not at once."""
MIN_SLEEP_ON_FAILURE = 10.0
BUDGET = Budget(max_failures=30, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=300.0)


class ExpiryCleanup:
    def __init__(self, services: Services, *, batch: int = 500, interval: float = INTERVAL) -> None:
        self.services = services
        self.batch = batch
        self.interval = interval
        self.retention = timedelta(days=services.settings.access.revoked_retention_days)

    async def iteration(self, ctx: ActorContext) -> float | None:
        due_in = await scans.next_expiry_work(self.services.db, retention=self.retention)
        if due_in is None or due_in > 0:
            return min(self.interval, math.inf if due_in is None else due_in)
        access = self.services.access
        expired = await access.expire_due(limit=self.batch)
        deleting = await access.queue_deletions(retention=self.retention, limit=self.batch)
        counter = items(self.services.metrics)
        if expired:
            counter.labels(NAME, "expired").inc(expired)
        if deleting:
            counter.labels(NAME, "deletion_queued").inc(deleting)
        if expired or deleting:
            wakeups_of(self.services).poke(job_kinds.REVOKE)
        if expired >= self.batch or deleting >= self.batch:
            return 0.0
        return SHORTEST_PAUSE

    async def close(self) -> None:
        return None


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> ExpiryCleanup:
        return ExpiryCleanup(services, **{"interval": effective_interval(ctx, INTERVAL), **options})

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
