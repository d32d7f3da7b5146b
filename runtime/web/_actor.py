from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from runtime.supervision import ActorContext

from ._limits import BoundedRequests, RequestLimits

if TYPE_CHECKING:
    from hypercorn.config import Config
    from starlette.applications import Starlette

DEFAULT_LIMITS = RequestLimits()
_APP_QUEUE = 2
"""Body chunks (up to 64 KiB each) hypercorn holds per request while the route is not
reading: what an unread upload can cost us, per connection."""


def hypercorn_bind(sock: socket.socket) -> str:
    """hypercorn's ``bind`` to serve ``sock``: a duplicate of it, which hypercorn owns and
    closes when it stops."""
    return f"fd://{os.dup(sock.fileno())}"


class HttpEndpoint:
    """Serves a starlette app with hypercorn on trio as a supervised actor, within ``limits``,
    over HTTP/1.1 only (``keep_to_http1``).

    The actor is ready once the socket is bound; ``urls`` then holds where it listens
    (useful with port 0). A stop request lets hypercorn finish requests in flight. The app
    is built on start, so it may refer to things created after the endpoint.
    """

    def __init__(
        self,
        app: Callable[[], Starlette],
        *,
        host: str,
        port: int,
        limits: RequestLimits = DEFAULT_LIMITS,
        name: str = "http",
        on_listening: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self.limits = limits
        self.name = name
        self._on_listening = on_listening
        self.urls: list[str] = []
        self._socket: socket.socket | None = None

    def adopt(self, sock: socket.socket | None) -> None:
        """Serve ``sock`` (bound and listening already) instead of binding ``host:port``.

        The caller keeps it open: each start serves a duplicate, so the port stays ours
        across restarts of the actor."""
        self._socket = sock

    def _config(self) -> Config:
        from hypercorn.config import Config

        config = Config()
        host = f"[{self._host}]" if ":" in self._host else self._host
        config.bind = [f"{host}:{self._port}"]
        if self._socket is not None:
            config.bind = [hypercorn_bind(self._socket)]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 3.0
        # Hypercorn's keep-alive timer runs from the connection's start (or its previous
        # response) until a complete request head: it is the header deadline too.
        config.keep_alive_timeout = self.limits.header_timeout_seconds
        config.h11_max_incomplete_size = self.limits.max_header_bytes
        config.max_app_queue_size = _APP_QUEUE
        return config

    def _bounded_app(self) -> BoundedRequests:
        app = self._app()
        return BoundedRequests(app, self.limits, routes=app.routes, name=self.name)

    async def run(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(self._serve, ctx)
            self.urls = urls
            if self._on_listening is not None:
                self._on_listening(urls)
            task_status.started()

    async def _serve(
        self, ctx: ActorContext, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # hypercorn is imported when a listener starts: building one (to check a
        # configuration) does not need it.
        from hypercorn.trio import serve

        from ._http1 import keep_to_http1

        keep_to_http1()
        await serve(
            self._bounded_app(),  # type: ignore[arg-type]
            self._config(),
            shutdown_trigger=ctx.stop_requested.wait,
            task_status=task_status,
        )
