"""YooKassa's HTTP notifications, proven by fetching the payment back from the API.

YooKassa does not sign notifications (``{"type": "notification", "event":
"payment.succeeded", "object": {...}}``). ``authenticate`` therefore reads only the
payment id from the body and asks the API for that payment with the shop's own
credentials: the delivery is accepted when the API says that payment is ``succeeded``
(for ``payment.succeeded``) or ``canceled`` (``payment.canceled``); anything else,
an unknown id, a payment of another state, or a body that is not a notification, is a
401. With a client-IP header configured, a caller outside YooKassa's published networks
is refused before any API call. ``parse`` credits the object the API returned, never the
body's amounts: a notification can say which payment to look at, never what it paid.

A notification is therefore as good as its replay: delivering the same one again, from
anyone, can only make the core see a payment that YooKassa itself reports paid, which the
core credits once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from runtime.failures import DependencyError
from runtime.plugin_api.payments import AuthenticatedDelivery, ConfirmedPayment, WebhookRejected

from .payments import BadPayment, payment_of, valid_id

BODY_LIMIT = 64 * 1024
EVENT_STATUS = {"payment.succeeded": "succeeded", "payment.canceled": "canceled"}
"""The payment events we act on, with the status the API must confirm."""
_KEEP = 256

Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


class YooKassaWebhook:
    """The ``WebhookReceiver`` of the ``yookassa`` provider."""

    authentication = (
        "not signed by YooKassa: the payment is fetched back from the API "
        "(and the caller's address checked against YooKassa's networks when configured)"
    )

    def __init__(
        self,
        fetch: Fetch,
        *,
        client_ip_header: str | None = None,
        networks: Sequence[str] = (),
    ) -> None:
        self._fetch = fetch
        self._ip_header = client_ip_header
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._verified: OrderedDict[bytes, Mapping[str, Any]] = OrderedDict()

    def __repr__(self) -> str:
        return f"YooKassaWebhook(client_ip_header={self._ip_header!r})"

    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        if self._ip_header is not None:
            self._check_source(headers.get(self._ip_header, ""))
        event, payment_id = _notification(body)
        try:
            payment = await self._fetch(payment_id)
        except DependencyError as exc:
            # 401: YooKassa delivers a notification again until it is answered 200
            raise WebhookRejected(f"yookassa: payment could not be fetched ({exc})") from None
        if valid_id(payment.get("id")) != payment_id:
            raise WebhookRejected("yookassa: the API returned another payment")
        if payment.get("status") != EVENT_STATUS[event]:
            raise WebhookRejected("yookassa: the API does not confirm the notification")
        self._verified[hashlib.sha256(body).digest()] = payment
        while len(self._verified) > _KEEP:
            self._verified.popitem(last=False)

    async def parse(self, delivery: AuthenticatedDelivery) -> Sequence[ConfirmedPayment]:
        payment = self._verified.pop(hashlib.sha256(delivery.body).digest(), None)
        if payment is None:
            # authenticated by another receiver instance: verify again rather than trust
            await self.authenticate(delivery.headers, delivery.body)
            payment = self._verified.pop(hashlib.sha256(delivery.body).digest())
        try:
            confirmed = payment_of(payment)
        except BadPayment as exc:
            raise WebhookRejected(str(exc), status=400) from None
        return [] if confirmed is None else [confirmed]

    def _check_source(self, value: str) -> None:
        address = value.split(",")[0].strip()[:64]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise WebhookRejected("yookassa: notification without a caller address") from None
        if not any(ip in network for network in self._networks):
            raise WebhookRejected("yookassa: notification from outside YooKassa's networks")


def _notification(body: bytes) -> tuple[str, str]:
    """The event and payment id of a notification body; ``WebhookRejected`` otherwise."""
    if not body or len(body) > BODY_LIMIT:
        raise WebhookRejected("yookassa: no notification body")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected("yookassa: notification is not JSON") from None
    if not isinstance(data, Mapping) or data.get("type") != "notification":
        raise WebhookRejected("yookassa: not a notification")
    event = data.get("event")
    if event not in EVENT_STATUS:
        raise WebhookRejected("yookassa: not a payment event we act on")
    obj = data.get("object")
    payment_id = valid_id(obj.get("id")) if isinstance(obj, Mapping) else None
    if payment_id is None:
        raise WebhookRejected("yookassa: notification without a payment id")
    return str(event), payment_id
