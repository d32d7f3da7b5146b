"""The HTTP/1.1 server behind every listener, over real sockets on loopback.

``tests/web/test_limits.py`` tries the limits the way attackers do; here is the rest of
what clients rely on: connections kept alive and pipelined, HEAD, streamed bodies,
``Expect: 100-continue``, a failing route, a client that stops reading, and a graceful stop.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import httpx
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from structlog.testing import capture_logs

from runtime.web._server import ServerLimits, listener_for, listening_socket, serve

from .raw_client import WAIT, until_hung_up

PATIENT = ServerLimits(header_timeout=WAIT)


@dataclass
class Gate:
    """``/slow`` sets ``entered``, then answers once ``release`` is set."""

    entered: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)


def app(gate: Gate) -> Starlette:
    async def peer(request: Request) -> Response:
        assert request.client is not None
        return PlainTextResponse(f"{request.client.port}")

    async def echo(request: Request) -> Response:
        return PlainTextResponse((await request.body()).decode())

    async def stream(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"part {i};".encode()

        return StreamingResponse(parts())

    async def broken(request: Request) -> Response:
        raise RuntimeError("a route that fails")

    async def slow(request: Request) -> Response:
        gate.entered.set()
        await gate.release.wait()
        return PlainTextResponse("finished")

    async def big(request: Request) -> Response:
        return Response(b"x" * (64 * 1024 * 1024))

    return Starlette(
        routes=[
            Route("/peer", peer, methods=["GET", "HEAD"]),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            Route("/broken", broken),
            Route("/slow", slow),
            Route("/big", big),
        ]
    )


@asynccontextmanager
async def serving(
    limits: ServerLimits = PATIENT,
) -> AsyncIterator[tuple[str, Gate, trio.Event, Callable[[], Awaitable[None]]]]:
    """Yields the base URL, ``/slow``'s gate, the event that stops the server, and a wait
    for the server's end."""
    gate, stop, ended = Gate(), trio.Event(), trio.Event()
    with listening_socket("127.0.0.1", 0) as sock:
        listener = listener_for(sock)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(app(gate), listener, limits=limits, stop=stop.wait, task_status=task_status)
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(run)
        yield url, gate, stop, ended.wait
        stop.set()
        gate.release.set()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_connection_is_kept_alive_for_the_next_request() -> None:
    async with serving() as (url, *_), httpx.AsyncClient(timeout=WAIT) as client:
        first = await client.get(f"{url}/peer")
        second = await client.get(f"{url}/peer")
    assert first.status_code == second.status_code == 200
    assert first.text == second.text, "the same client port: one connection"


async def test_pipelined_requests_are_answered_in_order() -> None:
    requests = (
        b"POST /echo HTTP/1.1\r\nHost: vpnbot\r\nContent-Length: 5\r\n\r\nfirst"
        b"POST /echo HTTP/1.1\r\nHost: vpnbot\r\nContent-Length: 6\r\n\r\nsecond"
        b"GET /peer HTTP/1.1\r\nHost: vpnbot\r\nConnection: close\r\n\r\n"
    )
    async with serving() as (url, *_):
        outcome = await until_hung_up(port_of(url), iter([requests]))
    answers = outcome.response.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [b"200", b"200", b"200"]
    assert answers[0].endswith(b"first") and answers[1].endswith(b"second")


async def test_head_gets_the_headers_without_the_body() -> None:
    async with serving() as (url, *_), httpx.AsyncClient(timeout=WAIT) as client:
        head = await client.head(f"{url}/peer")
        after = await client.get(f"{url}/peer")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(after.content) > 0


async def test_a_streamed_body_arrives_whole() -> None:
    async with serving() as (url, *_), httpx.AsyncClient(timeout=WAIT) as client:
        answer = await client.get(f"{url}/stream")
    assert answer.text == "".join(f"part {i};" for i in range(5))
    assert answer.headers["transfer-encoding"] == "chunked"


async def test_a_failing_route_gets_a_500_and_the_listener_serves_on() -> None:
    with capture_logs() as logs:
        async with serving() as (url, *_), httpx.AsyncClient(timeout=WAIT) as client:
            failed = await client.get(f"{url}/broken")
            after = await client.get(f"{url}/peer")
    assert (failed.status_code, after.status_code) == (500, 200)
    assert any(line.get("operation") == "http_request" for line in logs)


async def test_a_client_waiting_for_100_continue_gets_it_then_the_answer() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: vpnbot\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
    async with serving() as (url, *_):
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        async with stream:
            await stream.send_all(head + b"Connection: close\r\n\r\n")
            with trio.fail_after(WAIT):
                interim = await stream.receive_some()
                assert interim.startswith(b"HTTP/1.1 100 ")
                await stream.send_all(b"ok")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok")


async def test_a_client_that_stops_reading_is_cut_off() -> None:
    limits = ServerLimits(header_timeout=WAIT, send_timeout=0.5, graceful_timeout=WAIT)
    async with serving(limits) as (url, _, stop, ended):
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        async with stream:
            await stream.send_all(b"GET /big HTTP/1.1\r\nHost: vpnbot\r\n\r\n")
            stop.set()  # a graceful stop would wait for the response: the cut-off ends it
            with trio.fail_after(WAIT):
                await ended()  # the stuck connection ended: the stop did not wait for it


async def test_a_stop_lets_requests_in_flight_finish_and_closes_idle_connections() -> None:
    async with (
        serving() as (url, gate, stop, ended),
        httpx.AsyncClient(timeout=WAIT) as idle,
        httpx.AsyncClient(timeout=WAIT) as busy,
    ):
        await idle.get(f"{url}/peer")  # now idle, kept alive
        answers: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:

            async def slow() -> None:
                answers.append(await busy.get(f"{url}/slow"))

            nursery.start_soon(slow)
            with trio.fail_after(WAIT):
                await gate.entered.wait()
                stop.set()
                await trio.testing.wait_all_tasks_blocked()
            assert await _refused(f"{url}/peer"), "the listener closed at the stop"
            gate.release.set()
        with trio.fail_after(WAIT):
            await ended()
    assert answers[0].text == "finished"


async def _refused(url: str) -> bool:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        try:
            await client.get(url)
        except httpx.ConnectError:
            return True
    return False


class _FloodedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener out of file descriptors for its first accepts, as under a flood of
    connections."""

    def __init__(self, listener: trio.SocketListener, failures: int) -> None:
        self.listener = listener
        self.socket = listener.socket
        self.failures = failures

    async def accept(self) -> trio.SocketStream:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.listener.accept()

    async def aclose(self) -> None:
        await self.listener.aclose()


async def test_a_listener_out_of_file_descriptors_accepts_again_later() -> None:
    stop = trio.Event()
    with listening_socket("127.0.0.1", 0) as sock:
        flooded = _FloodedListener(listener_for(sock), failures=3)
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(
            functools.partial(
                serve,
                app(Gate()),
                cast(trio.SocketListener, flooded),  # serve reads its socket's address
                limits=PATIENT,
                stop=stop.wait,
            )
        )
        async with httpx.AsyncClient(timeout=WAIT) as client:
            answer = await client.get(f"{url}/peer")
        stop.set()
    assert answer.status_code == 200
    assert flooded.failures == 0
