"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor."""

from ._observer import RuntimeObserver, describe_failure
from ._policy import apply_policy
from ._runtime import Runtime, build_runtime, core_actors, serve

__all__ = [
    "Runtime",
    "RuntimeObserver",
    "apply_policy",
    "build_runtime",
    "core_actors",
    "describe_failure",
    "serve",
]
