"""``auto_renewal``: renews subscriptions before they expire, by saved card or balance.

Every iteration reads the paid subscriptions expiring within ``[reminders]
auto_renew_lead_hours`` whose users have auto-renew on (the partial index of active
subscriptions by expiry: what is due), in pages, and renews each in one conditional
transaction (``runtime.storage.renewals.renew``): balance spent, ``payments`` row
(provider ``balance``, purpose ``renewal``), extension, activation job and notification,
all or nothing, charged at most once per period even with several processes renewing at
the same time. Too little balance: one reminder per subscription period, however many
runs see it. A plan with no price in the balance currency cannot be renewed from the
balance: its user hears so once per period. A subscription whose plan is not in the
catalog (granted days, a withdrawn plan) is left alone.

The renewal price is the plan's price in ``[billing] balance_currency`` (the lowest, if
several providers charge in it).

A user with a saved payment method (``runtime.storage.saved_methods``) is charged on it
first, at the plan's price for its provider, once per period (``_card_renewal``); when
that charge fails, or the provider is gone, the balance is tried, then the reminder. A
charge still pending at the provider is waited for, never doubled by the balance.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runtime.catalog import Catalog, Plan
from runtime.failures import Outcome
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.storage import renewals
from runtime.storage.discounts import discounted_amount
from runtime.storage.renewals import Candidate
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._card_renewal import CardRenewals
from ._common import items, worker_spec

NAME = "auto_renewal"
INTERVAL = 300.0
MIN_SLEEP_ON_FAILURE = 300.0
BUDGET = Budget(max_failures=6, window=3600.0, on_exhausted=OnExhausted.PARK, park_cooldown=900.0)


_CARD_DONE = ("failed", "refused")
"""Card charges of this period after which only the balance is tried."""


def renewal_price(plan: Plan, currency: str) -> int | None:
    """What renewing ``plan`` costs from a balance kept in ``currency``; None: it cannot."""
    return plan.price_in(currency)


class AutoRenewal:
    def __init__(self, services: Services, *, page: int = 200, max_pages: int = 50) -> None:
        settings = services.settings
        self.services = services
        self.catalog = Catalog.from_settings(settings)
        self.currency = settings.billing.balance_currency
        self.min_price = (
            settings.promo.min_price.get(self.currency, 1) if settings.promo.enabled else None
        )
        """Discounts on: the least a discounted renewal costs (``[promo] min_price``)."""
        self.lead = timedelta(hours=settings.reminders.auto_renew_lead_hours)
        self.activation_attempts = settings.billing.activation_max_attempts
        self.notify_attempts = settings.notifier.max_attempts
        self.page = page
        self.max_pages = max_pages
        self._log = get_logger(NAME)
        self._items = items(services.metrics)
        self._ttl = settings.billing.invoice_ttl_minutes
        self._min_prices = dict(settings.promo.min_price) if settings.promo.enabled else None

    async def iteration(self, ctx: ActorContext) -> float | None:
        after = None
        for _ in range(self.max_pages):
            batch = await renewals.due(
                self.services.db, lead=self.lead, after=after, limit=self.page
            )
            for candidate in batch:
                if ctx.stop_requested.is_set():
                    return None
                await self.handle(candidate)
            if len(batch) < self.page:
                return None
            after = batch[-1].position
        return 0.0  # more pages than one iteration takes: carry on at once

    async def handle(self, candidate: Candidate) -> renewals.Outcome | None:
        plan = self.catalog.find(candidate.plan_id)
        if plan is None:
            return None  # granted days or a withdrawn plan: nothing to renew it as
        if candidate.card_provider is not None and candidate.card_charge not in _CARD_DONE:
            card = await self._cards().renew(candidate, plan)
            self._items.labels(NAME, card.outcome.value).inc()
            if not card.fallback:
                return None
        price = renewal_price(plan, self.currency)
        if price is None:
            if not candidate.reminded_unavailable:
                await renewals.remind_unavailable(
                    self.services.db, candidate, max_attempts=self.notify_attempts
                )
                self._items.labels(NAME, "unavailable").inc()
            return None
        least = price if self.min_price is None else discounted_amount(price, 99, self.min_price)
        if candidate.balance_minor < least and candidate.reminded_low:
            return None  # told already this period; a top-up shows in the next scan
        result = await renewals.renew(
            self.services.db,
            candidate,
            price_minor=price,
            currency=self.currency,
            duration=plan.duration,
            activation_attempts=self.activation_attempts,
            notify_attempts=self.notify_attempts,
            min_price=self.min_price,
        )
        self._items.labels(NAME, result.outcome.value).inc()
        fields: dict[str, Any] = {
            "operation": "auto_renewal",
            "subscription_id": candidate.subscription_id,
            "user_id": candidate.user_id,
            "plan_id": candidate.plan_id,
        }
        if result.outcome is renewals.Outcome.RENEWED:
            self._log.info(
                "renewed from the balance",
                payment_id=result.payment_id,
                expires_at=result.expires_at.isoformat() if result.expires_at else None,
                outcome=Outcome.SUCCESS,
                **fields,
            )
        elif result.outcome is renewals.Outcome.INSUFFICIENT:
            self._log.info(
                "balance too low to renew",
                price_minor=price,
                balance_minor=result.balance_minor,
                reminded=result.reminded,
                outcome=Outcome.SKIPPED,
                **fields,
            )
        else:
            self._log.info(
                "renewal skipped", reason=result.reason, outcome=Outcome.SKIPPED, **fields
            )
        return result.outcome

    def _cards(self) -> CardRenewals:
        return CardRenewals(
            self.services.db,
            self.services.billing,
            ttl_minutes=self._ttl,
            min_prices=self._min_prices,
            log=self._log,
        )

    async def close(self) -> None:
        return None


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> AutoRenewal:
        return AutoRenewal(services, **options)

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
