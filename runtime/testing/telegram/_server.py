"""The HTTP side: the Bot API under ``/bot<token>/<method>``, files under
``/file/bot<token>/<path>``, the control API under ``/_control/``; served by hypercorn on trio."""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.plugin_api.peer import shared_tls_context

from ._control import control_routes
from ._errors import ApiError
from ._params import parse_body
from ._webhook import webhook_worker

if TYPE_CHECKING:
    from ._emulator import TelegramEmulator


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, answer: Any) -> None:
    if isinstance(answer, str):
        body = answer.encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps(answer, ensure_ascii=False).encode()
        content_type = b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _control_refusal(request: Request, error: Exception) -> Response:
    """An unknown control route or method answers like the others (JSON, readable by a
    page on another origin), so a browser can say what went wrong."""
    assert isinstance(error, HTTPException)
    return JSONResponse(
        {"error": f"{request.method} {request.url.path}: {error.detail}"},
        error.status_code,
        headers={**(error.headers or {}), "Access-Control-Allow-Origin": "*"},
    )


def build_app(emu: TelegramEmulator) -> ASGIApp:
    control = Starlette(
        routes=control_routes(emu), exception_handlers={HTTPException: _control_refusal}
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await control(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/file/bot"):
            await _file(emu, path, send)
        elif path.startswith("/bot"):
            await _bot_api(emu, scope, receive, send)
        else:
            await control(scope, receive, send)

    return app


async def _bot_api(emu: TelegramEmulator, scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    token, _, method = scope["path"][len("/bot") :].partition("/")
    bot = emu._tokens.get(token)
    if bot is None:
        emu.counters["answered.401"] += 1
        await _respond(send, 401, ApiError(401, "Unauthorized").payload())
        return
    if not method or "/" in method:
        emu.counters["answered.404"] += 1
        await _respond(send, 404, ApiError(404, "Not Found").payload())
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        params = parse_body(scope.get("query_string", b""), headers.get("content-type", ""), body)
    except ApiError as error:
        await _respond(send, error.code, error.payload())
        return

    if not emu._may_wait(method):
        # Answered at once: no client to watch meanwhile, so no nursery and two tasks per
        # call, which cost about 8% of the emulator's CPU under a stream of sends.
        status, payload = await emu._call(bot, method, params)
        await _respond(send, status, payload)
        return
    outcome: list[tuple[int, Any]] = []
    async with trio.open_nursery() as nursery:

        async def watch_disconnect() -> None:
            # A client that gives up (aiogram stopping, a timeout) ends its long poll or
            # hang here instead of leaving it waiting.
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    emu.counters["abandoned"] += 1
                    nursery.cancel_scope.cancel()
                    return

        async def answer() -> None:
            outcome.append(await emu._call(bot, method, params))
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_disconnect)
        nursery.start_soon(answer)
    if outcome:
        status, payload = outcome[0]
        await _respond(send, status, payload)


async def _file(emu: TelegramEmulator, path: str, send: Send) -> None:
    token, _, file_path = path[len("/file/bot") :].partition("/")
    if token not in emu._tokens:
        await _respond(send, 401, ApiError(401, "Unauthorized").payload())
        return
    for stored in emu.files.values():
        if stored.file_path == file_path and stored.data is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", stored.mime_type.encode()),
                        (b"content-length", str(len(stored.data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": stored.data})
            return
    await _respond(send, 404, ApiError(404, "Not Found").payload())


KEEP_ALIVE_SECONDS = 75.0
"""How long an idle connection stays open, longer than aiohttp keeps one in its pool (15 s),
as Telegram's do: with hypercorn's 5 s an idle connection could be closed just as a bot
reused it, and that call failed with "Can not write request body"."""


async def serve(
    emu: TelegramEmulator,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[str],
) -> None:
    config = Config()
    # A socket given is served through a duplicate, which hypercorn closes when it stops.
    config.bind = [f"fd://{os.dup(sock.fileno())}" if sock is not None else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    try:
        async with (
            httpx.AsyncClient(timeout=emu.webhook_timeout, verify=shared_tls_context()) as client,
            trio.open_nursery() as nursery,
        ):
            emu._http = client
            emu._nursery = nursery
            for bot in emu._bots.values():
                nursery.start_soon(webhook_worker, emu, bot)
            binds: list[str] = await nursery.start(
                partial(hypercorn_serve, build_app(emu), config)  # type: ignore[arg-type]
            )
            emu.url = binds[0]
            task_status.started(emu.url)
    finally:
        emu._http = None
        emu._nursery = None
