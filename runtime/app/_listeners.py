"""The two HTTP listeners from ``[http]``: operators' and the public one, same limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.config import HttpSettings
from runtime.logs import get_logger

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from runtime.web import HttpEndpoint, RequestLimits

PUBLIC_HTTP_ACTOR = "http_public"

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def base_url(host: str, port: int) -> str:
    """Where a local client reaches a listener bound to ``host:port`` (a wildcard address
    through loopback)."""
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def operator_url(http: HttpSettings) -> str:
    """The operator listener's base URL, as ``vpnbot status`` reaches it."""
    return base_url(http.host, http.port)


def request_limits(http: HttpSettings) -> RequestLimits:
    from runtime.web import RequestLimits

    limits = http.limits
    return RequestLimits(
        max_body_bytes=limits.max_body_bytes,
        body_timeout_seconds=limits.body_timeout_seconds,
        max_header_bytes=limits.max_header_bytes,
        header_timeout_seconds=limits.header_timeout_seconds,
    )


def listeners(
    http: HttpSettings, *, operator: Callable[[], Starlette], public: Callable[[], Starlette]
) -> tuple[HttpEndpoint | None, HttpEndpoint | None]:
    """The operator listener serving ``operator()`` and the public one serving ``public()``,
    each None when disabled."""
    from runtime.web import HttpEndpoint

    limits = request_limits(http)
    log = get_logger("http")

    def endpoint(app: Callable[[], Starlette], host: str, port: int, name: str) -> HttpEndpoint:
        return HttpEndpoint(
            app,
            host=host,
            port=port,
            limits=limits,
            name=name,
            on_listening=lambda urls: log.info("listening", listener=name, urls=urls),
        )

    return (
        endpoint(operator, http.host, http.port, "operator") if http.enabled else None,
        endpoint(public, http.public.host, http.public.port, "public")
        if http.public.enabled
        else None,
    )
