from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from runtime.alerts import Alert
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    Invoice,
    InvoiceStatus,
    PaymentIntent,
    RefundNotSupported,
    TelegramPayment,
)


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def keys(self) -> list[str]:
        return [a.key for a in self.alerts]


@dataclass
class InChatProvider:
    """A provider whose invoices are sent in the chat (like Telegram's): no peer to call."""

    name: str = "stars"
    currency: str = "XTR"
    refunds: list[tuple[str, int]] = field(default_factory=list)
    webhook = None

    async def create_invoice(self, intent: PaymentIntent) -> Invoice:
        return Invoice(external_id=None, url=None, send_in_chat={"payload": intent.id})

    async def confirm_telegram_payment(self, payment: TelegramPayment) -> ConfirmedPayment:
        return ConfirmedPayment(
            self.name,
            payment.telegram_payment_charge_id,
            payment.invoice_payload,
            payment.total_amount,
            payment.currency,
            payer_id=payment.payer_id,
        )

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        return []

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        if self.name != "stars":
            raise RefundNotSupported("no refunds")
        self.refunds.append((payment.external_id, user_id))


SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month", "ru": "1 месяц"},
                "duration_days": 30,
                "backend": "marzban",
                "prices": {"stars": {"XTR": 150}, "card": {"RUB": 19900}},
                "traffic_limit_gb": 100,
                "device_limit": 3,
            }
        },
        "trial": {"enabled": True, "backend": "marzban", "duration_hours": 24},
    }
)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_settings(SETTINGS)


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()
