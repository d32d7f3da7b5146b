"""The control API over HTTP (JSON), for a browser page or another process.

Every route takes ``?bot=<bot id>`` (default: the first bot). Errors are 400
``{"error": "..."}``.

- ``GET  /_control/state``: bots (id, username, webhook info, pending updates), users,
  counters, limits, faults
- ``GET  /_control/users``; ``POST /_control/users`` ``{id?, first_name, last_name?,
  username?, language_code?, opened?}``
- ``POST /_control/users/{id}/messages`` ``{text}``; ``.../commands`` ``{command, args?}``
- ``POST /_control/users/{id}/presses`` ``{message_id, data? | text?, wait?}`` (``wait``
  seconds for the bot's answer)
- ``POST /_control/users/{id}/payments`` ``{message_id? | link?, duplicate?}``: waits for
  the pre-checkout answer, returns the outcome
- ``POST /_control/users/{id}/block``, ``.../unblock`` ``{restart?}``
- ``GET  /_control/chats/{chat_id}/transcript?after=<seq>&wait=<seconds>`` (a long poll
  for new entries when ``wait`` is given); ``GET /_control/chats/{chat_id}/messages``
- ``GET  /_control/files/{file_id}``: the bytes of a photo or document the bot sent
- ``GET  /_control/payments``; ``POST /_control/payments/{charge_id}/redeliver``
  ``{same_update?}``; ``GET /_control/star_transactions``
- ``POST /_control/invoices/{message_id}/expire`` ``{chat_id}``: paying it fails from then
  on (``INVOICE_EXPIRED``); ``POST /_control/payments/{charge_id}/refund``: Telegram gives
  a Stars payment back (the bot gets ``refunded_payment``)
- ``POST /_control/faults`` ``{status?, method?, times?, retry_after?, description?,
  delay?, hang?, applied?}``; ``DELETE /_control/faults``
- ``PUT /_control/outage`` ``{status?, description?, body?, hang?, methods?, spared?}``
  (Telegram unreachable until ``DELETE /_control/outage``); ``GET /_control/outage``
- ``GET|PUT /_control/limits`` (fields of ``Limits``)
- ``GET  /_control/counters``; ``POST /_control/webhook/flush``
- ``POST /_control/reset``: forget every user and chat (a new conversation); served only
  by an emulator made with ``allow_reset`` (the sandbox's)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._errors import EmulatorError
from ._limits import Limits
from ._state import ButtonPress, Invoice, Message, Payment, PaymentResult

if TYPE_CHECKING:
    from ._emulator import SimUser, TelegramEmulator

Endpoint = Callable[[Request], Awaitable[Any]]


def control_routes(emu: TelegramEmulator) -> list[BaseRoute]:
    def route(path: str, fn: Endpoint, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                result = await fn(request)
            except EmulatorError as error:
                return _json({"error": str(error)}, 400)
            except (ValueError, KeyError, TypeError) as error:
                return _json({"error": f"bad request: {error!r}"}, 400)
            if isinstance(result, Response):
                return result
            return _json(result)

        return Route("/_control" + path, endpoint, methods=methods)

    def bot_of(request: Request) -> int | None:
        value = request.query_params.get("bot")
        return int(value) if value else None

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise EmulatorError("the body must be a JSON object")
        return data

    def user_of(request: Request) -> SimUser:
        return emu.user(int(request.path_params["user_id"]))

    async def state(request: Request) -> Any:
        return {
            "url": emu.url,
            "bots": [
                {
                    "id": bot_id,
                    "username": emu._bots[bot_id].username,
                    "first_name": emu._bots[bot_id].first_name,
                    "webhook": emu.webhook_info(bot=bot_id),
                    "pending_updates": len(emu._bots[bot_id].updates),
                    "chats": sorted(emu._bots[bot_id].chats),
                    "blocked": sorted(emu._bots[bot_id].blocked),
                }
                for bot_id in emu.bots
            ],
            "users": [u.wire() for u in emu.users],
            "counters": dict(emu.counters),
            "limits": dataclasses.asdict(emu.limits),
            "faults": [dataclasses.asdict(f) for f in emu.faults],
            "outage": emu.outage is not None,
        }

    async def list_users(request: Request) -> Any:
        return [u.wire() for u in emu.users]

    async def create_user(request: Request) -> Any:
        data = await body(request)
        user_id = data.get("id")
        user = emu.create_user(
            int(user_id) if user_id is not None else None,
            data.get("first_name", "Test"),
            last_name=data.get("last_name"),
            username=data.get("username"),
            language_code=data.get("language_code", "en"),
            opened=bool(data.get("opened", True)),
            bot=bot_of(request),
        )
        return user.wire()

    async def send_message(request: Request) -> Any:
        data = await body(request)
        return _message(user_of(request).send_text(str(data["text"]), bot=bot_of(request)))

    async def send_command(request: Request) -> Any:
        data = await body(request)
        message = user_of(request).send_command(
            str(data["command"]), str(data.get("args", "")), bot=bot_of(request)
        )
        return _message(message)

    async def press(request: Request) -> Any:
        data = await body(request)
        pressed = user_of(request).press(
            int(data["message_id"]),
            data=data.get("data"),
            text=data.get("text"),
            bot=bot_of(request),
        )
        wait = float(data.get("wait", 0) or 0)
        if wait > 0:
            with trio.move_on_after(wait):
                await pressed.answered_event.wait()
        return _press(pressed)

    async def pay(request: Request) -> Any:
        data = await body(request)
        message_id = data.get("message_id")
        result = await user_of(request).pay(
            int(message_id) if message_id is not None else None,
            link=data.get("link"),
            duplicate=data.get("duplicate"),
            bot=bot_of(request),
        )
        return _payment_result(result)

    async def block(request: Request) -> Any:
        user_of(request).block(bot=bot_of(request))
        return {"ok": True}

    async def unblock(request: Request) -> Any:
        data = await body(request)
        user_of(request).unblock(restart=bool(data.get("restart")), bot=bot_of(request))
        return {"ok": True}

    async def transcript(request: Request) -> Any:
        chat_id = int(request.path_params["chat_id"])
        bot = bot_of(request)
        after_raw = request.query_params.get("after")
        after = int(after_raw) if after_raw else None
        wait = float(request.query_params.get("wait") or 0)
        if wait > 0:
            with trio.move_on_after(wait):
                await emu.wait_until(
                    lambda: emu.transcript(chat_id, bot=bot, after=after) or None,
                    timeout=wait + 1,
                )
        return [e.json() for e in emu.transcript(chat_id, bot=bot, after=after)]

    async def messages(request: Request) -> Any:
        chat_id = int(request.path_params["chat_id"])
        return [_message(m) for m in emu.messages(chat_id, bot=bot_of(request), from_bot=None)]

    async def file(request: Request) -> Any:
        stored = emu.files.get(request.path_params["file_id"])
        if stored is None or stored.data is None:
            raise EmulatorError("no such file")
        return Response(stored.data, media_type=stored.mime_type)

    async def payments(request: Request) -> Any:
        return [_payment(p) for p in emu.payments(bot=bot_of(request))]

    async def redeliver(request: Request) -> Any:
        data = await body(request)
        emu.redeliver_payment(
            request.path_params["charge_id"],
            same_update=bool(data.get("same_update", True)),
            bot=bot_of(request),
        )
        return {"ok": True}

    async def expire_invoice(request: Request) -> Any:
        data = await body(request)
        invoice = emu.expire_invoice(
            int(data["chat_id"]), int(request.path_params["message_id"]), bot=bot_of(request)
        )
        return {"ok": True, "message_id": invoice.message_id, "status": "expired"}

    async def refund(request: Request) -> Any:
        payment = emu.refund_payment(request.path_params["charge_id"], bot=bot_of(request))
        return _payment(payment)

    async def star_transactions(request: Request) -> Any:
        return emu.star_transactions(bot=bot_of(request))

    async def add_fault(request: Request) -> Any:
        data = await body(request)
        method = data.get("method")
        times = int(data.get("times", 1))
        applied = bool(data.get("applied", False))
        if data.get("hang"):
            emu.hang_next(method=method, times=times, applied=applied)
        elif data.get("status") is None:
            emu.delay_next(float(data.get("delay", 0)), method=method, times=times, applied=applied)
        else:
            emu.fail_next(
                int(data["status"]),
                method=method,
                times=times,
                retry_after=data.get("retry_after"),
                description=data.get("description"),
                body=data.get("body"),
                applied=applied,
            )
            if data.get("delay"):
                emu.faults[-1].delay = float(data["delay"])
        return [dataclasses.asdict(f) for f in emu.faults]

    async def clear_faults(request: Request) -> Any:
        emu.clear_faults()
        return []

    async def outage(request: Request) -> Any:
        if request.method == "PUT":
            data = await body(request)
            methods = data.get("methods")
            emu.start_outage(
                int(data.get("status", 502)),
                description=data.get("description"),
                body=data.get("body"),
                hang=bool(data.get("hang", False)),
                methods=None if methods is None else [str(m) for m in methods],
                spared=[str(m) for m in data.get("spared", [])],
            )
        elif request.method == "DELETE":
            emu.end_outage()
        current = emu.outage
        if current is None:
            return None
        found = dataclasses.asdict(current)
        found["methods"] = None if current.methods is None else sorted(current.methods)
        found["spared"] = sorted(current.spared)
        return found

    async def limits(request: Request) -> Any:
        if request.method == "PUT":
            data = await body(request)
            known = {f.name for f in dataclasses.fields(Limits)}
            unknown = set(data) - known
            if unknown:
                raise EmulatorError(f"unknown limits: {sorted(unknown)}")
            emu.limits = dataclasses.replace(emu.limits, **data)
        return dataclasses.asdict(emu.limits)

    async def counters(request: Request) -> Any:
        return dict(emu.counters)

    async def flush(request: Request) -> Any:
        emu.flush_webhook(bot=bot_of(request))
        return {"ok": True}

    async def reset(request: Request) -> Any:
        emu.clear_chats()
        return {"ok": True}

    resets = [route("/reset", reset, ["POST"])] if emu.allow_reset else []
    return [
        *resets,
        route("/state", state, ["GET"]),
        route("/users", list_users, ["GET"]),
        route("/users", create_user, ["POST"]),
        route("/users/{user_id:int}/messages", send_message, ["POST"]),
        route("/users/{user_id:int}/commands", send_command, ["POST"]),
        route("/users/{user_id:int}/presses", press, ["POST"]),
        route("/users/{user_id:int}/payments", pay, ["POST"]),
        route("/users/{user_id:int}/block", block, ["POST"]),
        route("/users/{user_id:int}/unblock", unblock, ["POST"]),
        route("/chats/{chat_id}/transcript", transcript, ["GET"]),
        route("/chats/{chat_id}/messages", messages, ["GET"]),
        route("/files/{file_id}", file, ["GET"]),
        route("/payments", payments, ["GET"]),
        route("/payments/{charge_id}/redeliver", redeliver, ["POST"]),
        route("/payments/{charge_id}/refund", refund, ["POST"]),
        route("/invoices/{message_id:int}/expire", expire_invoice, ["POST"]),
        route("/star_transactions", star_transactions, ["GET"]),
        route("/faults", add_fault, ["POST"]),
        route("/faults", clear_faults, ["DELETE"]),
        route("/outage", outage, ["GET", "PUT", "DELETE"]),
        route("/limits", limits, ["GET", "PUT"]),
        route("/counters", counters, ["GET"]),
        route("/webhook/flush", flush, ["POST"]),
    ]


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status, headers={"Access-Control-Allow-Origin": "*"})


def _message(message: Message) -> dict[str, Any]:
    out = message.wire()
    out["from_bot"] = message.from_bot
    out["deleted"] = message.deleted
    out["edits"] = message.edits
    if message.file_id and (message.photo is not None or message.document is not None):
        out["file_url"] = f"/_control/files/{message.file_id}"
    if message.invoice is not None:
        out["invoice_status"] = _invoice_status(message.invoice)
    return out


def _invoice_status(invoice: Invoice) -> str:
    if invoice.paid_by:
        return "paid"
    return "expired" if invoice.expired else "open"


def _press(press: ButtonPress) -> dict[str, Any]:
    return {
        "id": press.id,
        "message_id": press.message_id,
        "data": press.data,
        "button_text": press.button_text,
        "answered": press.answered,
        "answer_text": press.answer_text,
        "show_alert": press.show_alert,
        "url": press.url,
    }


def _payment(payment: Payment) -> dict[str, Any]:
    return {
        **payment.successful_payment(),
        "user_id": payment.user_id,
        "chat_id": payment.chat_id,
        "date": payment.date,
        "message_id": payment.message_id,
        "refunded": payment.refunded,
    }


def _payment_result(result: PaymentResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "query_id": result.query_id,
        "error_message": result.error_message,
        "payment": _payment(result.payment) if result.payment else None,
        "invoice": {
            "title": result.invoice.title,
            "payload": result.invoice.payload,
            "currency": result.invoice.currency,
            "total_amount": result.invoice.total_amount,
            "message_id": result.invoice.message_id,
            "link": result.invoice.link,
        },
    }
