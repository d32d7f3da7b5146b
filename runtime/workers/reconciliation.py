"""``reconciliation``: the backstop that finds paid payments we never credited.

Periodically, for every payment provider, the intents of the last ``lookback`` that were
never credited (open, or expired here: a Telegram Stars invoice can be paid long after
our intent expired) are looked up at the provider in one ``fetch_status`` call (Telegram
Stars: ``getStarTransactions``; Crypto Pay: ``getInvoices`` per 1000). A payment found
paid there goes through ``Billing.confirm`` (the same idempotent path as a webhook or a
``successful_payment``), and admins get one alert per provider and run that payments were
recovered (their updates were lost somewhere): it counts them, and each is logged with its
ids under the alert's correlation id. The alert's key and text carry no charge or intent
id: those come from the provider, and the alert text is shown on ``/status``. Payments
younger than ``grace`` are left for the next run (their update may simply be on its
way), and payments the provider reports refunded are not credited.

Discrepancies are alerted by ``Billing.confirm`` itself: a charge for an intent we do not
know, a different amount, a second charge for one intent. A provider's charge that
carries none of our intent ids is not visible here: ``fetch_status`` answers only for the
ids it is given.

One process at a time runs it (a lease).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.alerts import Alert, Severity
from runtime.failures import Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import PaymentProvider, Services
from runtime.plugin_api.payments import InvoiceState
from runtime.storage import scans
from runtime.storage.payments import Verdict
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import SoleRunner, effective_interval, holder_id, items, worker_spec

NAME = "reconciliation"
INTERVAL = 600.0
MIN_SLEEP_ON_FAILURE = 300.0
BUDGET = Budget(max_failures=6, window=7200.0, on_exhausted=OnExhausted.PARK, park_cooldown=1800.0)
LOOKBACK = timedelta(hours=72)
GRACE = timedelta(minutes=5)


class Reconciliation:
    def __init__(
        self,
        services: Services,
        holder: str,
        *,
        lookback: timedelta = LOOKBACK,
        grace: timedelta = GRACE,
        limit: int = 10_000,
        lease_ttl: float = 1800.0,
    ) -> None:
        self.services = services
        self.lookback = lookback
        self.grace = grace
        self.limit = limit
        self.runner = SoleRunner(f"worker:{NAME}", holder, ttl_seconds=lease_ttl)
        self._log = get_logger(NAME)
        self._items = items(services.metrics)

    async def iteration(self, ctx: ActorContext) -> float | None:
        if not await self.runner.acquire(self.services.db):
            return None
        failed: list[BaseException] = []
        for name, provider in sorted(self.services.billing.providers.items()):
            try:
                await self.reconcile(provider)
            except Exception as exc:
                if failed:
                    log_failure(self._log, exc, operation="reconciliation", provider=name)
                failed.append(exc)
        if failed:
            raise failed[0]
        return None

    async def reconcile(self, provider: PaymentProvider) -> int:
        """Credit what ``provider`` took and we missed; returns how many were recovered."""
        intents = await scans.unfinished_intents(
            self.services.db, provider.name, within=self.lookback, limit=self.limit
        )
        if not intents:
            return 0
        statuses = await provider.fetch_status([intent.lookup_id for intent in intents])
        settled_before = datetime.now(UTC) - self.grace
        recovered = 0
        for status in statuses:
            payment = status.payment
            if status.state is not InvoiceState.PAID or payment is None:
                continue
            if payment.raw.get("refunded") is True:
                self._log.info(
                    "paid and refunded at the provider: not credited",
                    operation="reconciliation",
                    provider=provider.name,
                    external_id=payment.external_id,
                    payment_id=payment.intent_id,
                    outcome=Outcome.SKIPPED,
                )
                continue
            if payment.paid_at is not None and payment.paid_at > settled_before:
                continue  # its update may be on its way: the next run looks again
            result = await self.services.billing.confirm(payment)
            self._items.labels(NAME, f"paid_{result.verdict.value}").inc()
            if result.verdict is not Verdict.CREDITED:
                continue
            recovered += 1
            self._log.warning(
                "missed payment recovered",
                operation="reconciliation",
                provider=provider.name,
                external_id=payment.external_id,
                payment_id=payment.intent_id,
                outcome=Outcome.SUCCESS,
            )
        if recovered:
            self.services.alerts.submit(
                Alert(
                    severity=Severity.WARNING,
                    key=f"payment_recovered:{provider.name}",
                    component=NAME,
                    title="missed payments recovered",
                    text=(
                        f"{recovered} {provider.name} payment(s) were paid but never "
                        "credited (their updates were lost); reconciliation credited them "
                        "now. Each is logged as 'missed payment recovered' under this "
                        "alert's correlation id."
                    ),
                )
            )
        return recovered

    async def close(self) -> None:
        await self.runner.release(self.services.db)


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> Reconciliation:
        ttl = max(300.0, 3 * effective_interval(ctx, INTERVAL))
        return Reconciliation(services, holder_id(services, NAME), **{"lease_ttl": ttl, **options})

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
