"""A small HTTP/1.1 server for one ASGI app, on trio and h11.

Why not hypercorn, the usual server on trio: every listener of ours speaks HTTP/1.1 only
(Telegram, Crypto Pay and reverse proxies talk HTTP/1.1 to their upstreams), while
hypercorn always imports its HTTP/2 and WebSocket stacks, multiprocessing and logging's
config machinery (about 3 MB of a service's memory, a tenth of its budget over a plain
bot), and its HTTP/2 code takes a whole listener down when data arrives for a stream
already answered (pgjones/hypercorn#312 and #334, open), so it had to be patched to never
switch. h11 (the HTTP/1.1 state machine hypercorn uses too) does the protocol; this module
only runs connections:

- a connection has ``header_timeout`` from its start, or from its previous response, to a
  complete request head, and a head may be at most ``max_header_bytes`` while incomplete
  (431; ``BoundedRequests`` refuses a complete one that is larger);
- a request body is read when the app asks for it (``receive``), never ahead: a route
  that does not read costs one socket buffer, and ``BoundedRequests`` bounds the rest;
- an upgrade is never taken: a WebSocket request is answered 403, an ``h2c`` one as
  plain HTTP/1.1 (RFC 9110 allows ignoring ``Upgrade``), and HTTP/2's preface arrives as a
  request for version 2.0, which ``BoundedRequests`` answers 505;
- a response that cannot be written within ``send_timeout`` (a client that stopped
  reading) ends its connection;
- a connection that ends with a request body unread first half-closes and reads what is
  still coming for a moment (a "lingering close"), so the client sees the answer instead
  of a reset;
- on a stop, listeners close, idle connections end at once, and requests in flight get
  ``graceful_timeout`` to finish.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h11
import trio
from starlette.types import ASGIApp, Message

from runtime.logs import get_logger, log_failure

_log = get_logger("http")

_READ_BYTES = 64 * 1024
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024
_DISCONNECT: Message = {"type": "http.disconnect"}
_Address = tuple[str, int] | None
_OUT_OF_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
"""Accepting fails for want of file descriptors or memory: a flood of connections, which
must not stop the listener; it accepts again a moment later."""
_CAPACITY_PAUSE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ServerLimits:
    header_timeout: float = 10.0
    """From a connection's start, or its previous response, to a complete request head."""
    max_header_bytes: int = 16 * 1024
    """An incomplete request head may not grow past this (431)."""
    send_timeout: float = 30.0
    """For writing one piece of a response: a client that stops reading is cut off."""
    graceful_timeout: float = 3.0
    """For requests in flight to finish after a stop."""


def listener_for(sock: socket.socket) -> trio.SocketListener:
    """A trio listener on a duplicate of ``sock``, which the caller keeps."""
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock.dup()))


BACKLOG = 100


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (an IPv6 address bare or in brackets) and
    listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    app: ASGIApp,
    listener: trio.SocketListener,
    *,
    limits: ServerLimits,
    stop: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listener`` (closed when done) until ``stop()`` returns; then
    close idle connections and give those in flight ``graceful_timeout``."""
    connections = _Connections()
    async with listener, trio.open_nursery() as nursery:
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in _OUT_OF_CAPACITY:
                            raise
                        await trio.sleep(_CAPACITY_PAUSE_SECONDS)  # as trio's own servers do
                        continue
                    nursery.start_soon(_Connection(stream, app, limits, connections).run)

        nursery.start_soon(accept)
        task_status.started([url_of(listener)])
        await stop()
        accepting.cancel()
        await listener.aclose()
        connections.stop()
        with trio.move_on_after(limits.graceful_timeout):
            await connections.ended.wait()
        nursery.cancel_scope.cancel()


class _Connections:
    """The open connections, and the wait for a request head of each idle one."""

    def __init__(self) -> None:
        self.stopping = False
        self.waiting: set[trio.CancelScope] = set()
        self.open = 0
        self.ended = trio.Event()

    def stop(self) -> None:
        self.stopping = True
        for scope in self.waiting:
            scope.cancel()
        self._check()

    def closed(self) -> None:
        self.open -= 1
        self._check()

    def _check(self) -> None:
        if self.stopping and self.open == 0:
            self.ended.set()


class _Connection:
    def __init__(
        self, stream: trio.SocketStream, app: ASGIApp, limits: ServerLimits, all_: _Connections
    ) -> None:
        self.stream = stream
        self.app = app
        self.limits = limits
        self.all = all_
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.client: _Address = None
        self.server: _Address = None

    async def run(self) -> None:
        self.all.open += 1
        try:
            async with self.stream:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    with contextlib.suppress(OSError):
                        self.client = _address(self.stream.socket.getpeername())
                        self.server = _address(self.stream.socket.getsockname())
                    await self._requests()
                    await self._close()
        except trio.TooSlowError:
            pass  # a response the client would not read: the connection is dropped
        except Exception as exc:  # one connection's trouble never stops the listener
            log_failure(_log, exc, operation="http_connection")
        finally:
            self.all.closed()

    async def _requests(self) -> None:
        while not self.all.stopping:
            request = await self._next_request()
            if request is None:
                return
            await _Exchange(self, request).run()
            if self.h11.their_state is h11.SEND_BODY:
                self._take_end_of_bodiless_request()
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    def _take_end_of_bodiless_request(self) -> None:
        """A request without a body that the app never read ends at once; one whose body
        is left unread keeps the connection from being reused."""
        with contextlib.suppress(h11.RemoteProtocolError):
            self.h11.next_event()

    async def _next_request(self) -> h11.Request | None:
        """The next request head, or None when the connection is to end: a timeout, a
        stop, the client gone, a malformed or refused request (answered here)."""
        with trio.move_on_after(self.limits.header_timeout) as waiting:
            self.all.waiting.add(waiting)
            if self.all.stopping:
                waiting.cancel()
            try:
                event = await self.next_event()
            except h11.RemoteProtocolError as exc:
                await self.simple_response(exc.error_status_hint or 400)
                return None
            finally:
                self.all.waiting.discard(waiting)
        if waiting.cancelled_caught or not isinstance(event, h11.Request):
            return None
        if _header(event, b"upgrade").lower() == b"websocket":
            await self.simple_response(403)
            return None
        return event

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(_READ_BYTES))

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(data)

    async def simple_response(self, status: int) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [(b"content-length", b"0"), (b"connection", b"close")]
        await self.send(h11.Response(status_code=status, headers=headers))
        await self.send(h11.EndOfMessage())

    async def _close(self) -> None:
        """After an answer sent while the client was still sending: half-close, then read
        what still comes for a moment, so the client reads the answer before the close
        resets the connection."""
        if self.h11.our_state is not h11.MUST_CLOSE or self.h11.their_state not in (
            h11.SEND_BODY,
            h11.ERROR,
        ):
            return
        with contextlib.suppress(OSError):
            await self.stream.send_eof()
            read = 0
            with trio.move_on_after(_LINGER_SECONDS):
                while read < _LINGER_BYTES:
                    data = await self.stream.receive_some(_READ_BYTES)
                    if not data:
                        return
                    read += len(data)


def _address(value: Any) -> _Address:
    return (str(value[0]), int(value[1])) if isinstance(value, tuple) else None


def _header(request: h11.Request, name: bytes) -> bytes:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return b""


class _Exchange:
    """One request: its ASGI scope, ``receive`` and ``send``."""

    def __init__(self, connection: _Connection, request: h11.Request) -> None:
        self.connection = connection
        self.request = request
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_done = False
        self.responded = trio.Event()

    async def run(self) -> None:
        connection = self.connection
        try:
            await self.connection.app(self.scope(), self.receive, self.send)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            raise
        except Exception as exc:
            log_failure(_log, exc, operation="http_request")
        finally:
            self.responded.set()
        if connection.h11.our_state is h11.SEND_RESPONSE:
            await connection.simple_response(500)
        elif connection.h11.our_state is h11.SEND_BODY:
            # Too late for a status: the response ends short, and so does the connection.
            connection.h11.send_failed()

    def scope(self) -> Message:
        path, _, query = bytes(self.request.target).partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.request.http_version.decode(),
            "method": self.request.method.decode(),
            "scheme": "http",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": [(bytes(k), bytes(v)) for k, v in self.request.headers],
            "client": self.connection.client,
            "server": self.connection.server,
        }

    async def receive(self) -> Message:
        """The body as it arrives; once it is all read, the disconnect once the response
        is sent."""
        connection = self.connection
        if self.body_done or self.responded.is_set():
            await self.responded.wait()
            return _DISCONNECT
        if connection.h11.they_are_waiting_for_100_continue:
            await connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await connection.next_event()
        except h11.RemoteProtocolError:
            return _DISCONNECT
        if isinstance(event, h11.Data):
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        connection = self.connection
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            return
        if message["type"] != "http.response.body" or self.responded.is_set():
            return
        if connection.h11.our_state is h11.SEND_RESPONSE:
            await connection.send(h11.Response(status_code=self.status, headers=self.headers))
        body = bytes(message.get("body", b""))
        if body and self.request.method != b"HEAD":
            await connection.send(h11.Data(data=body))
        if not message.get("more_body", False):
            await connection.send(h11.EndOfMessage())
            self.responded.set()
