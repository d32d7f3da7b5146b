"""YooKassa payments (API v3) as a ``PaymentProvider``.

- ``create_invoice``: ``POST /v3/payments`` with ``capture: true`` and a ``redirect``
  confirmation; the intent id is the ``Idempotence-Key`` (a retried call returns the
  payment the first one made, never a second payment for one intent) and
  ``metadata.intent_id`` (it comes back with the payment). The amount is the intent's
  minor units as a decimal string in units (``19900`` RUB -> ``"199.00"``). With receipt
  settings, a 54-FZ ``receipt`` of one item is sent.
- Notifications come through ``webhook`` (``YooKassaWebhook``): verified by fetching the
  payment from the API.
- ``fetch_status`` (the payment watcher, reconciliation) reads each payment with
  ``GET /v3/payments/{id}``: the API has no lookup of several ids in one call.
- ``refund``: ``POST /v3/refunds`` with the payment id and the amount, idempotent per
  payment (and per amount for a partial refund).
- Saved methods (``saved_methods = true``; YooKassa enables autopayments per shop): an
  intent with ``save_method`` asks ``save_payment_method: true``; the verified payment's
  ``payment_method`` (``saved``, ``id``, ``title`` or the card's ``last4``) is reported as
  ``ConfirmedPayment.saved_method``. ``charge_saved`` is ``POST /v3/payments`` with
  ``payment_method_id``, ``capture: true`` and no confirmation, the core's key as the
  ``Idempotence-Key``; a ``canceled`` answer is a failed charge with
  ``cancellation_details.reason``, and ``permission_revoked`` or ``card_expired`` make
  the method unusable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from plugins.cryptobot.amounts import UnknownExponent, to_decimal_string
from runtime.failures import DependencyError, DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import (
    ChargeState,
    ConfirmedPayment,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    PaymentIntent,
    SavedCharge,
)

from .client import YooKassaClient
from .payments import (
    INTENT_KEY,
    METHOD_ID,
    BadPayment,
    cancellation_reason,
    parse_time,
    payment_of,
    places,
    valid_id,
)
from .settings import YooKassaReceipt
from .webhook import YooKassaWebhook

DESCRIPTION_LIMIT = 128
"""YooKassa's ``description``: at most 128 characters."""

_STATES = {
    "pending": InvoiceState.ACTIVE,
    "waiting_for_capture": InvoiceState.ACTIVE,
    "succeeded": InvoiceState.PAID,
    "canceled": InvoiceState.EXPIRED,
}

UNUSABLE = frozenset({"permission_revoked", "card_expired"})
"""Cancellation reasons after which a saved method can never be charged again."""

_log = get_logger("yookassa")


class YooKassaProvider:
    """Takes payments through YooKassa's payment page (``name = "yookassa"``)."""

    name = "yookassa"

    def __init__(
        self,
        shop_id: str,
        secret_key: str,
        *,
        base_url: str,
        return_url: str = "https://t.me/",
        receipt: YooKassaReceipt | None = None,
        payment_method: str = "any",
        client_ip_header: str | None = None,
        networks: Sequence[str] = (),
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        saved_methods: bool = False,
    ) -> None:
        self.base_url = base_url
        self.saves_methods = saved_methods
        self._client = YooKassaClient(
            base_url, shop_id, secret_key, timeout=timeout, transport=transport, verify=verify
        )
        self._return_url = return_url
        self._receipt = receipt
        self._payment_method = payment_method
        self.webhook = YooKassaWebhook(
            self.payment, client_ip_header=client_ip_header, networks=networks
        )

    def __repr__(self) -> str:
        return f"YooKassaProvider(base_url={self.base_url!r})"

    async def payment(self, payment_id: str) -> Mapping[str, Any]:
        """The payment as the API reports it (``GET /v3/payments/{id}``)."""
        return await self._client.get(f"payments/{payment_id}")

    # -- payments -----------------------------------------------------------------------

    async def create_invoice(self, intent: PaymentIntent) -> Invoice:
        body = self._body(intent)
        body["confirmation"] = {"type": "redirect", "return_url": self._return_url}
        if self._payment_method != "any":
            body["payment_method_data"] = {"type": self._payment_method}
        if intent.save_method and self.saves_methods:
            body["save_payment_method"] = True
        result = await self._client.post("payments", body, idempotence_key=intent.id)
        payment_id = valid_id(result.get("id"))
        confirmation = result.get("confirmation")
        url = confirmation.get("confirmation_url") if isinstance(confirmation, Mapping) else None
        if payment_id is None or not isinstance(url, str) or not url:
            raise DependencyError(
                "yookassa: a payment was created without an id or a confirmation URL",
                transient=False,
            )
        _log.info(
            "payment created",
            operation="create_invoice",
            intent_id=intent.id,
            payment_id=payment_id,
            outcome="success",
        )
        return Invoice(
            external_id=payment_id, url=url, expires_at=parse_time(result.get("expires_at"))
        )

    def _body(self, intent: PaymentIntent) -> dict[str, Any]:
        """What every payment of an intent sends: amount, capture, description, metadata
        and the receipt."""
        if intent.amount_minor <= 0:
            raise DomainError(f"yookassa: intent {intent.id} has no positive amount")
        value = self._value(intent.amount_minor, intent.currency)
        description = (intent.description or intent.title)[:DESCRIPTION_LIMIT]
        body: dict[str, Any] = {
            "amount": {"value": value, "currency": intent.currency},
            "capture": True,
            "description": description,
            "metadata": {INTENT_KEY: intent.id, "user_id": str(intent.user_id)},
        }
        if self._receipt is not None:
            body["receipt"] = self._receipt_of(description, value, intent.currency)
        return body

    async def charge_saved(
        self, method_ref: str, intent: PaymentIntent, *, key: str
    ) -> SavedCharge:
        """An autopayment: ``payment_method_id``, no confirmation, idempotent by ``key``."""
        if not self.saves_methods:
            raise DomainError("yookassa: saved methods are not enabled (saved_methods)")
        if not METHOD_ID.match(method_ref):
            raise DomainError("yookassa: not a saved method id")
        body = self._body(intent)
        body["payment_method_id"] = method_ref
        result = await self._client.post("payments", body, idempotence_key=key)
        payment_id = valid_id(result.get("id"))
        if payment_id is None:
            raise DependencyError("yookassa: a charge was made without an id", transient=False)
        status = result.get("status")
        fields = {"operation": "charge_saved", "intent_id": intent.id, "payment_id": payment_id}
        if status == "succeeded":
            try:
                confirmed = payment_of(result)
            except BadPayment as exc:
                raise DependencyError(f"{exc}", transient=False) from None
            if confirmed is None:
                raise DependencyError("yookassa: a charge of no intent of ours", transient=False)
            _log.info("saved method charged", outcome="success", **fields)
            return SavedCharge(ChargeState.SUCCEEDED, payment_id, confirmed)
        if status in ("pending", "waiting_for_capture"):
            _log.info("saved method charge pending", outcome="skipped", **fields)
            return SavedCharge(ChargeState.PENDING, payment_id)
        reason = cancellation_reason(result) if status == "canceled" else "unknown_status"
        _log.info("saved method charge canceled", reason=reason, outcome="failed", **fields)
        return SavedCharge(
            ChargeState.FAILED, payment_id, reason=reason, method_unusable=reason in UNUSABLE
        )

    def _value(self, amount_minor: int, currency: str) -> str:
        try:
            return to_decimal_string(amount_minor, places(currency), keep_zeros=True)
        except UnknownExponent as exc:  # pragma: no cover - fiat always has an exponent
            raise DomainError(f"yookassa: {exc}") from None

    def _receipt_of(self, description: str, value: str, currency: str) -> dict[str, Any]:
        assert self._receipt is not None
        receipt: dict[str, Any] = {
            "customer": {"email": self._receipt.customer_email},
            "items": [
                {
                    "description": description,
                    "quantity": "1.00",
                    "amount": {"value": value, "currency": currency},
                    "vat_code": self._receipt.vat_code,
                    "payment_subject": self._receipt.payment_subject,
                    "payment_mode": self._receipt.payment_mode,
                }
            ],
        }
        if self._receipt.tax_system_code is not None:
            receipt["tax_system_code"] = self._receipt.tax_system_code
        return receipt

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """One ``GET /v3/payments/{id}`` per payment; ids that cannot be YooKassa's, and
        payments the API does not know, are left out (logged)."""
        statuses: list[InvoiceStatus] = []
        for payment_id in dict.fromkeys(valid_id(raw) for raw in external_ids):
            if payment_id is None:
                continue
            try:
                payment = await self.payment(payment_id)
            except DependencyError as exc:
                if exc.transient:
                    raise
                _log.warning(
                    "payment not found", payment_id=payment_id, error=str(exc), outcome="skipped"
                )
                continue
            status = self._status_of(payment_id, payment)
            if status is not None:
                statuses.append(status)
        return statuses

    def _status_of(self, payment_id: str, payment: Mapping[str, Any]) -> InvoiceStatus | None:
        state = _STATES.get(str(payment.get("status"))[:32])
        if state is None or valid_id(payment.get("id")) != payment_id:
            _log.warning("unknown payment status", payment_id=payment_id, outcome="skipped")
            return None
        confirmed = None
        if state is InvoiceState.PAID:
            try:
                confirmed = payment_of(payment)
            except BadPayment as exc:
                _log.warning(
                    "paid payment not understood",
                    operation="payment_watch",
                    failure_type="domain_error",
                    error=str(exc),
                    outcome="skipped",
                )
            if confirmed is None:
                return None
        return InvoiceStatus(external_id=payment_id, state=state, payment=confirmed)

    # -- refunds ------------------------------------------------------------------------

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        """The whole payment back (what ``Billing.refund`` asks)."""
        await self.refund_amount(payment, user_id=user_id)

    async def refund_amount(
        self,
        payment: ConfirmedPayment,
        *,
        user_id: int,
        amount_minor: int | None = None,
        key: str | None = None,
    ) -> Mapping[str, Any]:
        """Refund ``amount_minor`` (all of it by default) of ``payment``; returns the refund.

        The idempotence key is ``key`` (name each partial refund for good, up to 64
        characters), by default the payment and the amount: a retry of the same refund
        returns the refund the first call made, and cannot refund twice."""
        amount = payment.amount_minor if amount_minor is None else amount_minor
        if not 0 < amount <= payment.amount_minor:
            raise DomainError(f"yookassa: cannot refund {amount} of {payment.amount_minor}")
        payment_id = valid_id(payment.external_id)
        if payment_id is None:
            raise DomainError("yookassa: not a YooKassa payment id")
        value = self._value(amount, payment.currency)
        body = {"payment_id": payment_id, "amount": {"value": value, "currency": payment.currency}}
        refund = await self._client.post(
            "refunds", body, idempotence_key=key or f"refund:{payment_id}:{amount}"[:64]
        )
        if refund.get("status") == "canceled":
            raise DependencyError("yookassa: the refund was canceled", transient=False)
        _log.info(
            "refund made",
            operation="refund",
            payment_id=payment_id,
            user_id=user_id,
            outcome="success",
        )
        return refund

    async def aclose(self) -> None:
        await self._client.aclose()
