from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.alerts import Alert, Severity
from runtime.catalog import Catalog
from runtime.failures import DomainError, Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    Invoice,
    PaymentIntent,
    PaymentProvider,
    WebhookRejected,
)
from runtime.storage import Database
from runtime.storage import payments as store
from runtime.storage.payments import Charge, Finalized, Payment, Verdict

ALERTING_VERDICTS = {Verdict.MISMATCH, Verdict.UNKNOWN_INTENT, Verdict.EXTRA_CHARGE}


class AlertSubmitter(Protocol):
    def submit(self, alert: Alert) -> None: ...


class ProviderUnavailable(DomainError):
    """The user picked a provider that is not configured or does not sell this."""


@dataclass(frozen=True, slots=True)
class Checkout:
    payment: Payment
    invoice: Invoice


class Billing:
    """Payments from the user's click to the credited subscription or balance."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        providers: Mapping[str, PaymentProvider],
        alerts: AlertSubmitter,
        *,
        balance_currency: str,
        invoice_ttl_minutes: int = 60,
        activation_max_attempts: int = 10,
    ) -> None:
        """``activation_max_attempts``: attempts of the activation job a credited purchase
        queues (``[billing] activation_max_attempts``)."""
        if activation_max_attempts < 1:
            raise ValueError("activation_max_attempts must be at least 1")
        self._db = db
        self._catalog = catalog
        self._providers = dict(providers)
        self._alerts = alerts
        self._balance_currency = balance_currency
        self._ttl = invoice_ttl_minutes
        self._activation_attempts = activation_max_attempts
        self._log = get_logger("billing")

    @property
    def providers(self) -> Mapping[str, PaymentProvider]:
        return self._providers

    def provider(self, name: str) -> PaymentProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderUnavailable(f"payment provider {name!r} is not configured") from None

    async def buy(
        self, user_id: int, plan_id: str, provider_name: str, *, language: str = "en"
    ) -> Checkout:
        """Store the intent, then ask the provider for an invoice carrying its id."""
        plan = self._catalog.get(plan_id)
        price = plan.price(provider_name)
        if price is None:
            raise ProviderUnavailable(f"plan {plan_id!r} has no price for {provider_name!r}")
        return await self._checkout(
            user_id,
            provider_name,
            amount_minor=price.amount_minor,
            currency=price.currency,
            purpose="subscription",
            plan_id=plan.id,
            title=plan.title(language),
            description=plan.title(language),
        )

    async def top_up(
        self, user_id: int, amount_minor: int, provider_name: str, *, title: str = "Balance top-up"
    ) -> Checkout:
        if amount_minor <= 0:
            raise DomainError("a top-up must be positive")
        return await self._checkout(
            user_id,
            provider_name,
            amount_minor=amount_minor,
            currency=self._balance_currency,
            purpose="topup",
            plan_id=None,
            title=title,
            description=title,
        )

    async def _checkout(
        self,
        user_id: int,
        provider_name: str,
        *,
        amount_minor: int,
        currency: str,
        purpose: str,
        plan_id: str | None,
        title: str,
        description: str,
    ) -> Checkout:
        provider = self.provider(provider_name)
        payment = await store.create_intent(
            self._db,
            user_id=user_id,
            provider=provider_name,
            amount_minor=amount_minor,
            currency=currency,
            purpose=purpose,
            plan_id=plan_id,
            ttl_minutes=self._ttl,
        )
        intent = PaymentIntent(
            id=payment.id,
            user_id=user_id,
            amount_minor=amount_minor,
            currency=currency,
            purpose=purpose,
            title=title,
            description=description,
            plan_id=plan_id,
        )
        invoice = await provider.create_invoice(intent)
        await store.mark_invoiced(
            self._db, payment.id, external_id=invoice.external_id, url=invoice.url
        )
        self._log.info(
            "checkout created",
            operation="billing.checkout",
            payment_id=payment.id,
            provider=provider_name,
            purpose=purpose,
            outcome=Outcome.SUCCESS,
        )
        return Checkout(payment, invoice)

    async def confirm(self, confirmed: ConfirmedPayment) -> Finalized:
        """Credit a verified payment exactly once; duplicates are skipped, tampering refused."""
        intent = await store.get(self._db, confirmed.intent_id)
        plan = self._catalog.find(intent.plan_id) if intent else None
        result = await store.finalize(
            self._db,
            Charge(
                provider=confirmed.provider,
                external_id=confirmed.external_id,
                intent_id=confirmed.intent_id,
                amount_minor=confirmed.amount_minor,
                currency=confirmed.currency,
            ),
            plan.terms if plan else None,
            activation_attempts=self._activation_attempts,
        )
        self._report(confirmed, result)
        return result

    def _report(self, confirmed: ConfirmedPayment, result: Finalized) -> None:
        operation = "payment_finalization"
        fields: dict[str, Any] = {
            "provider": confirmed.provider,
            "external_id": confirmed.external_id,
            "payment_id": confirmed.intent_id,
            "verdict": result.verdict.value,
        }
        if result.verdict is Verdict.CREDITED:
            self._log.info(
                "payment credited", operation=operation, outcome=Outcome.SUCCESS, **fields
            )
        elif result.verdict is Verdict.DUPLICATE:
            self._log.info(
                "payment already credited: skipped",
                operation=operation,
                outcome=Outcome.SKIPPED,
                **fields,
            )
        else:
            error = DomainError(f"payment refused: {result.verdict.value}: {result.reason}")
            log_failure(self._log, error, operation=operation, **fields)
            self._alerts.submit(
                Alert(
                    severity=Severity.CRITICAL,
                    key=f"payment_{result.verdict.value}:{confirmed.provider}:{confirmed.external_id}",
                    component="billing",
                    title=f"payment {result.verdict.value.replace('_', ' ')}",
                    text=(
                        f"{confirmed.provider} charge {confirmed.external_id} for intent "
                        f"{confirmed.intent_id}: {result.reason}. Nothing was credited."
                    ),
                )
            )

    async def webhook(
        self, provider_name: str, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Finalized]:
        """Verify a provider's webhook and credit what it confirms.

        Raises ``WebhookRejected`` (answer 401/400) for a forged or unreadable delivery;
        nothing is changed then.
        """
        provider = self._providers.get(provider_name)
        if provider is None:
            raise WebhookRejected(f"no provider {provider_name!r}", status=404)
        confirmed = await provider.parse_webhook(headers, body)
        return [await self.confirm(payment) for payment in confirmed]

    async def refund(self, payment_id: str, *, through_provider: bool = True) -> store.Refunded:
        """Refund a credited payment and take back what it gave.

        ``through_provider`` asks the provider to send the money back first (Telegram
        Stars can; others raise ``RefundNotSupported``); False records a refund an admin
        made by hand.
        """
        payment = await store.get(self._db, payment_id)
        if payment is None or payment.status != "finalized" or payment.external_id is None:
            raise DomainError(f"payment {payment_id} is not a credited payment")
        if through_provider:
            await self.provider(payment.provider).refund(
                ConfirmedPayment(
                    provider=payment.provider,
                    external_id=payment.external_id,
                    intent_id=payment.id,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                ),
                user_id=payment.user_id,
            )
        plan = self._catalog.find(payment.plan_id)
        try:
            refunded = await store.refund(
                self._db, payment_id, plan_duration=plan.duration if plan else None
            )
        except Exception as exc:
            if through_provider:
                self._alerts.submit(
                    Alert(
                        severity=Severity.CRITICAL,
                        key=f"refund_unrecorded:{payment_id}",
                        component="billing",
                        title="refund sent but not recorded",
                        text=f"payment {payment_id} was refunded by {payment.provider} but "
                        f"recording it failed ({type(exc).__name__}); record it by hand.",
                    )
                )
            raise
        if refunded is None:
            raise DomainError(f"payment {payment_id} was refunded already")
        self._log.info(
            "payment refunded",
            operation="billing.refund",
            payment_id=payment_id,
            through_provider=through_provider,
            access_revoked=refunded.access_revoked,
            outcome=Outcome.SUCCESS,
        )
        return refunded
