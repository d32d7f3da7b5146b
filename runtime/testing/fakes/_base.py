"""The base of every fake peer: a real HTTP server on loopback with faults on demand."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class Fault:
    """What the next matching request gets instead of the fake's own answer."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times: int = 1
    path_prefix: str = ""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakePeer:
    """Subclass and implement ``routes``; tests drive it with the fault methods.

    ``running()`` serves it with hypercorn on 127.0.0.1 (an ephemeral port) inside the
    current trio run and yields the base URL; ``serve(port=...)`` serves on a given port.
    Every request is recorded in ``requests``.
    """

    name = "peer"

    def __init__(self, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._certfile = certfile
        self._keyfile = keyfile
        self.url = ""
        self.revision = 0
        """Grows with every change to the state a subclass keeps (``_touch``): the sandbox
        saves a fake's ``snapshot`` when it moves."""
        self._changed = trio.Event()

    async def wait_changed(self, revision: int) -> int:
        """Wait until ``revision`` is behind; returns the current one."""
        while self.revision == revision:
            await self._changed.wait()
        return self.revision

    def _touch(self) -> None:
        self.revision += 1
        self._changed.set()
        self._changed = trio.Event()

    # -- to implement ----------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        raise NotImplementedError

    # -- faults ----------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_prefix: str = "",
    ) -> None:
        """Answer the next ``times`` requests (under ``path_prefix``) with ``status``."""
        self._faults.append(
            Fault(status, body, dict(headers or {}), times=times, path_prefix=path_prefix)
        )

    def rate_limit_next(self, retry_after: float, *, times: int = 1) -> None:
        self.fail_next(
            429,
            body={"detail": "Too Many Requests"},
            headers={"Retry-After": str(int(retry_after))},
            times=times,
        )

    def delay_next(self, seconds: float, *, times: int = 1, path_prefix: str = "") -> None:
        """Answer normally, but only after ``seconds`` (a slow or hanging peer)."""
        self._faults.append(Fault(delay=seconds, times=times, path_prefix=path_prefix))

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.startswith(path_prefix)
        ]

    # -- serving ---------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if path.startswith(fault.path_prefix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def app(self) -> ASGIApp:
        inner = Starlette(routes=list(self.routes()))
        peer = self

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            request = Request(scope, receive)
            body = await request.body()
            peer.requests.append(
                RecordedRequest(
                    scope["method"],
                    scope["path"],
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                )
            )
            fault = peer._take_fault(scope["path"])
            if fault is not None and fault.delay:
                await trio.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                response: Response = (
                    JSONResponse(fault.body, fault.status, headers=fault.headers)
                    if not isinstance(fault.body, (str, bytes))
                    else Response(fault.body, fault.status, headers=fault.headers)
                )
                await response(scope, receive, send)
                return

            async def replay() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            await inner(scope, replay, send)

        return app

    async def serve(
        self, *, port: int = 0, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on 127.0.0.1 until cancelled; ``task_status.started(url)``.

        ``port``: 0 for any free one; another is bound here first, so one in use raises
        ``OSError`` from this call (not from inside a task group) before anything starts."""
        config = Config()
        config.accesslog = None
        config.errorlog = None
        if self._certfile:
            config.certfile = self._certfile
            config.keyfile = self._keyfile
        sock = None
        if port:
            from runtime.web._server import listening_socket

            sock = listening_socket("127.0.0.1", port)
        # hypercorn serves (and closes) a duplicate of the socket bound here
        config.bind = [f"fd://{os.dup(sock.fileno())}" if sock is not None else "127.0.0.1:0"]
        try:
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(
                    lambda task_status: serve(self.app(), config, task_status=task_status)  # type: ignore[arg-type]
                )
                self.url = binds[0]
                task_status.started(self.url)
        finally:
            if sock is not None:
                sock.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with trio.open_nursery() as nursery:
            url: str = await nursery.start(self.serve)
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()
