"""Heleket invoices as a ``PaymentProvider``.

- The intent id is the invoice's ``order_id``. A retried ``create_invoice`` may make a
  second invoice for the same intent (the fake, as modelled, returns the open one);
  either way each invoice uuid is a payment of its own in the core, and a second paid one
  finds its intent paid already, which the core settles.
- Webhooks come through ``webhook`` (``HeleketWebhook``): signed, then fetched back.
- Polling (``fetch_status``) asks ``/v1/payment/info`` once per invoice (the API has no
  batch lookup); a record we cannot read, or an invoice Heleket does not know, is logged
  and left out, never failing the others.
- Refunds: Heleket's ``/v1/payment/refund`` sends coins to a wallet address the merchant
  supplies; the bot does not know the payer's own wallet (the ``from`` address may be an
  exchange's), so refunds are made by hand and recorded (``RefundNotSupported``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from plugins.cryptobot.amounts import to_decimal_string
from runtime.failures import DependencyError, DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    Invoice,
    InvoiceStatus,
    PaymentIntent,
    RefundNotSupported,
    WebhookRejected,
)

from .client import HeleketClient
from .payments import BadPayment, exponent, status_of
from .webhook import HeleketWebhook

_log = get_logger("heleket")


class HeleketProvider:
    """Takes payments through Heleket invoices (``name = "heleket"``)."""

    name = "heleket"

    def __init__(
        self,
        merchant: str,
        api_key: str,
        *,
        base_url: str,
        callback_url: str | None = None,
        return_url: str | None = None,
        lifetime_seconds: int = 3600,
        asset_decimals: Mapping[str, int] | None = None,
        allowed_ips: Collection[str] = (),
        source_ip_header: str = "x-real-ip",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url
        self._client = HeleketClient(
            base_url, merchant, api_key, timeout=timeout, transport=transport, verify=verify
        )
        self._callback_url = callback_url
        self._return_url = return_url
        self._lifetime = lifetime_seconds
        self._asset_decimals = dict(asset_decimals or {})
        self.webhook = HeleketWebhook(
            api_key,
            self._webhook_lookup,
            allowed_ips=allowed_ips,
            source_ip_header=source_ip_header,
        )

    def __repr__(self) -> str:
        return "HeleketProvider()"

    async def create_invoice(self, intent: PaymentIntent) -> Invoice:
        if intent.amount_minor <= 0:
            raise DomainError(f"heleket: intent {intent.id} has no positive amount")
        places = exponent(intent.currency, self._asset_decimals)
        params: dict[str, Any] = {
            "amount": to_decimal_string(intent.amount_minor, places, keep_zeros=False),
            "currency": intent.currency,
            "order_id": intent.id,
            "lifetime": self._lifetime,
        }
        if self._callback_url:
            params["url_callback"] = self._callback_url
        if self._return_url:
            params["url_return"] = self._return_url
            params["url_success"] = self._return_url
        result = await self._client.call("v1/payment", params)
        invoice_id, url = result.get("uuid"), result.get("url")
        if not isinstance(invoice_id, str) or not invoice_id or not isinstance(url, str):
            raise DependencyError(
                "heleket: /v1/payment answered without an invoice uuid or url", transient=False
            )
        _log.info(
            "invoice created",
            operation="create_invoice",
            intent_id=intent.id,
            invoice_id=invoice_id[:64],
            outcome="success",
        )
        return Invoice(
            external_id=invoice_id[:64], url=url, expires_at=_timestamp(result.get("expired_at"))
        )

    async def info(self, invoice_id: str) -> Mapping[str, Any]:
        """The payment record of one invoice, as ``/v1/payment/info`` gives it."""
        return await self._client.call("v1/payment/info", {"uuid": invoice_id})

    async def _webhook_lookup(self, invoice_id: str) -> InvoiceStatus | None:
        try:
            return status_of(await self.info(invoice_id), asset_decimals=self._asset_decimals)
        except BadPayment as exc:
            raise WebhookRejected(str(exc), status=400) from None
        except DependencyError as exc:
            if exc.transient:
                raise
            raise WebhookRejected(
                f"heleket: the webhook's invoice is not ours: {exc}", status=400
            ) from None

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        statuses: list[InvoiceStatus] = []
        for invoice_id in dict.fromkeys(str(i)[:64] for i in external_ids if i):
            try:
                status = status_of(await self.info(invoice_id), asset_decimals=self._asset_decimals)
            except BadPayment as exc:
                _log.warning(
                    "paid invoice not understood",
                    operation="payment_watch",
                    failure_type="domain_error",
                    error=str(exc),
                    outcome="skipped",
                )
                continue
            except DependencyError as exc:
                if exc.transient:
                    raise
                _log.warning(
                    "invoice not found at Heleket",
                    operation="payment_watch",
                    invoice_id=invoice_id,
                    error=str(exc)[:200],
                    outcome="skipped",
                )
                continue
            if status is not None:
                statuses.append(status)
        return statuses

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        raise RefundNotSupported(
            "heleket: a refund needs the payer's wallet address; send it from the Heleket "
            "account by hand and record the refund"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
