from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.metrics import Metrics
from runtime.supervision import Supervisor, SystemState

StatusExtras = Callable[[], dict[str, Any]]


def build_app(
    supervisor: Supervisor,
    metrics: Metrics,
    *,
    extras: StatusExtras | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """An ASGI app over the supervisor's live state; ``routes`` add webhooks and the like."""

    async def healthz(request: Request) -> Response:
        alive = supervisor.alive(trio.current_time())
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def readyz(request: Request) -> Response:
        state = supervisor.system_state
        ready = supervisor.ready.is_set() and state is not SystemState.UNAVAILABLE
        return JSONResponse(
            {"ready": ready, "state": state.value}, status_code=200 if ready else 503
        )

    async def status(request: Request) -> Response:
        document: dict[str, Any] = {
            "state": supervisor.system_state.value,
            "ready": supervisor.ready.is_set(),
            "actors": [s.to_json() for s in supervisor.statuses],
        }
        if extras is not None:
            document.update(extras())
        return JSONResponse(document)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    core = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/status", status),
        Route("/metrics", metrics_text),
    ]
    return Starlette(routes=[*core, *routes])
