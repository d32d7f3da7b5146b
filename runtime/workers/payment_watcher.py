"""``crypto_payment_watcher``: polls providers for open invoices and credits paid ones.

For every payment provider whose open intents carry the provider's invoice id (Crypto Pay
invoices; Telegram invoices have no id before they are paid and are left to
``reconciliation``), the open invoices are read in keyset pages of 1000 and each page is
one ``fetch_status`` call (for Crypto Pay: one ``getInvoices`` call per up to 1000
invoices). Paid ones go through ``Billing.confirm``, the same idempotent path as the
webhook: a webhook and the watcher racing on one invoice credit it once. Then unpaid
intents past their expiry are marked expired.

It polls every ``interval`` (10 s) while invoices are open. With none open it waits for
one to be issued (a notification: ``payment.invoiced``), looking on its own at the
fallback interval, within a third of its lease's ttl (it renews the lease as it looks).

The watcher runs in one process at a time (a lease): polling a provider once is enough,
however many instances share the database. A provider that fails does not keep the
others from being polled; the iteration then fails with its error (logged with its
failure type, followed by the minimum sleep). One invoice that cannot be credited (a value
the core refuses, a bug) is logged, and alerted unless it is a domain error, and the
others are credited: only a transient failure (the database away) fails the poll.
"""

from __future__ import annotations

from typing import Any

from runtime.alerts import Alert, Severity
from runtime.failures import FailureType, Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import PaymentProvider, Services
from runtime.plugin_api.payments import InvoiceState
from runtime.storage import payments, scans
from runtime.storage.payments import Verdict
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import SoleRunner, effective_interval, holder_id, items, worker_spec
from ._wakeups import wakeups_of

NAME = "crypto_payment_watcher"
INTERVAL = 10.0
MIN_SLEEP_ON_FAILURE = 15.0
BUDGET = Budget(max_failures=30, window=900.0, on_exhausted=OnExhausted.PARK, park_cooldown=300.0)
INVOICED = "payment.invoiced"
"""The notification of an invoice issued (``migrations/0007_wakeups.sql``)."""
PAGE = 1000
"""Invoices per ``fetch_status`` call (Crypto Pay's ``getInvoices`` takes up to 1000)."""


class PaymentWatcher:
    def __init__(
        self,
        services: Services,
        holder: str,
        *,
        page: int = PAGE,
        max_pages: int = 50,
        expire_batch: int = 1000,
        lease_ttl: float = 90.0,
        interval: float = INTERVAL,
    ) -> None:
        self.services = services
        self.page = page
        self.max_pages = max_pages
        self.expire_batch = expire_batch
        self.runner = SoleRunner(f"worker:{NAME}", holder, ttl_seconds=lease_ttl)
        self.interval = interval
        self.wakeups = wakeups_of(services)
        self.wakeup = self.wakeups.subscribe([INVOICED])
        self.open_invoices = 0
        """Open invoices the last poll read (all providers)."""
        self._log = get_logger(NAME)
        self._items = items(services.metrics)

    async def iteration(self, ctx: ActorContext) -> float | None:
        db = self.services.db
        if self.wakeups.listening and not self.wakeup.called() and not self.open_invoices:
            # the fallback pause ended, nothing was open: an idle watcher holds no lease
            polling, expiry_in = await scans.payment_watch_due(db)
            if not polling and (expiry_in is None or expiry_in > 0):
                return self.wakeups.idle_pause(
                    self.interval, due_in=expiry_in, at_most=self.runner.ttl_seconds / 3
                )
        holder = await self.runner.acquire(db)
        self.wakeup.muted = not holder
        if not holder:  # another instance polls
            return self._idle_pause()
        self.open_invoices = 0
        failed: list[BaseException] = []
        for name, provider in sorted(self.services.billing.providers.items()):
            try:
                await self.watch(provider)
            except Exception as exc:
                if failed:  # the first one fails the iteration (and is logged there)
                    log_failure(self._log, exc, operation="payment_watch", provider=name)
                failed.append(exc)
        expired = await payments.expire_stale(db, limit=self.expire_batch)
        if expired:
            self._items.labels(NAME, "intent_expired").inc(expired)
        if failed:
            raise failed[0]
        if expired >= self.expire_batch:
            return 0.0
        return None if self.open_invoices else self._idle_pause()

    def _idle_pause(self) -> float:
        return self.wakeups.idle_pause(self.interval, at_most=self.runner.ttl_seconds / 3)

    async def watch(self, provider: PaymentProvider) -> int:
        """Poll ``provider``'s open invoices; returns how many were credited now."""
        db = self.services.db
        billing = self.services.billing
        credited = 0
        after = None
        for _ in range(self.max_pages):
            page = await scans.open_invoice_page(db, provider.name, after=after, limit=self.page)
            if not page:
                break
            self.open_invoices += len(page)
            statuses = await provider.fetch_status([invoice.external_id for invoice in page])
            for status in statuses:
                if status.state is not InvoiceState.PAID or status.payment is None:
                    continue
                try:
                    result = await billing.confirm(status.payment)
                except Exception as exc:
                    self._failed_one(provider.name, status.external_id, exc)
                    continue
                self._items.labels(NAME, f"paid_{result.verdict.value}").inc()
                if result.verdict is Verdict.CREDITED:
                    credited += 1
                    self._log.info(
                        "paid invoice found by polling",
                        operation="payment_watch",
                        provider=provider.name,
                        external_id=status.external_id,
                        outcome=Outcome.SUCCESS,
                    )
            if len(page) < self.page:
                break
            after = page[-1].position
        return credited

    def _failed_one(self, provider: str, external_id: str, exc: Exception) -> None:
        """One paid invoice could not be credited: logged (and alerted unless the peer's
        values were refused), so the rest of the page goes on; a transient failure fails
        the whole poll, which the next one retries."""
        failure = log_failure(
            self._log, exc, operation="payment_watch", provider=provider, external_id=external_id
        )
        if failure.transient:
            raise exc
        self._items.labels(NAME, "paid_failed").inc()
        if failure.type is not FailureType.DOMAIN:
            self.services.alerts.submit(
                Alert(
                    severity=Severity.CRITICAL,
                    key=f"payment_watch_failed:{provider}",
                    component=NAME,
                    title="a paid invoice could not be credited",
                    text=f"{provider}: {failure.type.value}: {failure.message[:300]}. The "
                    "other invoices were credited; this one is tried again every poll.",
                )
            )

    async def close(self) -> None:
        await self.runner.release(self.services.db)


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> PaymentWatcher:
        interval = effective_interval(ctx, INTERVAL)
        ttl = max(90.0, 4 * interval)
        return PaymentWatcher(
            services,
            holder_id(services, NAME),
            **{"lease_ttl": ttl, "interval": interval, **options},
        )

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
