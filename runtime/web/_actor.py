from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from runtime.supervision import ActorContext

from ._limits import BoundedRequests, RequestLimits
from ._server import ServerLimits, listener_for, listening_socket, serve

if TYPE_CHECKING:
    from starlette.applications import Starlette

DEFAULT_LIMITS = RequestLimits()


class HttpEndpoint:
    """Serves a starlette app on trio as a supervised actor, within ``limits``, over
    HTTP/1.1 only (``_server``).

    The actor is ready once the socket is bound; ``urls`` then holds where it listens
    (useful with port 0). A stop request lets requests in flight finish. The app is built
    on start, so it may refer to things created after the endpoint.
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
        if self._socket is not None:
            listener = listener_for(self._socket)
        else:
            with listening_socket(self._host, self._port) as bound:
                listener = listener_for(bound)
        await serve(
            self._bounded_app(),
            listener,
            limits=ServerLimits(
                header_timeout=self.limits.header_timeout_seconds,
                max_header_bytes=self.limits.max_header_bytes,
            ),
            stop=ctx.stop_requested.wait,
            task_status=task_status,
        )
