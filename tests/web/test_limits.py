"""Every listener bounds what one request may send, in size and in time, over real sockets.

A real hypercorn serves a small app through ``HttpEndpoint`` on loopback; the client is a
raw TCP stream, so it can do what attackers do: chunked bodies without end, bodies that
stop halfway, headers a byte at a time. Deadlines under test are short and every wait is
long, so the tests say whether a request is cut off, never how fast.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.supervision import ActorSpec, Supervisor
from runtime.web import HttpEndpoint, LimitedRoute, RequestLimits

from .raw_client import CHUNK, ENDLESS, WAIT, chunked, head, until_hung_up

LIMIT = 64 * 1024
BIG_LIMIT = 1024 * 1024
PATIENT = RequestLimits(
    max_body_bytes=LIMIT,
    body_timeout_seconds=WAIT,
    max_header_bytes=16 * 1024,
    header_timeout_seconds=WAIT,
)
"""Size limits under test, time limits out of the way (a busy machine is slow, not hostile)."""
HASTY = RequestLimits(max_body_bytes=LIMIT, body_timeout_seconds=1.0, header_timeout_seconds=1.0)


@dataclass
class Seen:
    """What the routes were given."""

    calls: int = 0
    bodies: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def build(seen: Seen) -> Starlette:
    async def store(request: Request) -> Response:
        seen.calls += 1
        body = await request.body()
        seen.bodies.append(len(body))
        return Response(str(len(body)))

    async def careless(request: Request) -> Response:
        """Catches everything, as a route should not, and answers anyway."""
        seen.calls += 1
        try:
            body = await request.body()
        except Exception as exc:
            seen.errors.append(type(exc).__name__)
            return Response("swallowed", status_code=200)
        seen.bodies.append(len(body))
        return Response("ok")

    async def hello(request: Request) -> Response:
        return Response("hi")

    async def refuse(request: Request) -> Response:
        """Answers without reading the body, as an authentication check does."""
        seen.calls += 1
        return Response("no", status_code=401)

    return Starlette(
        routes=[
            Route("/store", store, methods=["POST"]),
            Route("/careless", careless, methods=["POST"]),
            Route("/refuse", refuse, methods=["POST"]),
            Route("/hello", hello),
            LimitedRoute("/big", store, methods=["POST"], max_body_bytes=BIG_LIMIT),
        ]
    )


@asynccontextmanager
async def serving(seen: Seen, limits: RequestLimits) -> AsyncIterator[int]:
    """The app behind ``HttpEndpoint`` under a supervisor; yields its port."""
    endpoint = HttpEndpoint(lambda: build(seen), host="127.0.0.1", port=0, limits=limits)
    supervisor = Supervisor([ActorSpec("http", endpoint.run)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(WAIT):
            await supervisor.ready.wait()
        yield int(endpoint.urls[0].rsplit(":", 1)[1])
        supervisor.request_shutdown()


# -- size ------------------------------------------------------------------------------------


async def test_an_endless_chunked_body_is_cut_off_at_the_limit_with_413() -> None:
    seen = Seen()
    async with serving(seen, PATIENT) as port:
        outcome = await until_hung_up(
            port, iter([head("/store", "Transfer-Encoding: chunked"), *chunked(ENDLESS)])
        )
    assert outcome.status == 413
    assert json.loads(outcome.body) == {"error": "body_too_large"}
    assert b"connection: close" in outcome.response.lower()
    assert seen.bodies == []  # the route never got a body
    assert outcome.sent < ENDLESS // 4  # the server stopped reading


async def test_a_declared_length_over_the_limit_is_refused_before_the_route_runs() -> None:
    seen = Seen()
    declared = head("/store", f"Content-Length: {ENDLESS}")
    async with serving(seen, PATIENT) as port:
        outcome = await until_hung_up(port, iter([declared, *[b"a" * CHUNK] * (ENDLESS // CHUNK)]))
    assert outcome.status == 413
    assert seen.calls == 0
    assert outcome.sent < ENDLESS // 4


async def test_a_route_that_swallows_the_cut_off_still_answers_413_only() -> None:
    seen = Seen()
    async with serving(seen, PATIENT) as port:
        outcome = await until_hung_up(
            port, iter([head("/careless", "Transfer-Encoding: chunked"), *chunked(ENDLESS)])
        )
    assert outcome.status == 413
    assert outcome.response.count(b"HTTP/1.1") == 1  # its own 200 went nowhere
    assert seen.errors == ["ClientDisconnect"] and seen.bodies == []


async def test_a_route_answering_without_reading_frees_the_connection() -> None:
    """Hypercorn would wait forever to tell such a route the client left, holding the
    connection and its buffers: the server must hang up instead."""
    seen = Seen()
    async with serving(seen, PATIENT) as port:
        outcomes = []
        for _ in range(3):
            outcomes.append(
                await until_hung_up(
                    port, iter([head("/refuse", "Transfer-Encoding: chunked"), *chunked(ENDLESS)])
                )
            )
    assert [o.status for o in outcomes] == [401, 401, 401]
    assert all(o.sent < ENDLESS // 4 for o in outcomes)


async def test_bodies_within_the_limit_and_a_route_of_its_own() -> None:
    seen = Seen()
    async with serving(seen, PATIENT) as port, httpx.AsyncClient(timeout=WAIT) as client:
        base = f"http://127.0.0.1:{port}"
        exact = await client.post(f"{base}/store", content=b"a" * LIMIT)
        over = await client.post(f"{base}/store", content=b"a" * (LIMIT + 1))
        big = await client.post(f"{base}/big", content=b"a" * (BIG_LIMIT - 1))
        too_big = await client.post(f"{base}/big", content=b"a" * (BIG_LIMIT + 1))
        again = await client.post(f"{base}/store", content=b"after")
    assert (exact.status_code, exact.text) == (200, str(LIMIT))
    assert (over.status_code, big.status_code, too_big.status_code) == (413, 200, 413)
    assert (again.status_code, again.text) == (200, "5")
    assert seen.bodies == [LIMIT, BIG_LIMIT - 1, 5]


async def test_a_head_over_the_size_limit_is_refused() -> None:
    seen = Seen()
    padding = "X-Pad: " + "a" * (20 * 1024)
    async with serving(seen, PATIENT) as port:
        outcome = await until_hung_up(port, iter([head("/store", padding, "Content-Length: 0")]))
    assert outcome.status == 431
    assert seen.calls == 0


async def test_websockets_are_refused() -> None:
    seen = Seen()
    upgrade = (
        b"GET /store HTTP/1.1\r\nHost: vpnbot\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    async with serving(seen, PATIENT) as port:
        outcome = await until_hung_up(port, iter([upgrade]))
    assert outcome.status == 403
    assert seen.calls == 0


# -- time ------------------------------------------------------------------------------------


async def test_a_head_sent_a_byte_at_a_time_is_cut_off() -> None:
    seen = Seen()
    endless_head = head("/store", "X-Pad: " + "a" * 10_000)[:-4]
    async with serving(seen, HASTY) as port:
        outcome = await until_hung_up(
            port, (endless_head[i : i + 1] for i in range(len(endless_head))), pause=0.02
        )
    assert outcome.sent < len(endless_head)
    assert seen.calls == 0


async def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408() -> None:
    seen = Seen()
    size = 10_000
    parts = iter([head("/store", f"Content-Length: {size}"), *[b"a"] * size])
    async with serving(seen, HASTY) as port:
        outcome = await until_hung_up(port, parts, pause=0.02)
    assert outcome.status == 408
    assert json.loads(outcome.body) == {"error": "body_timeout"}
    assert seen.bodies == []


async def test_a_body_that_stops_halfway_is_cut_off_with_408() -> None:
    seen = Seen()
    parts = iter([head("/store", "Content-Length: 1000") + b"a" * 500])
    async with serving(seen, HASTY) as port:
        outcome = await until_hung_up(port, parts)
    assert outcome.status == 408
    assert seen.bodies == []


async def test_an_idle_connection_is_closed() -> None:
    seen = Seen()
    async with serving(seen, HASTY) as port:
        outcome = await until_hung_up(port, iter([]))
    assert outcome.response == b""


async def test_http2_is_not_spoken_and_cannot_stop_the_listener() -> None:
    """Hypercorn's HTTP/2 falls over when a body keeps coming after the response (a refused
    request): the listener speaks HTTP/1.1 whatever the client asks for."""
    seen = Seen()
    endpoint = HttpEndpoint(lambda: build(seen), host="127.0.0.1", port=0, limits=PATIENT)
    supervisor = Supervisor([ActorSpec("http", endpoint.run)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(WAIT):
            await supervisor.ready.wait()
        base = endpoint.urls[0]
        port = int(base.rsplit(":", 1)[1])
        for _ in range(3):
            async with httpx.AsyncClient(http1=False, http2=True, timeout=WAIT) as h2:
                with contextlib.suppress(httpx.HTTPError):  # refused, one way or another
                    await h2.post(f"{base}/refuse", content=b"a" * (4 * LIMIT))
        upgrade = await until_hung_up(
            port,
            iter(
                [
                    b"GET /hello HTTP/1.1\r\nHost: vpnbot\r\nConnection: Upgrade, HTTP2-Settings"
                    b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                    b"POST /store HTTP/1.1\r\nHost: vpnbot\r\nContent-Length: 2\r\n"
                    b"Connection: close\r\n\r\nok"
                ]
            ),
        )
        async with httpx.AsyncClient(timeout=WAIT) as http1:
            after = await http1.post(f"{base}/store", content=b"after")
        (status,) = supervisor.statuses
        supervisor.request_shutdown()
    assert status.failures == 0 and status.restarts == 0
    assert upgrade.response.startswith(b"HTTP/1.1 200")  # not 101 Switching Protocols
    assert upgrade.response.count(b"HTTP/1.1 200") == 2 and upgrade.response.endswith(b"\r\n2")
    assert (after.status_code, after.text) == (200, "5")
