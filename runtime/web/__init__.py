"""HTTP: two listeners, one for operators and one for webhooks, each within request limits.

``operator_app`` serves ``/healthz``, ``/readyz``, ``/status`` and ``/metrics`` (and the
sandbox's chat page); ``public_app`` serves ``/healthz``, ``/readyz`` and the webhooks.
``HttpEndpoint`` runs one of them on its own socket as a supervised actor, behind
``BoundedRequests`` and the HTTP/1.1 server's header limits (``RequestLimits``).
"""

from ._actor import HttpEndpoint
from ._app import health_routes, operator_app, public_app
from ._limits import BoundedRequests, LimitedRoute, RequestLimits
from ._status import alert_summary, mask_ids

__all__ = [
    "BoundedRequests",
    "HttpEndpoint",
    "LimitedRoute",
    "RequestLimits",
    "alert_summary",
    "health_routes",
    "mask_ids",
    "operator_app",
    "public_app",
]
