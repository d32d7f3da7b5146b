"""A fake of the Bot API payment methods: Star transactions, Star refunds, invoice links.

Modelled on the Bot API documentation and its server (tdlib/telegram-bot-api):

- ``/bot<token>/<method>``, method names case-insensitive, parameters from the query
  string, a JSON body or a form body (where ``prices`` is a JSON string);
- ``{"ok": true, "result": ...}`` / ``{"ok": false, "error_code": N, "description": ...}``
  with N as the HTTP status: a wrong token is 401 ``Unauthorized``, an unknown method 404
  ``Not Found``, a missing parameter 400 ``Bad Request: parameter "x" is required``;
- ``getStarTransactions(offset, limit)``: the bot's transactions oldest first (a bot's list
  is ascending), ``limit`` clamped to 1-100 and ``offset`` to >= 0 as the server does;
  a payment is an incoming transaction whose id is the charge id, its refund an outgoing
  one with the same id;
- ``refundStarPayment(user_id, telegram_payment_charge_id)``: ``True``; a second refund is
  400 ``Bad Request: CHARGE_ALREADY_REFUNDED`` (the description the real API gives); an
  unknown charge, or one of another user, 400 ``Bad Request: CHARGE_NOT_FOUND``;
- ``createInvoiceLink``: the invoice checks that matter for Stars (XTR needs exactly one
  price and no provider token, else ``STARS_INVOICE_INVALID``; other currencies need a
  provider token, else ``PAYMENT_PROVIDER_INVALID``; ``CURRENCY_TOTAL_AMOUNT_INVALID``;
  ``INVOICE_PAYLOAD_INVALID`` past 128 bytes) and the documented lengths (title 1-32,
  description 1-255 characters; the descriptions of those two errors are modelled).

Not modelled: updates, messages and ``sendInvoice`` (a fuller Telegram emulator does
that), subscriptions, paid media, nanostar amounts, rate limits (use
``rate_limit_next``).
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._base import FakePeer

STARS = "XTR"


class BotApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _bad_request(reason: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {reason}")


@dataclass
class StarPayment:
    charge_id: str
    user_id: int
    amount: int
    payload: str
    date: int
    refunded: bool = False


class FakeBotApiPayments(FakePeer):
    name = "telegram"

    def __init__(
        self,
        token: str = "123456789:AAFakeBotTokenForPaymentTests0000000",
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.token = token
        self.transactions: list[dict[str, Any]] = []
        """Oldest first, as getStarTransactions lists them for a bot."""
        self.payments: dict[str, StarPayment] = {}
        self.invoice_links: list[dict[str, Any]] = []
        self._charge_numbers = itertools.count(1)
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getstartransactions": self._get_star_transactions,
            "refundstarpayment": self._refund_star_payment,
            "createinvoicelink": self._create_invoice_link,
        }

    # -- driving it from a test -------------------------------------------------------

    def pay_stars(
        self,
        user_id: int,
        payload: str,
        amount: int,
        *,
        charge_id: str | None = None,
        date: int | None = None,
    ) -> dict[str, Any]:
        """A user pays a Stars invoice: the transaction is recorded and the
        ``successful_payment`` object the bot receives is returned."""
        charge_id = charge_id or self._new_charge_id()
        payment = StarPayment(charge_id, user_id, amount, payload, date or int(time.time()))
        self.payments[charge_id] = payment
        self.transactions.append(
            {
                "id": charge_id,
                "amount": amount,
                "date": payment.date,
                "source": self._partner(payment),
            }
        )
        return {
            "currency": STARS,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }

    def card_payment(self, payload: str, amount: int, currency: str) -> dict[str, Any]:
        """The ``successful_payment`` of a card payment (no Star transaction)."""
        number = next(self._charge_numbers)
        return {
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": f"{int(time.time())}_{number}_card",
            "provider_payment_charge_id": f"prov_{secrets.token_hex(8)}",
        }

    def add_history(self, count: int, *, date: int | None = None) -> None:
        """``count`` unrelated old transactions (paid media sales), for paging tests."""
        when = date if date is not None else int(time.time()) - 30 * 86400
        for _ in range(count):
            self.transactions.append(
                {
                    "id": self._new_charge_id(),
                    "amount": 1,
                    "date": when,
                    "source": {
                        "type": "user",
                        "transaction_type": "paid_media_payment",
                        "user": _user(1),
                        "paid_media": [],
                    },
                }
            )

    def _new_charge_id(self) -> str:
        return f"stxFake{next(self._charge_numbers):08d}{secrets.token_hex(4)}"

    @staticmethod
    def _partner(payment: StarPayment) -> dict[str, Any]:
        return {
            "type": "user",
            "transaction_type": "invoice_payment",
            "user": _user(payment.user_id),
            "invoice_payload": payment.payload,
        }

    # -- the API ----------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/bot{token}/{method}", self._dispatch, methods=["GET", "POST"])]

    async def _dispatch(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(BotApiError(401, "Unauthorized"))
        handler = self._methods.get(request.path_params["method"].lower())
        if handler is None:
            return _error(BotApiError(404, "Not Found"))
        try:
            result = handler(await _params(request))
        except BotApiError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "result": result})

    def _get_star_transactions(self, params: dict[str, Any]) -> dict[str, Any]:
        offset = max(0, _int(params.get("offset"), 0))
        limit = min(100, max(1, _int(params.get("limit"), 100)))
        return {"transactions": [dict(t) for t in self.transactions[offset : offset + limit]]}

    def _refund_star_payment(self, params: dict[str, Any]) -> bool:
        user_id = _int(params.get("user_id"), 0)
        if user_id <= 0:
            raise _bad_request("invalid user_id specified")
        charge_id = _required(params, "telegram_payment_charge_id")
        payment = self.payments.get(charge_id)
        if payment is None or payment.user_id != user_id:
            raise _bad_request("CHARGE_NOT_FOUND")
        if payment.refunded:
            raise _bad_request("CHARGE_ALREADY_REFUNDED")
        payment.refunded = True
        self.transactions.append(
            {
                "id": charge_id,
                "amount": payment.amount,
                "date": int(time.time()),
                "receiver": self._partner(payment),
            }
        )
        return True

    def _create_invoice_link(self, params: dict[str, Any]) -> str:
        title = _required(params, "title")
        description = _required(params, "description")
        payload = _required(params, "payload")
        currency = _required(params, "currency")
        prices = _prices(params.get("prices"))
        provider_token = str(params.get("provider_token") or "")
        if not 1 <= len(title) <= 32:
            raise _bad_request("TITLE_INVALID")
        if not 1 <= len(description) <= 255:
            raise _bad_request("DESCRIPTION_INVALID")
        if len(payload.encode()) > 128:
            raise _bad_request("INVOICE_PAYLOAD_INVALID")
        if currency == STARS:
            if len(prices) != 1 or provider_token:
                raise _bad_request("STARS_INVOICE_INVALID")
        elif not provider_token:
            raise _bad_request("PAYMENT_PROVIDER_INVALID")
        if sum(price["amount"] for price in prices) <= 0:
            raise _bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
        link = f"https://t.me/$fake{secrets.token_urlsafe(12)}"
        self.invoice_links.append(
            {
                "link": link,
                "title": title,
                "description": description,
                "payload": payload,
                "currency": currency,
                "prices": prices,
                "provider_token": provider_token,
            }
        )
        return link


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}


def _error(exc: BotApiError) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error_code": exc.code, "description": exc.description},
        status_code=exc.code,
    )


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if body and "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            raise _bad_request("can't parse JSON encoded request body") from None
        if isinstance(data, dict):
            params.update(data)
    elif body and "x-www-form-urlencoded" in content_type:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    return params


def _required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise _bad_request(f'parameter "{name}" is required')
    return str(value)


def _int(value: Any, default: int) -> int:
    if value is None or value == "" or isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _prices(value: Any) -> list[dict[str, Any]]:
    if value is None or value == "":
        raise _bad_request('parameter "prices" is required')
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad_request("can't parse prices JSON object") from None
    if not isinstance(value, list):
        raise _bad_request("expected an Array of labeled prices")
    prices = []
    for price in value:
        label = price.get("label") if isinstance(price, dict) else None
        amount = price.get("amount") if isinstance(price, dict) else None
        if not isinstance(label, str) or not label:
            raise _bad_request("can't parse labeled price: LabeledPrice label must be non-empty")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise _bad_request('can\'t parse labeled price: field "amount" must be a Number')
        prices.append({"label": label, "amount": amount})
    if not prices:
        raise _bad_request("there must be at least one price")
    return prices
