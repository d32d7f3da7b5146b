"""A fake Crypto Pay API (CryptoBot): invoices in memory, signed webhook deliveries.

Modelled on the public Crypto Pay documentation:

- methods under ``/api/<method>`` (``createInvoice``, ``getInvoices``, ``deleteInvoice``,
  ``getMe``), parameters from the query string, a JSON body or a form body;
- the ``Crypto-Pay-API-Token`` header on every call, else HTTP 401 ``UNAUTHORIZED``; an
  unknown method is HTTP 405 ``METHOD_NOT_FOUND``;
- the envelope ``{"ok": true, "result": ...}`` / ``{"ok": false, "error": {"code", "name"}}``
  with the error's code as the HTTP status. ``EXPIRES_IN_INVALID`` and
  ``INVOICE_NOT_FOUND`` are names the SDKs know; the other parameter errors
  (``AMOUNT_INVALID``, ``ASSET_INVALID``...) are modelled, not copied from the peer;
- invoices ``active`` -> ``paid`` | ``expired``, only by the test (``pay``, ``expire``):
  time does not expire them;
- ``getInvoices`` with ``invoice_ids`` (comma-separated), ``status``, ``asset``, ``fiat``,
  ``offset`` and ``count`` (1-1000, else 400), newest first;
- webhook deliveries (``webhook_delivery``) as Crypto Pay sends them: compact JSON bytes,
  ``crypto-pay-api-signature`` = hex HMAC-SHA-256 of the body keyed with SHA-256(token),
  and an ``update_id`` that is *not unique* (it cycles through 1-3, as the documentation
  warns it may repeat).

Beyond the API, for a person trying the product (the sandbox): with ``page_base_url`` set
(the fake's own base URL), invoices' ``bot_invoice_url``, ``mini_app_invoice_url`` and
``web_app_invoice_url`` lead to a payment page the fake serves (``payment_page``), where
the invoice can be paid or left to expire; ``POST /_control/invoices/<id>/pay`` and
``.../expire`` do the same for a script. Paying there is ``pay`` and, with ``webhook_url``
set, the signed ``invoice_paid`` delivery POSTed to it.

Not modelled: checks, transfers, balances, exchange rates, swaps, rate limits (use
``rate_limit_next``), and webhook retries.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.logs import get_logger
from runtime.plugin_api.peer import shared_tls_context

from ._base import FakePeer
from ._payment_page import PAGE_ACTIONS, invoice_page

TOKEN_HEADER = "Crypto-Pay-API-Token"
SIGNATURE_HEADER = "crypto-pay-api-signature"

ASSETS = ("USDT", "TON", "BTC", "ETH", "LTC", "BNB", "TRX", "USDC", "SOL", "DOGE", "NOT", "JET")
FIATS = (
    "USD", "EUR", "RUB", "BYN", "UAH", "GBP", "CNY", "KZT", "UZS", "GEL",
    "TRY", "AMD", "THB", "INR", "BRL", "IDR", "AZN", "AED", "PLN", "ILS",
)  # fmt: skip
MAX_EXPIRES_IN = 2_678_400
KEEP_INVOICES = 1000
"""Invoices a ``snapshot`` keeps, the newest."""

_log = get_logger("fake_cryptobot")


class CryptoPayError(Exception):
    def __init__(self, code: int, name: str) -> None:
        super().__init__(f"{code} {name}")
        self.code = code
        self.name = name


def iso(moment: datetime) -> str:
    """Crypto Pay's timestamp format: ISO 8601, UTC, milliseconds, ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def sign(token: str, body: bytes) -> str:
    key = hashlib.sha256(token.encode()).digest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


class FakeCryptoBot(FakePeer):
    name = "cryptobot"

    def __init__(
        self,
        token: str = "12345:AAFakeCryptoPayAppToken0000",
        *,
        testnet: bool = False,
        first_invoice_id: int = 1000,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.token = token
        self.testnet = testnet
        self.invoices: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(first_invoice_id)
        self._update_ids = itertools.cycle((1, 2, 3))
        self.page_base_url: str | None = None
        """The fake's base URL as a browser reaches it: set, invoices' URLs open the
        fake's payment page instead of Telegram's (which does not know them)."""
        self.webhook_url: str | Callable[[], str | None] | None = None
        """Where payments made on the page or the control routes are delivered (signed), or
        a callable giving it when it is known only later (a listener on port 0)."""
        self.webhook_results: list[int | str] = []
        """What each delivery got: the HTTP status, or the error."""
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": self._get_me,
            "createInvoice": self._create_invoice,
            "getInvoices": self._get_invoices,
            "deleteInvoice": self._delete_invoice,
        }

    # -- keeping the invoices across restarts (the sandbox) -------------------------------

    def snapshot(self, keep: int = KEEP_INVOICES) -> dict[str, Any]:
        """The newest ``keep`` invoices and the next invoice id, as JSON-ready data."""
        invoice_id, self._ids = _peek(self._ids)
        newest = sorted(self.invoices)[-keep:] if keep > 0 else []
        return {
            "version": 1,
            "next_invoice_id": invoice_id,
            "invoices": [self.invoices[i] for i in newest],
        }

    def restore(self, data: Any) -> None:
        """Take back a ``snapshot``; ``ValueError`` (and no change) when it is not one."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a fake CryptoBot snapshot of version 1")
        try:
            invoices = {int(i["invoice_id"]): dict(i) for i in data["invoices"]}
            next_id = int(data["next_invoice_id"])
            if any(not isinstance(i.get("hash"), str) for i in invoices.values()):
                raise ValueError("an invoice without a hash")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a readable fake CryptoBot snapshot: {exc!r}") from exc
        self.invoices = invoices
        self._ids = itertools.count(max(next_id, max(invoices, default=0) + 1))
        self._touch()

    @property
    def bot_username(self) -> str:
        return "CryptoTestnetBot" if self.testnet else "CryptoBot"

    # -- driving it from a test -------------------------------------------------------

    def pay(
        self,
        invoice_id: int | str,
        *,
        paid_asset: str | None = None,
        paid_amount: str | None = None,
        comment: str | None = None,
        paid_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The user pays an active invoice; returns the invoice as it now is."""
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "active":
            raise ValueError(f"invoice {invoice_id} is {invoice['status']}, not active")
        invoice["status"] = "paid"
        invoice["paid_at"] = iso(paid_at or datetime.now(UTC))
        invoice["paid_anonymously"] = False
        if invoice["currency_type"] == "fiat":
            asset = paid_asset or (invoice.get("accepted_assets") or ["USDT"])[0]
            invoice["paid_asset"] = asset
            invoice["paid_amount"] = paid_amount or invoice["amount"]
            invoice["paid_fiat_rate"] = "1"
            invoice["fee_asset"] = asset
        else:
            invoice["paid_amount"] = paid_amount or invoice["amount"]
            invoice["fee_asset"] = invoice["asset"]
        invoice["fee_amount"] = "0"
        invoice["paid_usd_rate"] = "1"
        if comment is not None:
            invoice["comment"] = comment
        self._touch()
        return dict(invoice)

    def expire(self, invoice_id: int | str) -> None:
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "active":
            raise ValueError(f"invoice {invoice_id} is {invoice['status']}, not active")
        invoice["status"] = "expired"
        self._touch()

    def add_invoice(self, **params: Any) -> dict[str, Any]:
        """Create an invoice as ``createInvoice`` would, without an HTTP call (bulk setup)."""
        return self._create_invoice(params)

    def invoice_for(self, payload: str) -> dict[str, Any]:
        """The newest invoice created with ``payload``."""
        for invoice in sorted(self.invoices.values(), key=lambda i: -i["invoice_id"]):
            if invoice.get("payload") == payload:
                return invoice
        raise KeyError(payload)

    def webhook_delivery(
        self,
        invoice_id: int | str,
        *,
        update_id: int | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The ``invoice_paid`` delivery Crypto Pay sends for a paid invoice. ``changes``
        alter the invoice in it, still signed: a peer reporting other values (another
        amount or currency, an unreadable amount) than the invoice was made with."""
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "paid":
            raise ValueError(f"invoice {invoice_id} is not paid")
        return self.update_delivery(
            {
                "update_id": next(self._update_ids) if update_id is None else update_id,
                "update_type": "invoice_paid",
                "request_date": iso(datetime.now(UTC)),
                "payload": {**invoice, **(changes or {})},
            }
        )

    def update_delivery(self, update: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
        """Any update, serialised and signed as Crypto Pay does: (headers, raw body)."""
        body = json.dumps(update, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self.token, body)}
        return headers, body

    # -- the API ----------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/{method}", self._dispatch, methods=["GET", "POST"]),
            Route("/pay/{hash}", self._payment_page, methods=["GET", "POST"]),
            Route("/_control/invoices/{invoice_id}/{action}", self._control, methods=["POST"]),
        ]

    # -- paying as a person would -------------------------------------------------------

    async def settle(self, invoice_id: int | str, action: str) -> dict[str, Any]:
        """``action`` ``"pay"`` (``pay``, then the webhook delivery when ``webhook_url`` is
        set) or ``"expire"`` an active invoice. ``ValueError`` when it is not active, and
        nothing changes; ``KeyError`` when there is no such invoice."""
        if action == "pay":
            paid = self.pay(invoice_id)
            await self.deliver_webhook(paid["invoice_id"])
            return paid
        if action == "expire":
            self.expire(invoice_id)
            return dict(self._invoice(invoice_id))
        raise KeyError(f"no action {action}")

    async def deliver_webhook(self, invoice_id: int | str) -> None:
        """POST the signed ``invoice_paid`` delivery to ``webhook_url``, if there is one;
        a failure is recorded in ``webhook_results`` and logged (getInvoices still has it)."""
        target = self.webhook_url() if callable(self.webhook_url) else self.webhook_url
        if not target:
            return
        headers, body = self.webhook_delivery(invoice_id)
        try:
            async with httpx.AsyncClient(timeout=10.0, verify=shared_tls_context()) as client:
                response = await client.post(target, headers=headers, content=body)
        except httpx.HTTPError as exc:
            self.webhook_results.append(repr(exc))
            _log.warning(
                "webhook delivery failed", invoice_id=str(invoice_id), error=repr(exc)[:200]
            )
            return
        self.webhook_results.append(response.status_code)

    def _by_hash(self, invoice_hash: str) -> dict[str, Any] | None:
        for invoice in self.invoices.values():
            if invoice["hash"] == invoice_hash:
                return invoice
        return None

    async def _payment_page(self, request: Request) -> Response:
        invoice = self._by_hash(request.path_params["hash"])
        if invoice is None:
            return invoice_page(None, status_code=404, notice="No such invoice.")
        if request.method == "GET":
            return invoice_page(invoice)
        raw = await request.body()
        form = dict(parse_qsl(raw[:1024].decode("utf-8", "replace")))
        action = form.get("action", "")
        if action not in PAGE_ACTIONS:
            return invoice_page(invoice, status_code=400, notice="Unknown action.")
        if invoice["status"] != "active":
            return invoice_page(
                invoice, status_code=409, notice=f"This invoice is {invoice['status']} already."
            )
        await self.settle(invoice["invoice_id"], action)
        return invoice_page(invoice, notice=PAGE_ACTIONS[action])

    async def _control(self, request: Request) -> Response:
        action = request.path_params["action"]
        try:
            invoice = self._invoice(request.path_params["invoice_id"])
        except KeyError:
            return JSONResponse({"ok": False, "error": "no such invoice"}, status_code=404)
        if action not in PAGE_ACTIONS:
            return JSONResponse({"ok": False, "error": "no such action"}, status_code=404)
        if invoice["status"] != "active":
            return JSONResponse(
                {"ok": False, "error": f"invoice is {invoice['status']}", "invoice": invoice},
                status_code=409,
            )
        return JSONResponse(
            {"ok": True, "invoice": await self.settle(invoice["invoice_id"], action)}
        )

    async def _dispatch(self, request: Request) -> Response:
        if request.headers.get(TOKEN_HEADER) != self.token:
            return _error(CryptoPayError(401, "UNAUTHORIZED"))
        handler = self._methods.get(request.path_params["method"])
        if handler is None:
            return _error(CryptoPayError(405, "METHOD_NOT_FOUND"))
        try:
            result = handler(await _params(request))
        except CryptoPayError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "result": result})

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "app_id": 1,
            "name": "fake app",
            "payment_processing_bot_username": self.bot_username,
        }

    def _create_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        currency_type = str(params.get("currency_type") or "crypto")
        invoice: dict[str, Any] = {"currency_type": currency_type}
        if currency_type == "crypto":
            asset = params.get("asset")
            if asset not in ASSETS:
                raise CryptoPayError(400, "ASSET_INVALID")
            invoice["asset"] = asset
        elif currency_type == "fiat":
            fiat = params.get("fiat")
            if fiat not in FIATS:
                raise CryptoPayError(400, "FIAT_INVALID")
            invoice["fiat"] = fiat
            accepted = _list(params.get("accepted_assets")) or list(ASSETS[:8])
            if any(asset not in ASSETS for asset in accepted):
                raise CryptoPayError(400, "ACCEPTED_ASSETS_INVALID")
            invoice["accepted_assets"] = accepted
        else:
            raise CryptoPayError(400, "CURRENCY_TYPE_INVALID")
        invoice["amount"] = _amount(params.get("amount"))
        description = params.get("description")
        if description is not None:
            if len(str(description)) > 1024:
                raise CryptoPayError(400, "DESCRIPTION_TOO_LONG")
            invoice["description"] = str(description)
        payload = params.get("payload")
        if payload is not None:
            if len(str(payload).encode()) > 4096:
                raise CryptoPayError(400, "PAYLOAD_TOO_LONG")
            invoice["payload"] = str(payload)
        now = datetime.now(UTC)
        expires_in = params.get("expires_in")
        if expires_in is not None:
            seconds = _int(expires_in, "EXPIRES_IN_INVALID")
            if not 1 <= seconds <= MAX_EXPIRES_IN:
                raise CryptoPayError(400, "EXPIRES_IN_INVALID")
            invoice["expiration_date"] = iso(now + timedelta(seconds=seconds))
        invoice_id = next(self._ids)
        invoice_hash = "IV" + secrets.token_hex(6).upper()
        invoice.update(
            invoice_id=invoice_id,
            hash=invoice_hash,
            status="active",
            **self._invoice_urls(invoice_hash),
            created_at=iso(now),
            allow_comments=_bool(params.get("allow_comments"), True),
            allow_anonymous=_bool(params.get("allow_anonymous"), True),
        )
        self.invoices[invoice_id] = invoice
        self._touch()
        return dict(invoice)

    def _invoice_urls(self, invoice_hash: str) -> dict[str, str]:
        if self.page_base_url:
            page = f"{self.page_base_url.rstrip('/')}/pay/{invoice_hash}"
            return {
                "bot_invoice_url": page,
                "mini_app_invoice_url": f"{page}?via=mini_app",
                "web_app_invoice_url": f"{page}?via=web_app",
            }
        host = "testnet-app.send.tg" if self.testnet else "app.send.tg"
        return {
            "bot_invoice_url": f"https://t.me/{self.bot_username}?start={invoice_hash}",
            "mini_app_invoice_url": (
                f"https://t.me/{self.bot_username}/app?startapp=invoice-{invoice_hash}"
            ),
            "web_app_invoice_url": f"https://{host}/invoices/{invoice_hash}",
        }

    def _get_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        count = _int(params.get("count", 100), "COUNT_INVALID")
        offset = _int(params.get("offset", 0), "OFFSET_INVALID")
        if not 1 <= count <= 1000:
            raise CryptoPayError(400, "COUNT_INVALID")
        if offset < 0:
            raise CryptoPayError(400, "OFFSET_INVALID")
        items = sorted(self.invoices.values(), key=lambda i: -i["invoice_id"])
        ids = _list(params.get("invoice_ids"))
        if ids:
            wanted = {_int(value, "INVOICE_IDS_INVALID") for value in ids}
            items = [i for i in items if i["invoice_id"] in wanted]
        status = params.get("status")
        if status:
            items = [i for i in items if i["status"] == status]
        for key in ("asset", "fiat"):
            codes = _list(params.get(key))
            if codes:
                items = [i for i in items if i.get(key) in codes]
        return {"items": [dict(i) for i in items[offset : offset + count]]}

    def _delete_invoice(self, params: dict[str, Any]) -> bool:
        invoice_id = _int(params.get("invoice_id"), "INVOICE_ID_INVALID")
        if self.invoices.pop(invoice_id, None) is None:
            raise CryptoPayError(400, "INVOICE_NOT_FOUND")
        self._touch()
        return True

    def _invoice(self, invoice_id: int | str) -> dict[str, Any]:
        try:
            return self.invoices[int(invoice_id)]
        except (KeyError, ValueError):
            raise KeyError(f"no invoice {invoice_id}") from None


def _peek(counter: itertools.count[int]) -> tuple[int, itertools.count[int]]:
    value = next(counter)
    return value, itertools.count(value)


def _error(exc: CryptoPayError) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": {"code": exc.code, "name": exc.name}}, status_code=exc.code
    )


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return params
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            raise CryptoPayError(400, "JSON_INVALID") from None
        if isinstance(data, dict):
            params.update(data)
    elif "x-www-form-urlencoded" in content_type:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    return params


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _int(value: Any, error: str) -> int:
    if isinstance(value, bool):
        raise CryptoPayError(400, error)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CryptoPayError(400, error) from None


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1")


def _amount(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise CryptoPayError(400, "AMOUNT_INVALID")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise CryptoPayError(400, "AMOUNT_INVALID") from None
    if not amount.is_finite() or amount <= 0:
        raise CryptoPayError(400, "AMOUNT_INVALID")
    return str(value)
