"""``traffic_notifications``: a reminder when a share of a period's traffic is used
(``[traffic] reminder_percents``, 80 and 100 by default), each once per period.

Every ``scan_interval_seconds`` it reads the usage of running subscriptions whose plan
(or trial) limits traffic, through the same cache as the bot's screens, and queues the
reminders whose threshold is crossed. Each is a ``traffic_reminders`` row, unique per
subscription, period and threshold, written with its notification
(``runtime.storage.traffic.remind``): it goes out once per period, across restarts and
with any number of processes scanning. A panel that cannot say is skipped until the next
scan.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.catalog import Catalog
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.storage import Database
from runtime.storage import traffic as store
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted
from runtime.traffic import GIB, Traffic, traffic_of

from ._common import worker_spec

NAME = "traffic_notifications"
MIN_SLEEP_ON_FAILURE = 60.0
BUDGET = Budget(max_failures=10, window=1800.0, on_exhausted=OnExhausted.PARK, park_cooldown=600.0)
BATCH = 200

_log = get_logger("traffic")


def gigabytes(value: int) -> str:
    return f"{value / GIB:.1f}"


async def scan(
    db: Database,
    traffic: Traffic,
    catalog: Catalog,
    percents: Sequence[int],
    *,
    max_attempts: int,
    batch: int = BATCH,
) -> int:
    """One pass over the running limited subscriptions; returns the reminders queued."""
    plan_ids = [plan.id for plan in catalog.plans if plan.traffic_limit_bytes]
    trial = catalog.trial is not None and catalog.trial.traffic_limit_bytes is not None
    thresholds = sorted(set(percents))
    if not thresholds or not (plan_ids or trial):
        return 0
    queued = 0
    after = 0
    while True:
        running = await store.running_with_limits(
            db, plan_ids=plan_ids, trial=trial, after_id=after, limit=batch
        )
        for item in running:
            subscription = item.subscription
            base = traffic.base_limit(subscription)
            if base is None:
                continue
            status = await traffic.status_with(subscription, base + item.extra_bytes)
            if status.used_bytes is None or status.limit_bytes is None:
                continue
            for threshold in thresholds:
                if status.used_bytes * 100 < status.limit_bytes * threshold:
                    break
                queued += await store.remind(
                    db,
                    subscription,
                    threshold,
                    params={
                        "used_gb": gigabytes(status.used_bytes),
                        "limit_gb": gigabytes(status.limit_bytes),
                    },
                    max_attempts=max_attempts,
                )
        if len(running) < batch:
            return queued
        after = running[-1].subscription.id


class TrafficReminders:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.catalog = Catalog.from_settings(services.settings)

    async def iteration(self, ctx: ActorContext) -> float | None:
        settings = self.services.settings
        queued = await scan(
            self.services.db,
            traffic_of(self.services),
            self.catalog,
            settings.traffic.reminder_percents,
            max_attempts=settings.notifier.max_attempts,
        )
        if queued:
            _log.info(
                "traffic reminders queued",
                operation="traffic.reminders",
                queued=queued,
                outcome="success",
            )
        return None

    async def close(self) -> None:
        return None


def spec(services: Services) -> ActorSpec:
    def make(ctx: ActorContext) -> TrafficReminders:
        return TrafficReminders(services)

    return worker_spec(
        NAME,
        make,
        interval=services.settings.traffic.scan_interval_seconds,
        min_sleep_on_failure=MIN_SLEEP_ON_FAILURE,
        budget=BUDGET,
    )
