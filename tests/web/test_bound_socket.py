"""A listener serves the socket bound at the start, and keeps it across its restarts.

``vpnbot run`` binds its ports before anything slow (``runtime.app._ports``); each start of
the listener's actor serves a duplicate of that socket, so the port stays the process's
between two starts: nobody else can take it, and the next start serves it again.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from runtime.app._ports import BoundPorts, PortUnavailable, PortUse
from runtime.supervision import ActorSpec, Supervisor
from runtime.web import HttpEndpoint
from runtime.web._server import listening_socket

WAIT = 60.0


def app() -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


async def serve_once(endpoint: HttpEndpoint, port: int) -> None:
    supervisor = Supervisor([ActorSpec("http", endpoint.run)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(WAIT):
            await supervisor.ready.wait()
        assert endpoint.urls == [f"http://127.0.0.1:{port}"]
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/", timeout=WAIT)
        assert response.text == "hello"
        supervisor.request_shutdown()


async def test_each_start_serves_the_bound_socket_and_the_port_stays_ours() -> None:
    bound = listening_socket("127.0.0.1", 0)
    port = int(bound.getsockname()[1])
    try:
        endpoint = HttpEndpoint(app, host="127.0.0.1", port=port)
        endpoint.adopt(bound)
        await serve_once(endpoint, port)
        with pytest.raises(OSError), socket.socket() as other:
            other.bind(("127.0.0.1", port))
        await serve_once(endpoint, port)
    finally:
        bound.close()


def test_a_port_in_use_is_named_with_what_changes_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        ports = BoundPorts()
        use = PortUse("operator", "the operator listener", "127.0.0.1", port, "VPNBOT_HTTP__PORT")
        with pytest.raises(PortUnavailable) as refused:
            ports.bind([use])
        ports.close()
    assert f"127.0.0.1:{port}" in str(refused.value)
    assert "the operator listener" in str(refused.value)
    assert "VPNBOT_HTTP__PORT" in str(refused.value)
