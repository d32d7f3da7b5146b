"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor."""

from ._database import StartupError
from ._listeners import PUBLIC_HTTP_ACTOR, base_url, operator_url
from ._observer import RuntimeObserver, describe_failure, failure_dependency
from ._policy import apply_policy
from ._runtime import (
    BUILTIN_ACTOR_NAMES,
    ConfigReport,
    Runtime,
    build_runtime,
    check_configuration,
    core_actors,
    migrate,
    plugin_services,
    serve,
)
from ._updates import given_up_updates, render_given_up, replay_updates

__all__ = [
    "BUILTIN_ACTOR_NAMES",
    "PUBLIC_HTTP_ACTOR",
    "ConfigReport",
    "Runtime",
    "RuntimeObserver",
    "StartupError",
    "apply_policy",
    "base_url",
    "build_runtime",
    "check_configuration",
    "core_actors",
    "describe_failure",
    "failure_dependency",
    "given_up_updates",
    "migrate",
    "operator_url",
    "plugin_services",
    "render_given_up",
    "replay_updates",
    "serve",
]
