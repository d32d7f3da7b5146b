"""Heleket's webhook: deliveries proven by their ``sign``, and then checked at the API.

A delivery is a JSON object whose ``sign`` field is ``md5(base64(json_encode(the object
without sign)) + api_key)`` (see ``signing``). Since the signature lives inside the body,
``authenticate`` must parse it: the body is bounded (``MAX_BODY``) first. The raw body must
also be exactly the bytes Heleket's ``json_encode`` makes of it (a proxy that re-serialises
JSON breaks this, as it would a raw-body HMAC): the same data in other bytes is refused.
The signature does not cover who sends it: anyone holding an authentic delivery can send
it again (harmless: it is fetched back and deduplicated); ``allowed_ips`` closes that:
the sender's address must be in that list, read from a header the operator's reverse
proxy sets (the core does not see the socket's peer).

A signature proves Heleket sent it, not that the payment is still what it said: ``parse``
credits nothing from the delivery itself. It takes the invoice's uuid and asks
``/v1/payment/info`` for the record, and only that answer becomes a payment. A stale,
duplicated or out-of-order delivery therefore reports the invoice as it is now.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    ConfirmedPayment,
    InvoiceState,
    InvoiceStatus,
    WebhookRejected,
)

from .signing import php_json, signatures_match, webhook_sign

MAX_BODY = 64 * 1024
"""A delivery is about 1 KiB; anything much larger is not Heleket's."""

Lookup = Callable[[str], Awaitable[InvoiceStatus | None]]


class HeleketWebhook:
    """The ``WebhookReceiver`` of the ``heleket`` provider."""

    authentication = (
        "md5(base64(JSON without sign) + API key) in the body's sign field, "
        "then the payment fetched back from /v1/payment/info"
    )

    def __init__(
        self,
        api_key: str,
        lookup: Lookup,
        *,
        allowed_ips: Collection[str] = (),
        source_ip_header: str = "x-real-ip",
    ) -> None:
        self._api_key = api_key
        self._lookup = lookup
        self._networks = [ipaddress.ip_network(ip, strict=False) for ip in allowed_ips]
        self._ip_header = source_ip_header.lower()

    def __repr__(self) -> str:
        return "HeleketWebhook()"

    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        if self._networks and not self._from_allowed_address(headers):
            raise WebhookRejected("heleket: webhook from an address not allowed")
        if not body or len(body) > MAX_BODY:
            raise WebhookRejected("heleket: webhook body empty or too large")
        payload = _object(body)
        if payload is None:
            raise WebhookRejected("heleket: webhook body is not a JSON object")
        given = payload.get("sign")
        if not isinstance(given, str) or not given:
            raise WebhookRejected("heleket: webhook without a signature")
        if not signatures_match(webhook_sign(payload, self._api_key), given):
            raise WebhookRejected("heleket: webhook signature does not match")
        if php_json(payload) != body:
            raise WebhookRejected("heleket: webhook body is not as Heleket encodes it")

    def _from_allowed_address(self, headers: Mapping[str, str]) -> bool:
        raw = headers.get(self._ip_header, "")[:200].split(",")[-1].strip()
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    async def parse(self, delivery: AuthenticatedDelivery) -> Sequence[ConfirmedPayment]:
        payload = _object(delivery.body)
        if payload is None:
            raise WebhookRejected("heleket: webhook body is not a JSON object", status=400)
        if payload.get("type", "payment") != "payment":
            return []  # static wallets are not used
        invoice_id = payload.get("uuid")
        if not isinstance(invoice_id, str) or not 1 <= len(invoice_id) <= 64:
            raise WebhookRejected("heleket: webhook without an invoice uuid", status=400)
        status = await self._lookup(invoice_id)
        if status is None or status.state is not InvoiceState.PAID or status.payment is None:
            return []
        return [status.payment]


def _object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
