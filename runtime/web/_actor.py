from __future__ import annotations

from collections.abc import Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp

from runtime.supervision import ActorContext


class HttpEndpoint:
    """Serves an ASGI app with hypercorn on trio as a supervised actor.

    The actor is ready once the socket is bound; ``urls`` then holds where it listens
    (useful with port 0). A stop request lets hypercorn finish requests in flight. The app
    is built on start, so it may refer to things created after the endpoint.
    """

    def __init__(
        self,
        app: Callable[[], ASGIApp],
        *,
        host: str,
        port: int,
        on_listening: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._on_listening = on_listening
        self.urls: list[str] = []

    def _config(self) -> Config:
        config = Config()
        host = f"[{self._host}]" if ":" in self._host else self._host
        config.bind = [f"{host}:{self._port}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 3.0
        return config

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
        await serve(
            self._app(),  # type: ignore[arg-type]
            self._config(),
            shutdown_trigger=ctx.stop_requested.wait,
            task_status=task_status,
        )
