"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor."""

from ._database import StartupError
from ._observer import RuntimeObserver, describe_failure
from ._policy import apply_policy
from ._runtime import Runtime, build_runtime, core_actors, migrate, serve
from ._updates import given_up_updates, render_given_up, replay_updates

__all__ = [
    "Runtime",
    "RuntimeObserver",
    "StartupError",
    "apply_policy",
    "build_runtime",
    "core_actors",
    "describe_failure",
    "given_up_updates",
    "migrate",
    "render_given_up",
    "replay_updates",
    "serve",
]
