"""Auto-renewal by a saved payment method: the card first, then the balance.

One charge per subscription period, whatever the number of processes: the charge and its
intent are stored before the provider is called (``runtime.storage.card_renewals``),
the call is idempotent by the period's key (``renewal:<subscription>:<period>``), and a
succeeded charge is credited through the billing core like any confirmed payment, once.
A charge the provider has not decided yet is left to the webhook and the payment watcher.
A failed charge (or a provider no longer configured) is recorded, so the card is not
tried again within the period, and the caller falls back to the balance, then to the
period's reminder. A charge that took another amount than asked is not credited and
falls back to nothing: it is alerted for a refund, and the balance is never charged
beside it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from runtime.billing import Billing
from runtime.catalog import Plan
from runtime.failures import DependencyError, DomainError, Outcome
from runtime.logs import log_failure
from runtime.plugin_api.payments import (
    ChargeState,
    PaymentIntent,
    RecurringPaymentProvider,
    SavedCharge,
)
from runtime.storage import Database, card_renewals, saved_methods
from runtime.storage import payments as payment_store
from runtime.storage.card_renewals import Decision, Step
from runtime.storage.payments import Verdict
from runtime.storage.renewals import Candidate, renewal_charge_id


class CardOutcome(enum.StrEnum):
    CHARGED = "card_charged"
    PENDING = "card_pending"
    WAITING = "card_waiting"
    """Another process holds the charge, or the provider has not decided it."""
    FAILED = "card_failed"
    """Declined, or not chargeable: the balance is tried next."""
    REFUSED = "card_refused"
    """Charged but not credited (another amount): recorded and alerted, for a refund.
    The balance is not tried: the user's money has moved once already this period, and
    taking it a second time is worse than a renewal left to the admin."""
    RETRY = "card_retry"
    """The provider did not answer: tried again with the same key once the claim ends."""
    NOTHING = "card_nothing"


@dataclass(frozen=True, slots=True)
class CardResult:
    outcome: CardOutcome
    fallback: bool = False
    """Renew from the balance now."""


class CardRenewals:
    def __init__(
        self,
        db: Database,
        billing: Billing,
        *,
        ttl_minutes: int,
        min_prices: dict[str, int] | None,
        log: Any,
    ) -> None:
        """``min_prices``: with discounts on, the least a renewal costs per currency."""
        self._db = db
        self._billing = billing
        self._ttl = ttl_minutes
        self._min_prices = min_prices
        self._log = log

    async def renew(self, candidate: Candidate, plan: Plan) -> CardResult:
        name = candidate.card_provider or ""
        fields: dict[str, Any] = {
            "operation": "auto_renewal.card",
            "subscription_id": candidate.subscription_id,
            "user_id": candidate.user_id,
            "provider": name,
        }
        provider = self._billing.providers.get(name)
        price = plan.price(name)
        if (
            not isinstance(provider, RecurringPaymentProvider)
            or not provider.saves_methods
            or price is None
        ):
            self._log.info(
                "saved method cannot be charged: provider or price missing",
                outcome=Outcome.SKIPPED,
                **fields,
            )
            return CardResult(CardOutcome.FAILED, fallback=True)
        floor = None if self._min_prices is None else self._min_prices.get(price.currency, 1)
        decision = await card_renewals.begin(
            self._db,
            candidate,
            provider=name,
            amount_minor=price.amount_minor,
            currency=price.currency,
            ttl_minutes=self._ttl,
            discount_floor=floor,
        )
        if decision.step is Step.NONE:
            return CardResult(CardOutcome.NOTHING)
        if decision.step is Step.WAIT:
            self._log.info("card renewal in progress", reason=decision.reason, **fields)
            return CardResult(CardOutcome.WAITING)
        if decision.step is Step.FALLBACK:
            return CardResult(CardOutcome.FAILED, fallback=True)
        return await self._charge(provider, candidate, plan, decision, fields)

    async def _charge(
        self,
        provider: RecurringPaymentProvider,
        candidate: Candidate,
        plan: Plan,
        decision: Decision,
        fields: dict[str, Any],
    ) -> CardResult:
        intent, method = decision.intent, decision.method
        assert intent is not None and method is not None
        fields = {**fields, "payment_id": intent.id, "retry": decision.retry}
        request = PaymentIntent(
            id=intent.id,
            user_id=candidate.user_id,
            amount_minor=intent.amount_minor,
            currency=intent.currency,
            purpose=intent.purpose,
            title=plan.title("en"),
            description=plan.title("en"),
            plan_id=plan.id,
        )
        key = renewal_charge_id(candidate.subscription_id, candidate.expires_at)
        try:
            charge = await provider.charge_saved(method.method_ref, request, key=key)
        except DependencyError as exc:
            if exc.transient:
                log_failure(self._log, exc, **fields)
                return CardResult(CardOutcome.RETRY)
            return await self._failed(
                candidate, intent.id, method, "refused by the provider", fields
            )
        except DomainError as exc:
            log_failure(self._log, exc, **fields)
            return await self._failed(candidate, intent.id, method, "not chargeable", fields)
        return await self._settle(provider, candidate, intent.id, method, charge, fields)

    async def _settle(
        self,
        provider: RecurringPaymentProvider,
        candidate: Candidate,
        intent_id: str,
        method: saved_methods.SavedMethod,
        charge: SavedCharge,
        fields: dict[str, Any],
    ) -> CardResult:
        sid, expires = candidate.subscription_id, candidate.expires_at
        if charge.state is ChargeState.PENDING:
            await payment_store.mark_invoiced(
                self._db, intent_id, external_id=charge.external_id, url=None
            )
            await card_renewals.settle(self._db, sid, expires, "pending")
            self._log.info("card charge pending", outcome=Outcome.SKIPPED, **fields)
            return CardResult(CardOutcome.PENDING)
        if charge.state is ChargeState.SUCCEEDED and charge.payment is not None:
            result = await self._billing.confirm(
                dataclasses.replace(charge.payment, provider=provider.name)
            )
            if result.verdict in (Verdict.CREDITED, Verdict.DUPLICATE):
                await card_renewals.settle(self._db, sid, expires, "succeeded")
                self._log.info("renewed by the saved card", outcome=Outcome.SUCCESS, **fields)
                return CardResult(CardOutcome.CHARGED)
            # recorded against the payer and alerted for a refund (``Billing.confirm``)
            await card_renewals.settle(self._db, sid, expires, "refused", reason=result.verdict)
            return CardResult(CardOutcome.REFUSED)
        if charge.method_unusable:
            await saved_methods.revoke(
                self._db, candidate.user_id, method.id, reason=f"provider: {charge.reason}"
            )
        return await self._failed(candidate, intent_id, method, charge.reason, fields)

    async def _failed(
        self,
        candidate: Candidate,
        intent_id: str,
        method: saved_methods.SavedMethod,
        reason: str,
        fields: dict[str, Any],
    ) -> CardResult:
        await card_renewals.settle(
            self._db,
            candidate.subscription_id,
            candidate.expires_at,
            "failed",
            reason=reason,
            payment_id=intent_id,
        )
        self._log.info(
            "card charge failed: renewing from the balance",
            reason=reason[:64],
            method_id=method.id,
            outcome=Outcome.DEGRADED,
            **fields,
        )
        return CardResult(CardOutcome.FAILED, fallback=True)
