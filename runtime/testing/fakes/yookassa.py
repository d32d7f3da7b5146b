"""A fake YooKassa API v3: payments and refunds in memory, unsigned notifications.

Modelled on YooKassa's public API reference and its SDKs (``yookassa-sdk-python``):

- ``POST /v3/payments``, ``GET /v3/payments/{id}``, ``POST /v3/refunds``,
  ``GET /v3/refunds/{id}``, JSON bodies;
- HTTP Basic auth ``shopId:secretKey`` on every call, else 401 ``invalid_credentials``;
- an ``Idempotence-Key`` header (1-64 characters) required on every POST, else 400
  ``invalid_request``. The same key with the same body answers what the first request
  got (the same payment, never a second); the same key with another body is refused
  with 400 ``invalid_request`` (the documented rule that a key is for one request; the
  exact description text is modelled, not copied);
- errors ``{"type": "error", "id", "code", "description", "parameter"}``;
- payments ``pending`` -> ``succeeded`` | ``canceled`` (``capture: true``; without it
  ``pending`` -> ``waiting_for_capture``), moved only by the test (``pay``, ``cancel``);
- a redirect confirmation's ``confirmation_url`` leads to the fake's payment page when
  ``page_base_url`` is set (the sandbox), else to a YooKassa-like checkout URL;
- refunds of a ``succeeded`` payment, whole or in parts, never more than was paid;
- saved methods (autopayments): ``save_payment_method: true`` on a redirect payment saves
  the method it is paid with when that method type allows it (``SAVABLE``): the paid
  payment's ``payment_method`` gets ``saved: true``, a stable ``id`` of its own, a
  ``title`` (``"Bank card *4444"``) and the card's ``last4``; other types are paid but
  not saved (``saved: false``). A payment with ``payment_method_id`` (of a saved method,
  else 400) needs no confirmation and is decided at once: ``succeeded``, or as the test
  scripted it (``script_charge``: canceled with a reason such as ``insufficient_funds``,
  pending, or another amount reported); a method the user revoked (``revoke_method``)
  is canceled with ``cancellation_details {party: yoo_money, reason:
  permission_revoked}``. Idempotence by key holds for charges as for any POST;
- notifications (``notification``): the payment object as the API shows it, unsigned,
  with the caller address a reverse proxy would add (``x-real-ip``, one of YooKassa's
  networks); ``notify`` POSTs one to ``webhook_url`` and, like YooKassa, sends it again
  while the answer is not 200 (here: up to ``attempts`` times, at once).

Not modelled: captures and cancellations through the API, receipts' content checks, the
payment-methods API (saving without a payment), payouts, time-based expiry of pending
payments.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.plugin_api.peer import shared_tls_context

from ._base import FakePeer

NOTIFIER_ADDRESS = "185.71.76.10"
"""Where the fake's notifications say they come from: inside YooKassa's networks."""
IP_HEADER = "x-real-ip"

SAVABLE = frozenset({"bank_card", "yoo_money", "sberbank", "tinkoff_bank", "sbp"})
"""Method types YooKassa can save for autopayments."""
_TITLES = {"bank_card": "Bank card", "yoo_money": "YooMoney", "sbp": "SBP"}

_CURRENCIES = ("RUB", "USD", "EUR", "BYN", "KZT", "UAH", "UZS", "TRY", "INR", "MDL", "AZN")


def basic_auth(shop_id: str, secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{shop_id}:{secret_key}".encode()).decode()


class YooKassaError(Exception):
    def __init__(self, status: int, code: str, description: str, parameter: str = "") -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.parameter = parameter


def iso(moment: datetime) -> str:
    """YooKassa's timestamps: ISO 8601, UTC, milliseconds, ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class FakeYooKassa(FakePeer):
    name = "yookassa"

    def __init__(self, shop_id: str = "123456", secret_key: str = "test_FakeSecretKey0000") -> None:
        super().__init__()
        self.shop_id = shop_id
        self.secret_key = secret_key
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self._idempotence: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = {}
        self._serial = itertools.count(1)
        self.page_base_url: str | None = None
        self.webhook_url: str | Callable[[], str | None] | None = None
        self.webhook_results: list[int | str] = []
        self.methods: dict[str, dict[str, Any]] = {}
        """Saved methods by id; ``_revoked`` set when the user withdrew the permission."""
        self.charge_script: list[dict[str, Any]] = []
        """How the next charges of saved methods end (``script_charge``), first first."""

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/v3/payments", self._create_payment, methods=["POST"]),
            Route("/v3/payments/{payment_id}", self._get_payment, methods=["GET"]),
            Route("/v3/refunds", self._create_refund, methods=["POST"]),
            Route("/v3/refunds/{refund_id}", self._get_refund, methods=["GET"]),
            Route("/checkout/{payment_id}", self._page, methods=["GET", "POST"]),
        ]

    # -- driving it from a test ----------------------------------------------------------

    def pay(
        self,
        payment_id: str,
        *,
        value: str | None = None,
        currency: str | None = None,
        method_type: str = "bank_card",
        last4: str = "4444",
    ) -> dict[str, Any]:
        """The user pays a pending payment (with a ``method_type`` method; a card ends in
        ``last4``). ``value``/``currency`` make the peer report another amount than was
        asked (a tampered or misconfigured payment). A payment created with
        ``save_payment_method: true`` saves the method when its type allows it."""
        payment = self._payment(payment_id)
        if payment["status"] != "pending":
            raise ValueError(f"payment {payment_id} is {payment['status']}, not pending")
        if value is not None:
            payment["amount"]["value"] = value
        if currency is not None:
            payment["amount"]["currency"] = currency
        if "_method_id" in payment:  # a pending charge of a saved method
            self._succeed(payment)
            self._touch()
            return self._public(payment)
        method: dict[str, Any] = {
            "type": method_type,
            "id": f"{next(self._serial):08x}-000f-5000-9000-{secrets.token_hex(6)}",
            "saved": bool(payment.get("_save")) and method_type in SAVABLE,
            "title": _TITLES.get(method_type, method_type),
        }
        if method_type == "bank_card":
            method["title"] = f"Bank card *{last4}"
            method["card"] = {
                "first6": "555555",
                "last4": last4,
                "expiry_month": "12",
                "expiry_year": "2030",
                "card_type": "MasterCard",
            }
        if method["saved"]:
            self.methods[method["id"]] = dict(method)
        self._succeed(payment, method)
        payment.pop("confirmation", None)
        self._touch()
        return self._public(payment)

    def script_charge(
        self, status: str = "canceled", *, reason: str = "insufficient_funds", value: str = ""
    ) -> None:
        """How the next charge of a saved method ends: ``canceled`` with ``reason``,
        ``pending`` (decided later by ``pay`` or ``cancel``), or ``succeeded`` reporting
        another amount ``value``."""
        self.charge_script.append({"status": status, "reason": reason, "value": value})

    def revoke_method(self, method_id: str) -> None:
        """The user withdrew the permission for autopayments: charges are canceled."""
        self.methods[method_id]["_revoked"] = True

    def _succeed(self, payment: dict[str, Any], method: dict[str, Any] | None = None) -> None:
        payment["paid"] = True
        payment["refundable"] = True
        if method is not None:
            payment["payment_method"] = {k: v for k, v in method.items() if k != "_revoked"}
        if payment.get("capture", True):
            payment["status"] = "succeeded"
            payment["captured_at"] = iso(datetime.now(UTC))
            payment["income_amount"] = dict(payment["amount"])
        else:
            payment["status"] = "waiting_for_capture"

    def cancel(
        self, payment_id: str, *, reason: str = "expired_on_confirmation", party: str = "yoo_money"
    ) -> dict[str, Any]:
        payment = self._payment(payment_id)
        if payment["status"] not in ("pending", "waiting_for_capture"):
            raise ValueError(f"payment {payment_id} is {payment['status']}")
        payment["status"] = "canceled"
        payment["cancellation_details"] = {"party": party, "reason": reason}
        self._touch()
        return self._public(payment)

    def payment_for(self, intent_id: str) -> dict[str, Any]:
        """The newest payment whose ``metadata.intent_id`` is ``intent_id``."""
        for payment in reversed(self.payments.values()):
            if payment.get("metadata", {}).get("intent_id") == intent_id:
                return payment
        raise KeyError(f"no payment for intent {intent_id}")

    def notification(
        self,
        payment_id: str,
        event: str = "payment.succeeded",
        *,
        changes: dict[str, Any] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The notification YooKassa would send now: unsigned JSON of the payment object
        (``changes`` alter the object in the body only, as a forger would)."""
        obj = {**self._public(self._payment(payment_id)), **(changes or {})}
        body = json.dumps({"type": "notification", "event": event, "object": obj}).encode()
        return {"content-type": "application/json", IP_HEADER: NOTIFIER_ADDRESS}, body

    async def notify(
        self, payment_id: str, event: str = "payment.succeeded", *, attempts: int = 3
    ) -> int | str:
        """POST the notification to ``webhook_url``, again while it is not answered 200."""
        target = self.webhook_url() if callable(self.webhook_url) else self.webhook_url
        if not target:
            raise ValueError("no webhook_url to notify")
        headers, body = self.notification(payment_id, event)
        result: int | str = "not sent"
        for _ in range(max(1, attempts)):
            try:
                async with httpx.AsyncClient(timeout=10.0, verify=shared_tls_context()) as client:
                    result = (await client.post(target, headers=headers, content=body)).status_code
            except httpx.HTTPError as exc:
                result = repr(exc)
            self.webhook_results.append(result)
            if result == 200:
                break
        return result

    # -- the API -------------------------------------------------------------------------

    async def _create_payment(self, request: Request) -> Response:
        return await self._post(request, self._new_payment)

    async def _create_refund(self, request: Request) -> Response:
        return await self._post(request, self._new_refund)

    async def _get_payment(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(YooKassaError(401, "invalid_credentials", "Login or password is wrong"))
        payment = self.payments.get(request.path_params["payment_id"])
        if payment is None:
            return _error(YooKassaError(404, "not_found", "Payment doesn't exist", "payment_id"))
        return JSONResponse(self._public(payment))

    async def _get_refund(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(YooKassaError(401, "invalid_credentials", "Login or password is wrong"))
        refund = self.refunds.get(request.path_params["refund_id"])
        if refund is None:
            return _error(YooKassaError(404, "not_found", "Refund doesn't exist", "refund_id"))
        return JSONResponse(refund)

    async def _post(
        self, request: Request, make: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Response:
        if not self._authorized(request):
            return _error(YooKassaError(401, "invalid_credentials", "Login or password is wrong"))
        key = request.headers.get("idempotence-key", "")
        if not 1 <= len(key) <= 64:
            return _error(
                YooKassaError(
                    400, "invalid_request", "Idempotence-Key is required", "Idempotence-Key"
                )
            )
        raw = await request.body()
        digest = hashlib.sha256(raw).hexdigest()
        seen = self._idempotence.get((request.url.path, key))
        if seen is not None:
            first_digest, status, answer = seen
            if first_digest != digest:
                return _error(
                    YooKassaError(
                        400,
                        "invalid_request",
                        "Idempotence key duplicated: another request",
                        "Idempotence-Key",
                    )
                )
            return JSONResponse(answer, status_code=status)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise YooKassaError(400, "invalid_request", "Body is not an object")
            answer = make(body)
            status = 200
        except ValueError:
            return _error(YooKassaError(400, "invalid_request", "Body is not JSON"))
        except YooKassaError as exc:
            return _error(exc)  # not remembered: the request can be fixed and sent again
        self._idempotence[(request.url.path, key)] = (digest, status, answer)
        return JSONResponse(answer, status_code=status)

    def _new_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(body.get("amount"))
        confirmation = body.get("confirmation")
        save = body.get("save_payment_method", False)
        if not isinstance(save, bool):
            raise YooKassaError(
                400, "invalid_request", "save_payment_method is a boolean", "save_payment_method"
            )
        method_id = body.get("payment_method_id")
        if method_id is not None:
            if confirmation is not None or save:
                raise YooKassaError(
                    400,
                    "invalid_request",
                    "A saved method is charged without confirmation or saving",
                    "payment_method_id",
                )
            method = self.methods.get(method_id) if isinstance(method_id, str) else None
            if method is None:
                raise YooKassaError(
                    400, "invalid_request", "Payment method is not saved", "payment_method_id"
                )
        elif not isinstance(confirmation, dict) or confirmation.get("type") != "redirect":
            raise YooKassaError(
                400, "invalid_request", "Only redirect confirmation is modelled", "confirmation"
            )
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 128:
            raise YooKassaError(400, "invalid_request", "Description is too long", "description")
        metadata = body.get("metadata", {})
        if (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(
                not isinstance(v, str) or len(k) > 32 or len(v) > 512 for k, v in metadata.items()
            )
        ):
            raise YooKassaError(400, "invalid_request", "Metadata is invalid", "metadata")
        payment_id = f"{next(self._serial):08x}-000f-5000-8000-{secrets.token_hex(6)}"
        if method_id is not None:
            return self._charge(payment_id, self.methods[method_id], amount, body)
        page = (
            f"{self.page_base_url.rstrip('/')}/checkout/{payment_id}"
            if self.page_base_url
            else f"https://yoomoney.ru/checkout/payments/v2/contract?orderId={payment_id}"
        )
        payment: dict[str, Any] = {
            "id": payment_id,
            "status": "pending",
            "paid": False,
            "amount": amount,
            "confirmation": {
                "type": "redirect",
                "return_url": str((confirmation or {}).get("return_url", "")),
                "confirmation_url": page,
            },
            "created_at": iso(datetime.now(UTC)),
            "description": description,
            "metadata": dict(metadata),
            "recipient": {"account_id": self.shop_id, "gateway_id": "100500"},
            "refundable": False,
            "test": True,
            "capture": body.get("capture", False) is True,
        }
        if save:
            payment["_save"] = True
        if "receipt" in body:
            payment["receipt_registration"] = "pending"
            payment["_receipt"] = body["receipt"]
        self.payments[payment_id] = payment
        self._touch()
        return self._public(payment)

    def _charge(
        self,
        payment_id: str,
        method: dict[str, Any],
        amount: dict[str, str],
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """A payment of a saved method: decided at once (or left pending, as scripted)."""
        script = self.charge_script.pop(0) if self.charge_script else {"status": "succeeded"}
        payment: dict[str, Any] = {
            "id": payment_id,
            "status": "pending",
            "paid": False,
            "amount": amount,
            "created_at": iso(datetime.now(UTC)),
            "description": body.get("description", ""),
            "metadata": dict(body.get("metadata", {})),
            "recipient": {"account_id": self.shop_id, "gateway_id": "100500"},
            "refundable": False,
            "test": True,
            "capture": body.get("capture", False) is True,
            "payment_method": {k: v for k, v in method.items() if k != "_revoked"},
            "_method_id": method["id"],
        }
        self.payments[payment_id] = payment
        if method.get("_revoked"):
            payment["status"] = "canceled"
            payment["cancellation_details"] = {"party": "yoo_money", "reason": "permission_revoked"}
        elif script["status"] == "canceled":
            payment["status"] = "canceled"
            payment["cancellation_details"] = {
                "party": "payment_network",
                "reason": script["reason"],
            }
        elif script["status"] == "succeeded":
            if script.get("value"):
                amount["value"] = script["value"]
            self._succeed(payment)
        self._touch()
        return self._public(payment)

    def _new_refund(self, body: dict[str, Any]) -> dict[str, Any]:
        payment = self.payments.get(str(body.get("payment_id")))
        if payment is None:
            raise YooKassaError(400, "invalid_request", "Payment doesn't exist", "payment_id")
        if payment["status"] != "succeeded":
            raise YooKassaError(400, "invalid_request", "Payment is not succeeded", "payment_id")
        amount = _amount(body.get("amount"))
        if amount["currency"] != payment["amount"]["currency"]:
            raise YooKassaError(
                400, "invalid_request", "Currency differs from the payment's", "amount"
            )
        refunded = Decimal(payment.get("refunded_amount", {}).get("value", "0"))
        left = Decimal(payment["amount"]["value"]) - refunded
        if Decimal(amount["value"]) > left:
            raise YooKassaError(
                400, "invalid_request", "Refund amount exceeds the payment's", "amount"
            )
        total = refunded + Decimal(amount["value"])
        payment["refunded_amount"] = {"value": f"{total:.2f}", "currency": amount["currency"]}
        payment["refundable"] = total < Decimal(payment["amount"]["value"])
        refund = {
            "id": f"{next(self._serial):08x}-0015-5000-9000-{secrets.token_hex(6)}",
            "payment_id": payment["id"],
            "status": "succeeded",
            "created_at": iso(datetime.now(UTC)),
            "amount": amount,
        }
        self.refunds[refund["id"]] = refund
        self._touch()
        return dict(refund)

    async def _page(self, request: Request) -> Response:
        """The sandbox's checkout page: pay the payment or cancel it."""
        payment = self.payments.get(request.path_params["payment_id"])
        if payment is None:
            return HTMLResponse("<h1>YooKassa</h1><p>No such payment.</p>", status_code=404)
        notice = ""
        if request.method == "POST":
            form = dict(parse_qsl((await request.body())[:1024].decode("utf-8", "replace")))
            action = form.get("action", "")
            if action not in ("pay", "cancel") or payment["status"] != "pending":
                return HTMLResponse("<p>Not possible now.</p>", status_code=409)
            (self.pay if action == "pay" else self.cancel)(payment["id"])
            if self.webhook_url:
                event = "payment.succeeded" if action == "pay" else "payment.canceled"
                await self.notify(payment["id"], event)
            notice = "Paid. You can go back to the chat." if action == "pay" else "Canceled."
        amount = payment["amount"]
        form_html = (
            '<form method="post"><button name="action" value="pay">Pay</button>'
            '<button name="action" value="cancel">Cancel</button></form>'
            if payment["status"] == "pending"
            else ""
        )
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>YooKassa (sandbox)'
            f"</title></head><body><h1>YooKassa (sandbox)</h1><p role=status>{notice}</p>"
            f"<p id=amount>{amount['value']} {amount['currency']}</p>"
            f"<p id=status>{payment['status']}</p>{form_html}</body></html>"
        )
        return HTMLResponse(html)

    # -- helpers -------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == basic_auth(self.shop_id, self.secret_key)

    def _payment(self, payment_id: str) -> dict[str, Any]:
        try:
            return self.payments[payment_id]
        except KeyError:
            raise KeyError(f"no payment {payment_id}") from None

    @staticmethod
    def _public(payment: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in payment.items() if not k.startswith("_") and k != "capture"}
        if "payment_method" in shown:
            shown["payment_method"] = {
                k: v for k, v in shown["payment_method"].items() if not k.startswith("_")
            }
        return json.loads(json.dumps(shown))  # type: ignore[no-any-return]


def _error(exc: YooKassaError) -> JSONResponse:
    body = {
        "type": "error",
        "id": secrets.token_hex(8),
        "code": exc.code,
        "description": exc.description,
    }
    if exc.parameter:
        body["parameter"] = exc.parameter
    return JSONResponse(body, status_code=exc.status)


def _amount(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise YooKassaError(400, "invalid_request", "Amount is required", "amount")
    currency, text = value.get("currency"), value.get("value")
    if currency not in _CURRENCIES:
        raise YooKassaError(400, "invalid_request", "Currency is not supported", "amount.currency")
    if not isinstance(text, str) or len(text) > 32:
        raise YooKassaError(
            400, "invalid_request", "Amount value is a decimal string", "amount.value"
        )
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise YooKassaError(
            400, "invalid_request", "Amount value is invalid", "amount.value"
        ) from None
    if not number.is_finite() or number <= 0 or number.as_tuple().exponent < -2:  # type: ignore[operator]
        raise YooKassaError(400, "invalid_request", "Amount value is invalid", "amount.value")
    return {"value": text, "currency": str(currency)}
