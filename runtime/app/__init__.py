"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor."""

from ._database import StartupError
from ._listeners import PUBLIC_HTTP_ACTOR, base_url, operator_url
from ._observer import RuntimeObserver, describe_failure
from ._policy import apply_policy
from ._runtime import Runtime, build_runtime, core_actors, migrate, serve

__all__ = [
    "PUBLIC_HTTP_ACTOR",
    "Runtime",
    "RuntimeObserver",
    "StartupError",
    "apply_policy",
    "base_url",
    "build_runtime",
    "core_actors",
    "describe_failure",
    "migrate",
    "operator_url",
    "serve",
]
