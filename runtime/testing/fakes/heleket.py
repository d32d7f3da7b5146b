"""A fake Heleket payment API: invoices in memory, signed webhook deliveries.

Modelled on Heleket's public documentation (see ``plugins.heleket``):

- ``POST /v1/payment`` and ``POST /v1/payment/info``, JSON bodies, the ``merchant`` and
  ``sign`` (``md5(base64(body) + api_key)``) headers, else HTTP 401;
- answers ``{"state": 0, "result": ...}``; refusals ``{"state": 1, "message": ...}`` with
  HTTP 422 (invalid parameters) or 404 (no such payment): modelled, not copied;
- a second ``/v1/payment`` with the ``order_id`` of an open invoice returns that invoice;
- statuses set by the test only (``pay``, ``set_status``): ``check`` when created, then
  ``paid``, ``paid_over``, ``wrong_amount``, ``cancel``, ``fail``...;
- webhook deliveries (``webhook_delivery``) as Heleket sends them: the payment record with
  ``sign`` = md5(base64(PHP ``json_encode`` of the record) + api_key), slashes escaped;
  ``deliver_webhook`` POSTs one and retries it while the answer is not 2xx (Heleket
  retries), and can send it more than once (duplicates).

Beyond the API, for a person trying the product (the sandbox): with ``page_base_url`` set
(the fake's own base URL), invoices' ``url`` leads to a page the fake serves where the
invoice can be paid or cancelled; paying there is ``pay`` and, with ``webhook_url`` set,
the signed delivery POSTed to it. Not modelled: static wallets, payouts, refunds,
exchange rates, and keeping invoices across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import httpx
import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.plugin_api.peer import shared_tls_context

from ._base import FakePeer

FINAL = frozenset({"paid", "paid_over", "wrong_amount", "cancel", "fail", "system_fail"})


def sign_bytes(data: bytes, api_key: str) -> str:
    """``md5(base64(data) + api_key)``, hex: Heleket's signature of a request body."""
    return hashlib.md5(base64.b64encode(data) + api_key.encode()).hexdigest()


def php_json(value: Any) -> bytes:
    """PHP's ``json_encode`` with default flags: compact, ``\\uXXXX``, ``/`` as ``\\/``."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/").encode()


def webhook_sign(record: Mapping[str, Any], api_key: str) -> str:
    return sign_bytes(php_json({k: v for k, v in record.items() if k != "sign"}), api_key)


class FakeHeleket(FakePeer):
    name = "heleket"

    def __init__(
        self,
        merchant: str = "8b03432e-385b-4670-8d06-064591096795",
        api_key: str = "fake-heleket-payment-api-key-0000",
    ) -> None:
        super().__init__()
        self.merchant = merchant
        self.api_key = api_key
        self.invoices: dict[str, dict[str, Any]] = {}
        self.webhook_url: str | Callable[[], str | None] | None = None
        """Where payments made on the page are delivered (signed), or a callable giving it."""
        self.webhook_results: list[int | str] = []
        self.page_base_url: str | None = None
        """The fake's base URL as a browser reaches it: set, invoices' ``url`` opens the
        fake's payment page instead of Heleket's."""

    # -- driving it from a test -----------------------------------------------------------

    def invoice_for(self, order_id: str) -> dict[str, Any]:
        for invoice in self.invoices.values():
            if invoice["order_id"] == order_id:
                return invoice
        raise KeyError(order_id)

    def pay(
        self,
        invoice_id: str,
        *,
        amount: str | None = None,
        currency: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """The payer pays ``amount`` (the invoice's by default) of an open invoice: ``paid``,
        ``paid_over`` when more, ``wrong_amount`` when less (unless ``status`` says).
        ``currency`` alters the invoice's, as a peer reporting another would."""
        invoice = self.invoices[invoice_id]
        if invoice["is_final"]:
            raise ValueError(f"invoice {invoice_id} is {invoice['status']} already")
        paid = Decimal(amount or invoice["amount"])
        asked = Decimal(invoice["amount"])
        if status is None:
            status = "paid" if paid == asked else "paid_over" if paid > asked else "wrong_amount"
        if currency is not None:
            invoice["currency"] = currency
        invoice.update(
            payment_amount=str(paid),
            payer_currency=invoice["currency"],
            payer_amount=invoice["amount"],
            merchant_amount=str(paid),
        )
        self.set_status(invoice_id, status)
        return dict(invoice)

    def set_status(self, invoice_id: str, status: str) -> None:
        invoice = self.invoices[invoice_id]
        invoice["status"] = invoice["payment_status"] = status
        invoice["is_final"] = status in FINAL
        self._touch()

    def webhook_delivery(
        self, invoice_id: str, *, changes: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The delivery Heleket sends for the invoice as it now is (``changes`` alter it,
        still signed); the order of keys and the encoding are PHP's."""
        invoice = self.invoices[invoice_id]
        record = {
            "type": "payment",
            "uuid": invoice["uuid"],
            "order_id": invoice["order_id"],
            "amount": invoice["amount"],
            "payment_amount": invoice["payment_amount"],
            "merchant_amount": invoice["merchant_amount"],
            "network": "tron",
            "currency": invoice["currency"],
            "payer_currency": invoice["payer_currency"],
            "is_final": invoice["is_final"],
            "status": invoice["status"],
            "url": invoice["url"],
            "additional_data": None,
            **(changes or {}),
        }
        record["sign"] = webhook_sign(record, self.api_key)
        return {"content-type": "application/json"}, php_json(record)

    async def deliver_webhook(
        self, invoice_id: str, *, copies: int = 1, attempts: int = 5, pause: float = 0.0
    ) -> None:
        """POST the delivery ``copies`` times, each retried up to ``attempts`` times while
        the answer is not 2xx; every answer is recorded in ``webhook_results``."""
        target = self.webhook_url() if callable(self.webhook_url) else self.webhook_url
        if not target:
            return
        headers, body = self.webhook_delivery(invoice_id)
        async with httpx.AsyncClient(timeout=10.0, verify=shared_tls_context()) as client:
            for _ in range(copies):
                for _ in range(attempts):
                    try:
                        response = await client.post(target, headers=headers, content=body)
                    except httpx.HTTPError as exc:
                        self.webhook_results.append(repr(exc)[:200])
                    else:
                        self.webhook_results.append(response.status_code)
                        if response.is_success:
                            break
                    await trio.sleep(pause)

    # -- the API --------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/v1/payment", self._create, methods=["POST"]),
            Route("/v1/payment/info", self._info, methods=["POST"]),
            Route("/pay/{uuid}", self._page, methods=["GET", "POST"]),
        ]

    async def settle(self, invoice_id: str, action: str) -> None:
        """``"pay"`` (then the webhook delivery, when ``webhook_url`` is set) or
        ``"cancel"`` an open invoice; ``ValueError`` when it is final already."""
        if action == "pay":
            self.pay(invoice_id)
            await self.deliver_webhook(invoice_id)
        elif action == "cancel":
            if self.invoices[invoice_id]["is_final"]:
                raise ValueError(f"invoice {invoice_id} is final already")
            self.set_status(invoice_id, "cancel")
        else:
            raise KeyError(action)

    async def _page(self, request: Request) -> Response:
        invoice = self.invoices.get(request.path_params["uuid"])
        if invoice is None:
            return _page(None, "No such invoice.", status_code=404)
        if request.method == "GET":
            return _page(invoice, "")
        form = dict(parse_qsl((await request.body())[:1024].decode("utf-8", "replace")))
        action = form.get("action", "")
        if action not in _PAGE_ACTIONS:
            return _page(invoice, "Unknown action.", status_code=400)
        if invoice["is_final"]:
            return _page(invoice, f"This invoice is {invoice['status']}.", status_code=409)
        await self.settle(invoice["uuid"], action)
        return _page(invoice, _PAGE_ACTIONS[action])

    async def _params(self, request: Request) -> dict[str, Any] | Response:
        body = await request.body()
        if request.headers.get("merchant") != self.merchant or request.headers.get(
            "sign"
        ) != sign_bytes(body, self.api_key):
            return _error(401, "Unauthorized")
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return _error(422, "Invalid JSON")
        return params if isinstance(params, dict) else _error(422, "Invalid JSON")

    async def _create(self, request: Request) -> Response:
        params = await self._params(request)
        if isinstance(params, Response):
            return params
        order_id, currency = params.get("order_id"), params.get("currency")
        if not isinstance(order_id, str) or not 1 <= len(order_id) <= 128:
            return _error(422, "The order id field is required.")
        if not isinstance(currency, str) or not currency:
            return _error(422, "The currency field is required.")
        try:
            amount = Decimal(str(params.get("amount")))
        except InvalidOperation:
            return _error(422, "The amount must be a number.")
        if not amount.is_finite() or amount <= 0:
            return _error(422, "The amount must be greater than 0.")
        lifetime = params.get("lifetime", 3600)
        if not isinstance(lifetime, int) or not 300 <= lifetime <= 43_200:
            return _error(422, "The lifetime must be between 300 and 43200.")
        for invoice in self.invoices.values():
            if invoice["order_id"] == order_id and not invoice["is_final"]:
                return JSONResponse({"state": 0, "result": invoice})
        invoice_id = str(uuidlib.uuid4())
        invoice = {
            "uuid": invoice_id,
            "order_id": order_id,
            "amount": str(params["amount"]),
            "payment_amount": None,
            "payer_amount": None,
            "payer_currency": None,
            "merchant_amount": None,
            "currency": currency,
            "url": f"{(self.page_base_url or 'https://pay.heleket.com').rstrip('/')}"
            f"/pay/{invoice_id}",
            "expired_at": 1_900_000_000,
            "status": "check",
            "payment_status": "check",
            "is_final": False,
            "url_callback": params.get("url_callback"),
        }
        self.invoices[invoice_id] = invoice
        self._touch()
        return JSONResponse({"state": 0, "result": invoice})

    async def _info(self, request: Request) -> Response:
        params = await self._params(request)
        if isinstance(params, Response):
            return params
        invoice = self.invoices.get(str(params.get("uuid")))
        if invoice is None and params.get("order_id") is not None:
            invoice = next(
                (i for i in self.invoices.values() if i["order_id"] == params["order_id"]), None
            )
        if invoice is None:
            return _error(404, "Payment not found")
        return JSONResponse({"state": 0, "result": invoice})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"state": 1, "message": message}, status_code=status)


_PAGE_ACTIONS = {
    "pay": "Paid. You can go back to the chat.",
    "cancel": "The invoice was cancelled.",
}


def _page(invoice: Mapping[str, Any] | None, notice: str, *, status_code: int = 200) -> Response:
    parts = [
        f'<p role="status">{escape(notice)}</p>' if notice else "",
        "<h1>Heleket (sandbox)</h1>",
    ]
    if invoice is not None:
        rows = [
            ("Invoice", invoice["uuid"]),
            ("Amount", f"{invoice['amount']} {invoice['currency']}"),
            ("Status", invoice["status"]),
        ]
        parts.append("<dl>")
        parts += [
            f"<dt>{escape(k)}</dt><dd id={k.lower()!r}>{escape(str(v))}</dd>" for k, v in rows
        ]
        parts.append("</dl>")
        if not invoice["is_final"]:
            parts.append(
                '<form method="post"><button name="action" value="pay">Pay</button>'
                '<button name="action" value="cancel">Cancel</button></form>'
            )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Heleket (sandbox)</title></head><body>{''.join(parts)}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code)
