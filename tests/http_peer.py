"""A recording HTTP peer on 127.0.0.1 for the alert sinks' tests: one request per
connection, answered with JSON, or left hanging."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Request], tuple[int, Any]]


class FakeHttpServer:
    """A minimal HTTP/1.1 server: one request per connection, answers with JSON."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.respond: Responder = lambda request: (200, {"ok": True})
        self.hang = False
        self.url = ""

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            body += chunk
        request = Request(method, path, headers, body)
        self.requests.append(request)
        if self.hang:
            await trio.sleep_forever()
        status, payload = self.respond(request)
        content = json.dumps(payload).encode()
        await stream.send_all(
            f"HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
            + content
        )
        await stream.aclose()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeHttpServer]:
    """A ``FakeHttpServer`` listening on 127.0.0.1 for the length of the block."""
    fake = FakeHttpServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1")
        )
        host, port = listeners[0].socket.getsockname()[:2]
        fake.url = f"http://{host}:{port}"
        yield fake
        nursery.cancel_scope.cancel()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)
