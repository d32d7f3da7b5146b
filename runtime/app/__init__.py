"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor."""

from ._database import StartupError
from ._observer import RuntimeObserver, describe_failure, failure_dependency
from ._policy import apply_policy
from ._runtime import Runtime, build_runtime, core_actors, migrate, serve

__all__ = [
    "Runtime",
    "RuntimeObserver",
    "StartupError",
    "apply_policy",
    "build_runtime",
    "core_actors",
    "describe_failure",
    "failure_dependency",
    "migrate",
    "serve",
]
