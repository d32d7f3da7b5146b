"""Bounded requests: one ASGI layer in front of every listener's routes.

Only HTTP/1.x is served (505 otherwise; see ``_server``). The server closes a connection
that has not sent a complete request head within ``header_timeout_seconds`` and refuses an
incomplete head larger than ``max_header_bytes``; a complete one that arrived in one read
can be larger, so this layer refuses those (431).
The body is counted as it arrives, chunked or not, and a route never sees more than its
limit:

- a declared ``Content-Length`` over the limit is answered 413 before the route runs;
- a body that grows past the limit while the route reads it is answered 413 at that
  moment, and one still arriving at its deadline (``body_timeout_seconds`` after the
  request head) is answered 408;
- after such an answer the route sees the client gone (``http.disconnect``, which
  starlette raises as ``ClientDisconnect``), whatever it sends is dropped, and the
  connection is closed without reading the rest of the body.

Routes that need another limit than their listener's are ``LimitedRoute``s.

A server may hand body chunks to the app through a queue, and wait forever to put
``http.disconnect`` on it when a response ends while the client is still sending and the
route stopped reading (hypercorn does): the connection and its buffers would never be
freed. So a response that ends before the body does is sent while the rest of the body is
drained, whatever the server, and a route that ends without a complete response gets one
from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.logs import get_logger

_log = get_logger("http")

_DISCONNECT: Message = {"type": "http.disconnect"}


class LimitedRoute(Route):
    """A route whose request bodies may be up to ``max_body_bytes``, not its listener's limit."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, max_body_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.max_body_bytes = max_body_bytes


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may send to a listener, and how slowly (``[http.limits]``)."""

    max_body_bytes: int = 64 * 1024
    """Per request body, unless its route is a ``LimitedRoute``."""
    body_timeout_seconds: float = 30.0
    """From the end of the request head to the end of its body."""
    max_header_bytes: int = 16 * 1024
    """The request line and headers together."""
    header_timeout_seconds: float = 10.0
    """From opening the connection, or from the previous response on a kept-alive one, to
    the end of the next request head; also how long an idle connection stays open."""


class BoundedRequests:
    """Wraps an ASGI app so that no request it sees exceeds the limits in size or time.

    ``routes`` are the app's routes; the ``LimitedRoute``s among them set their own body
    limit. Other connection types than HTTP (websockets) are refused: no route serves them.
    """

    def __init__(
        self, app: ASGIApp, limits: RequestLimits, *, routes: Sequence[BaseRoute] = (), name: str
    ) -> None:
        self._app = app
        self._limits = limits
        self._limited = [r for r in routes if isinstance(r, LimitedRoute)]
        self._name = name

    def max_body_bytes(self, scope: Scope) -> int:
        for route in self._limited:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.max_body_bytes
        return self._limits.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        declared = _content_length(scope)
        exchange = _Exchange(
            receive,
            send,
            max_bytes=self.max_body_bytes(scope),
            deadline=trio.current_time() + self._limits.body_timeout_seconds,
            bodiless=_bodiless(scope, declared),
        )
        try:
            if scope.get("http_version") not in _HTTP1:
                await exchange.refuse(505)
            elif _head_size(scope) > self._limits.max_header_bytes:
                await exchange.refuse(431)
            elif declared is not None and declared > exchange.max_bytes:
                await exchange.refuse(413)
            else:
                try:
                    await self._app(scope, exchange.receive, exchange.send)
                except Exception:
                    if exchange.refused is None:
                        raise
                    # The route stumbled over the client we cut off: it has its answer.
        finally:
            if exchange.refused is not None:
                _log.warning(
                    "request refused",
                    operation="http_request",
                    outcome="failed",
                    failure_type="domain_error",
                    listener=self._name,
                    status=exchange.refused,
                    max_body_bytes=exchange.max_bytes,
                    received_bytes=exchange.received,
                    declared_bytes=declared,
                    method=str(scope.get("method", ""))[:16],
                    path=str(scope.get("path", ""))[:200],
                )
            await exchange.finish()


def _head_size(scope: Scope) -> int:
    """The request line and headers, about as they came on the wire."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + 12
    line += len(scope.get("query_string", b""))
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


_HTTP1 = ("1.0", "1.1")


def _bodiless(scope: Scope, declared: int | None) -> bool:
    """An HTTP/1 request without Content-Length and Transfer-Encoding has no body."""
    if scope.get("http_version") not in _HTTP1:
        return False
    if declared == 0:
        return True
    names = {name.lower() for name, _ in scope.get("headers", ())}
    return b"content-length" not in names and b"transfer-encoding" not in names


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


_REASONS = {
    408: "body_timeout",
    413: "body_too_large",
    431: "headers_too_large",
    500: "no_response",
    505: "http_version_not_supported",
}


class _Exchange:
    """One request and its response, as the route sees them through the limits."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        max_bytes: int,
        deadline: float,
        bodiless: bool,
    ) -> None:
        self._receive = receive
        self._send = send
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.received = 0
        self.refused: int | None = None
        self.body_done = bodiless
        """The last body chunk came through (or there is no body): only its end and the
        disconnect follow on the queue."""
        self.gone = False
        """The disconnect came through: nothing follows."""
        self.response_started = False
        self.response_done = False

    async def receive(self) -> Message:
        if self.refused is not None or self.response_done or self.gone:
            return _DISCONNECT
        if self.body_done:  # a route waiting for the client to leave
            return self._seen(await self._receive())
        with trio.move_on_at(self.deadline):
            message = self._seen(await self._receive())
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.max_bytes:
                    await self.refuse(413)
                    return _DISCONNECT
            return message
        await self.refuse(408)
        return _DISCONNECT

    def _seen(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.body_done = self.body_done or not message.get("more_body", False)
        else:
            self.gone = True
        return message

    async def send(self, message: Message) -> None:
        if self.refused is not None or self.response_done:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
            if not (self.body_done or self.gone):
                # The rest of the body will be drained, not read: the connection ends here.
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await self._send_last(message)
        else:
            await self._send(message)

    async def refuse(self, status: int) -> None:
        """Answer ``status`` now and close the connection; the route has lost its client."""
        self.refused = status
        await self._answer(status)

    async def finish(self) -> None:
        """Complete a response the route left unfinished (a 500 if it never started one)."""
        await self._answer(500)

    async def _answer(self, status: int) -> None:
        if self.response_done:
            return
        if self.response_started:  # too late for a status: end it, the connection closes
            await self._send_last({"type": "http.response.body", "body": b""})
            return
        self.response_started = True
        body = json.dumps({"error": _REASONS.get(status, "refused")}).encode()
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self._send_last({"type": "http.response.body", "body": body})

    async def _send_last(self, message: Message) -> None:
        self.response_done = True
        if self.body_done or self.gone:
            await self._send(message)
            return
        # Once the last send returns, the server has seen the response end and hands
        # nothing more: the drain can stop there.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain)
            await self._send(message)
            nursery.cancel_scope.cancel()

    async def _drain(self) -> None:
        while not self.gone:
            self._seen(await self._receive())
