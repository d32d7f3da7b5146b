"""``trial_notifications`` and ``expiry_notifications``: reminders before a subscription
ends and when it has ended, each sent once.

Offsets come from ``[reminders]``: ``trial_before_hours`` for trials,
``expiry_before_hours`` for paid subscriptions; both kinds also get an "it has ended"
message. Every (kind, offset) is a cursor scan (``runtime.storage.reminders.scan``): it
reads only the subscriptions whose expiry crossed the offset since the last scan and
queues a notification with the dedup key ``remind:{subscription_id}:{offset}:{expiry}``,
so each reminder goes out at most once per subscription, offset and expiry, across
restarts and with any number of processes. The notifier sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.plugin_api import Services
from runtime.storage import reminders
from runtime.storage.reminders import Reminder
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import items, worker_spec

TRIAL = "trial_notifications"
EXPIRY = "expiry_notifications"
INTERVAL = 120.0
MIN_SLEEP_ON_FAILURE = 60.0
BUDGET = Budget(max_failures=10, window=1800.0, on_exhausted=OnExhausted.PARK, park_cooldown=600.0)


class ReminderScanner:
    def __init__(
        self,
        services: Services,
        name: str,
        reminder_list: Sequence[Reminder],
        *,
        limit: int = 1000,
    ) -> None:
        self.services = services
        self.name = name
        self.reminders = list(reminder_list)
        self.limit = limit
        self.max_attempts = services.settings.notifier.max_attempts
        self._items = items(services.metrics)

    async def iteration(self, ctx: ActorContext) -> float | None:
        more = False
        for reminder in self.reminders:
            result = await reminders.scan(
                self.services.db, reminder, limit=self.limit, max_attempts=self.max_attempts
            )
            if result.queued:
                self._items.labels(self.name, f"queued_{reminder.cursor}").inc(result.queued)
            more = more or result.more
        return 0.0 if more else None

    async def close(self) -> None:
        return None


def _spec(
    services: Services, name: str, kind: str, hours: Sequence[int], **options: Any
) -> ActorSpec:
    found = reminders.reminders_for(kind, hours)

    def make(ctx: ActorContext) -> ReminderScanner:
        return ReminderScanner(services, name, found, **options)

    return worker_spec(
        name, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )


def trial_spec(services: Services, **options: Any) -> ActorSpec:
    hours = services.settings.reminders.trial_before_hours
    return _spec(services, TRIAL, "trial", hours, **options)


def expiry_spec(services: Services, **options: Any) -> ActorSpec:
    hours = services.settings.reminders.expiry_before_hours
    return _spec(services, EXPIRY, "paid", hours, **options)
