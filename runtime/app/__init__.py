"""The composition of one service: config, plugins, alerts, metrics, HTTP and supervisor.

Names are imported on first use: the command line reaches ``runtime.app`` for every command,
and a command that only reads the configuration should not pay for the database driver, the
HTTP server or the bot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
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
        serve,
    )
    from ._services import plugin_services
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

_LAZY = {
    "StartupError": "._database",
    "PUBLIC_HTTP_ACTOR": "._listeners",
    "base_url": "._listeners",
    "operator_url": "._listeners",
    "RuntimeObserver": "._observer",
    "describe_failure": "._observer",
    "failure_dependency": "._observer",
    "apply_policy": "._policy",
    "BUILTIN_ACTOR_NAMES": "._runtime",
    "ConfigReport": "._runtime",
    "Runtime": "._runtime",
    "build_runtime": "._runtime",
    "check_configuration": "._runtime",
    "core_actors": "._runtime",
    "migrate": "._runtime",
    "serve": "._runtime",
    "plugin_services": "._services",
    "given_up_updates": "._updates",
    "render_given_up": "._updates",
    "replay_updates": "._updates",
}


__getattr__ = lazy_exports(__name__, _LAZY)
