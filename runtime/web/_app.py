"""The two apps: the operator's (health, status, metrics) and the public one (webhooks).

Each is served on its own socket (``HttpEndpoint``), so exposing the webhooks through a
proxy never exposes the status page. Both answer ``/healthz`` and ``/readyz``: a load
balancer in front of the webhooks needs readiness as much as a local monitor does.
"""

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

from ._status import actor_summary

StatusExtras = Callable[[], dict[str, Any]]


def health_routes(supervisor: Supervisor) -> list[BaseRoute]:
    """``/healthz`` (the supervising loop beats) and ``/readyz`` (ready and not unavailable)."""

    async def healthz(request: Request) -> Response:
        alive = supervisor.alive(trio.current_time())
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def readyz(request: Request) -> Response:
        state = supervisor.system_state
        ready = supervisor.ready.is_set() and state is not SystemState.UNAVAILABLE
        return JSONResponse(
            {"ready": ready, "state": state.value}, status_code=200 if ready else 503
        )

    return [Route("/healthz", healthz), Route("/readyz", readyz)]


def operator_app(
    supervisor: Supervisor,
    metrics: Metrics,
    *,
    extras: StatusExtras | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """Health, ``/status``, ``/metrics``, and ``routes`` meant for operators (the sandbox's
    chat page)."""

    async def status(request: Request) -> Response:
        document: dict[str, Any] = {
            "state": supervisor.system_state.value,
            "ready": supervisor.ready.is_set(),
            "actors": [actor_summary(s.to_json()) for s in supervisor.statuses],
        }
        if extras is not None:
            document.update(extras())
        return JSONResponse(document)

    async def metrics_text(request: Request) -> Response:
        return Response(await metrics.render_fresh(), media_type=metrics.content_type)

    return Starlette(
        routes=[
            *health_routes(supervisor),
            Route("/status", status),
            Route("/metrics", metrics_text),
            *routes,
        ]
    )


def public_app(supervisor: Supervisor, *, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """Health and the webhooks: what the internet may reach, through a proxy."""
    return Starlette(routes=[*health_routes(supervisor), *routes])
