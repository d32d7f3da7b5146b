from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.alerts import Alert, Severity
from runtime.catalog import Catalog
from runtime.failures import DomainError, Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    ConfirmedPayment,
    Invoice,
    PaymentIntent,
    PaymentProvider,
    RecurringPaymentProvider,
    TelegramPayment,
    TelegramPaymentProvider,
    WebhookReceiver,
    WebhookRejected,
)
from runtime.storage import Database, balance_payments, discounts, saved_methods
from runtime.storage import payments as store
from runtime.storage.balance_payments import BalancePayment, Basis
from runtime.storage.discounts import Discount
from runtime.storage.payments import Charge, Finalized, Payment, Verdict

from ._doors import authenticate, receivers_of

PLANS_START_PARAMETER = "plans"
"""The ``/start`` parameter a forwarded copy of a plan's invoice links to: the plans."""
TOPUP_START_PARAMETER = "topup"
"""The ``/start`` parameter a forwarded copy of a top-up invoice links to: the balance."""


class AlertSubmitter(Protocol):
    def submit(self, alert: Alert) -> None: ...


class ProviderUnavailable(DomainError):
    """The user picked a provider that is not configured or does not sell this."""


@dataclass(frozen=True, slots=True)
class BalanceOffer:
    """A plan's price from the balance, the user's balance and the screen's basis."""

    price_minor: int
    currency: str
    balance_minor: int
    basis: Basis
    discount: Discount | None = None
    """The discount in ``price_minor``, if any."""

    @property
    def covered(self) -> bool:
        return self.balance_minor >= self.price_minor


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
        discounts_enabled: bool = False,
        min_prices: Mapping[str, int] | None = None,
    ) -> None:
        """``activation_max_attempts``: attempts of the activation job a credited purchase
        queues (``[billing] activation_max_attempts``). ``discounts_enabled``: purchases
        of plans get the user's discount (``runtime.storage.discounts``), never below
        ``min_prices`` (minor units per currency, ``[promo] min_price``)."""
        if activation_max_attempts < 1:
            raise ValueError("activation_max_attempts must be at least 1")
        self._db = db
        self._catalog = catalog
        self._providers = dict(providers)
        self._receivers = receivers_of(self._providers.values())
        self._alerts = alerts
        self._balance_currency = balance_currency
        self._ttl = invoice_ttl_minutes
        self._activation_attempts = activation_max_attempts
        self._discounts = discounts_enabled
        self._min_prices = dict(min_prices or {})
        self._terms = {plan.id: plan.terms for plan in catalog.plans}
        self._log = get_logger("billing")

    @property
    def providers(self) -> Mapping[str, PaymentProvider]:
        return self._providers

    async def discount(self, user_id: int) -> Discount | None:
        """The discount the user's next purchase of a plan gets now, if any."""
        if not self._discounts:
            return None
        return await discounts.offered(self._db, user_id)

    def discounted(self, amount_minor: int, currency: str, discount: Discount | None) -> int:
        """What a plan listed at ``amount_minor`` costs with ``discount``."""
        return discounts.price(amount_minor, discount, self.min_price(currency)).amount_minor

    def min_price(self, currency: str) -> int:
        return self._min_prices.get(currency, 1)

    def provider(self, name: str) -> PaymentProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderUnavailable(f"payment provider {name!r} is not configured") from None

    def receiver(self, name: str) -> WebhookReceiver:
        """The HTTP door of provider ``name``; ``WebhookRejected`` (404) when it has none."""
        receiver = self._receivers.get(name)
        if receiver is None:
            raise WebhookRejected("no webhook for this provider", status=404)
        return receiver

    def saves_methods(self, name: str) -> bool:
        """Whether provider ``name`` can save a payment method for auto-renewal."""
        provider = self._providers.get(name)
        return isinstance(provider, RecurringPaymentProvider) and provider.saves_methods

    async def buy(
        self,
        user_id: int,
        plan_id: str,
        provider_name: str,
        *,
        language: str = "en",
        save_method: bool = False,
    ) -> Checkout:
        """Store the intent, then ask the provider for an invoice carrying its id.
        ``save_method``: the user chose to save the method they pay with (auto-renewal);
        ``ProviderUnavailable`` when the provider cannot."""
        plan = self._catalog.get(plan_id)
        price = plan.price(provider_name)
        if price is None:
            raise ProviderUnavailable(f"plan {plan_id!r} has no price for {provider_name!r}")
        if save_method and not self.saves_methods(provider_name):
            raise ProviderUnavailable(f"{provider_name!r} cannot save a payment method")
        return await self._checkout(
            user_id,
            provider_name,
            amount_minor=price.amount_minor,
            currency=price.currency,
            purpose="subscription",
            plan_id=plan.id,
            title=plan.title(language),
            description=plan.title(language),
            start_parameter=PLANS_START_PARAMETER,
            discounted=self._discounts,
            save_method=save_method,
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
            start_parameter=TOPUP_START_PARAMETER,
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
        start_parameter: str,
        discounted: bool = False,
        save_method: bool = False,
    ) -> Checkout:
        """``discounted``: priced with the user's discount, which the intent records."""
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
            discount_floors=self._min_prices if discounted else None,
            save_method=save_method,
        )
        intent = PaymentIntent(
            id=payment.id,
            user_id=user_id,
            amount_minor=payment.amount_minor,
            currency=currency,
            purpose=purpose,
            title=title,
            description=description,
            plan_id=plan_id,
            start_parameter=start_parameter,
            save_method=save_method,
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

    async def balance_offer(self, user_id: int, plan_id: str) -> BalanceOffer | None:
        """What paying for ``plan_id`` from the balance would take, and on what basis; None
        when the plan is not on sale or has no price in the balance currency."""
        plan = self._catalog.find(plan_id)
        price = plan.price_in(self._balance_currency) if plan is not None else None
        if plan is None or price is None:
            return None
        found = await balance_payments.quote(self._db, user_id, plan.backend)
        discount = await self.discount(user_id)
        priced = discounts.price(price, discount, self.min_price(self._balance_currency))
        return BalanceOffer(
            priced.amount_minor,
            self._balance_currency,
            found.balance_minor,
            found.basis,
            priced.discount,
        )

    async def pay_from_balance(self, user_id: int, plan_id: str, basis: Basis) -> BalancePayment:
        """Buy ``plan_id`` with the balance, once for the ``basis`` the user was shown
        (``runtime.storage.balance_payments``). Raises ``ProviderUnavailable`` when the plan
        cannot be paid from the balance."""
        plan = self._catalog.find(plan_id)
        price = plan.price_in(self._balance_currency) if plan is not None else None
        if plan is None or price is None:
            raise ProviderUnavailable(f"plan {plan_id!r} cannot be paid from the balance")
        result = await balance_payments.pay(
            self._db,
            user_id,
            plan.terms,
            basis,
            price_minor=price,
            currency=self._balance_currency,
            activation_attempts=self._activation_attempts,
            min_price=self.min_price(self._balance_currency) if self._discounts else None,
        )
        self._log.info(
            "paid from the balance"
            if result.outcome is balance_payments.Outcome.PAID
            else "balance payment not made",
            operation="billing.balance_payment",
            user_id=user_id,
            plan_id=plan.id,
            payment_id=result.payment_id,
            result=result.outcome.value,
            outcome=Outcome.SUCCESS
            if result.outcome is balance_payments.Outcome.PAID
            else Outcome.SKIPPED,
        )
        return result

    async def confirm(self, confirmed: ConfirmedPayment) -> Finalized:
        """Credit a proven payment exactly once: duplicates are skipped; another payer,
        amount or currency is refused, recorded against the payer and alerted once."""
        result = await store.finalize(
            self._db,
            Charge(
                provider=confirmed.provider,
                external_id=confirmed.external_id,
                intent_id=confirmed.intent_id,
                amount_minor=confirmed.amount_minor,
                currency=confirmed.currency,
                payer_id=confirmed.payer_id,
            ),
            self._terms,
            activation_attempts=self._activation_attempts,
        )
        self._report(confirmed, result)
        await self._alert_refusal(confirmed, result)
        await self._keep_saved_method(confirmed, result)
        return result

    async def _alert_refusal(self, confirmed: ConfirmedPayment, result: Finalized) -> None:
        """Alert a refused charge once: the delivery that recorded it claims the alert in
        the database. A delivery that finds it recorded already claims it when nobody did:
        the one that recorded it lost its COMMIT's answer (a failover) and saw its own
        refusal as a duplicate on the retry, or died before it alerted. A refusal that could
        not be recorded (no payer known, values no row holds) is alerted every time."""
        if result.verdict is Verdict.CREDITED:
            return
        duplicate = result.verdict is Verdict.DUPLICATE
        if duplicate and not result.reason.startswith(store.RECORDED_ALREADY):
            return
        recorded, claimed = await store.claim_refusal_alert(
            self._db, provider=confirmed.provider, external_id=confirmed.external_id
        )
        if recorded is not None and not claimed:
            return
        if duplicate:
            if recorded is None or recorded.refused is None:
                return
            result = Finalized(
                Verdict(recorded.refused),  # the column holds one of the refusals
                result.payment,
                reason=f"recorded as refused ({recorded.refused}) by a delivery that did not"
                " alert it",
                recorded=recorded,
            )
        self._alerts.submit(refusal_alert(confirmed, result))

    async def _keep_saved_method(self, confirmed: ConfirmedPayment, result: Finalized) -> None:
        """Keep the method a credited payment saved, when its intent carried the user's
        consent and this very charge credited it. A repeated delivery (DUPLICATE) keeps it
        too, so a crash between the credit and this write loses nothing; one saved or
        removed before is left alone."""
        intent = result.payment
        method = confirmed.saved_method
        if (
            method is None
            or intent is None
            or not intent.save_method
            or result.verdict not in (Verdict.CREDITED, Verdict.DUPLICATE)
            or intent.status != "finalized"
            or intent.refused is not None
            or intent.provider != confirmed.provider
            or intent.external_id != confirmed.external_id
        ):
            return
        kept = await saved_methods.save(
            self._db,
            user_id=intent.user_id,
            provider=confirmed.provider,
            method_ref=method.ref,
            title=method.title,
            consent_payment_id=intent.id,
        )
        if kept is not None:
            self._log.info(
                "payment method saved for auto-renewal",
                operation="billing.save_method",
                payment_id=intent.id,
                user_id=intent.user_id,
                provider=confirmed.provider,
                outcome=Outcome.SUCCESS,
            )

    async def confirm_telegram(self, paid: TelegramPayment) -> Finalized:
        """Credit a ``successful_payment`` the bot received from Telegram.

        Only the bot's update path calls this: the update is the proof. The provider is the
        intent's when it takes Telegram payments, else the one of the payment's currency
        (so a payment that matches no intent is still recorded against its payer).
        """
        provider = await self._telegram_provider(paid)
        confirmed = await provider.confirm_telegram_payment(paid)
        return await self.confirm(dataclasses.replace(confirmed, provider=provider.name))

    async def _telegram_provider(self, paid: TelegramPayment) -> TelegramPaymentProvider:
        in_telegram = [
            p for p in self._providers.values() if isinstance(p, TelegramPaymentProvider)
        ]
        if len(in_telegram) == 1:  # whatever the intent says, it is the one
            return in_telegram[0]
        intent = await store.get(self._db, paid.invoice_payload) if in_telegram else None
        for candidates in (
            [p for p in in_telegram if intent is not None and p.name == intent.provider],
            [p for p in in_telegram if p.currency == paid.currency],
            in_telegram,
        ):
            if candidates:
                return candidates[0]
        raise ProviderUnavailable("a Telegram payment arrived but no provider takes them")

    async def webhook(
        self, provider_name: str, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Finalized]:
        """Authenticate a provider's webhook delivery, then credit what it confirms.

        Raises ``WebhookRejected``: 404 when the provider has no webhook, 401 when the
        delivery is not authentic (nothing is read, changed or alerted), 400 when an
        authentic delivery cannot be understood.
        """
        delivery = await authenticate(provider_name, self.receiver(provider_name), headers, body)
        return await self.receive(provider_name, delivery)

    async def receive(
        self, provider_name: str, delivery: AuthenticatedDelivery
    ) -> Sequence[Finalized]:
        """Credit what an authenticated delivery confirms. The payments are recorded under
        ``provider_name``, whatever the receiver says."""
        payments = await self.receiver(provider_name).parse(delivery)
        return [
            await self.confirm(dataclasses.replace(payment, provider=provider_name))
            for payment in payments
        ]

    def _report(self, confirmed: ConfirmedPayment, result: Finalized) -> None:
        operation = "payment_finalization"
        fields: dict[str, Any] = {
            "provider": confirmed.provider,
            "external_id": confirmed.external_id[:64],
            "payment_id": result.payment.id if result.payment else None,
            "verdict": result.verdict.value,
        }
        if result.recorded is not None:
            fields["recorded_payment_id"] = result.recorded.id
        if result.verdict is Verdict.CREDITED:
            self._log.info(
                "payment credited", operation=operation, outcome=Outcome.SUCCESS, **fields
            )
        elif result.verdict is Verdict.DUPLICATE:
            self._log.info(
                "payment already handled: skipped",
                operation=operation,
                outcome=Outcome.SKIPPED,
                reason=result.reason,
                **fields,
            )
        else:
            error = DomainError(f"payment refused: {result.verdict.value}: {result.reason}")
            log_failure(self._log, error, operation=operation, **fields)

    async def refund(self, payment_id: str, *, through_provider: bool = True) -> store.Refunded:
        """Refund a credited payment and take back what it gave, or a refused charge
        (recorded against its payer) to the user who paid it.

        ``through_provider`` asks the provider to send the money back first (Telegram
        Stars can; others raise ``RefundNotSupported``); False records a refund an admin
        made by hand.
        """
        payment = await store.get(self._db, payment_id)
        refundable = payment is not None and (
            payment.status == "finalized" or (payment.status == "paid" and payment.refused)
        )
        if payment is None or not refundable or payment.external_id is None:
            raise DomainError(f"payment {payment_id} is not a credited or refused payment")
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

    async def refunded_by_provider(
        self, provider: str, external_id: str, *, payer_id: int
    ) -> store.Refunded | None:
        """A refund the provider reports (Telegram's ``refunded_payment``): one we made
        comes back as such a notice and changes nothing; one made elsewhere (Telegram's
        support, a dispute) is recorded as an admin's refund by hand is, taking back what the
        payment gave, and the admins are told. Returns what was recorded, if anything.

        The notice names a charge; it counts only for a credited payment of that payer, so
        it can neither refund someone else's payment nor one that was never credited.
        """
        operation = "billing.refund_notice"
        payment = await store.by_charge(self._db, provider, external_id)
        if payment is None or payment.user_id != payer_id:
            self._log.warning(
                "refund notice for no payment of this payer: ignored",
                operation=operation,
                provider=provider,
                outcome=Outcome.SKIPPED,
            )
            return None
        if payment.status == "refunded":
            return None
        try:
            refunded = await self.refund(payment.id, through_provider=False)
        except DomainError:
            self._log.info(
                "refund notice for a payment that was not credited: ignored",
                operation=operation,
                payment_id=payment.id,
                status=payment.status,
                outcome=Outcome.SKIPPED,
            )
            return None
        self._alerts.submit(
            Alert(
                severity=Severity.WARNING,
                key=f"refund_outside:{payment.id}",
                component="billing",
                title="a payment was refunded outside the bot",
                text=f"{provider} refunded payment {payment.id} of user {payment.user_id}"
                " without the bot asking; it is recorded and what it bought was taken back.",
            )
        )
        return refunded


def refusal_alert(confirmed: ConfirmedPayment, result: Finalized) -> Alert:
    """The alert for a refused charge. Its key is built from our own data only (the
    verdict, the provider's name, an intent id found in our database), so whoever sends
    payments cannot mint keys; the same cause always gives the same key."""
    verdict = result.verdict.value
    intent = result.payment
    key = f"payment_{verdict}:{confirmed.provider}"
    what = f"A {confirmed.provider} charge"
    if intent is not None:
        key += f":{intent.id}"
        what += f" for intent {intent.id} of user {intent.user_id}"
    else:
        what += f" ({confirmed.external_id[:64]})"
    text = f"{what}: {result.reason}. Nothing was credited."
    recorded = result.recorded
    if recorded is not None:
        text += (
            f" It is recorded as payment {recorded.id} of user {recorded.user_id}, who paid "
            f"it: refund it to them (/refund {recorded.id})."
        )
    return Alert(
        severity=Severity.CRITICAL,
        key=key,
        component="billing",
        title=f"payment {verdict.replace('_', ' ')}",
        text=text,
    )
