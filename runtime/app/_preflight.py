"""What ``vpnbot run`` refuses before it starts, gathered while the runtime is assembled.

The runtime is assembled the same way to run it and to check a configuration
(``vpnbot check-config``), so both refuse the same things: the settings a service needs to
be reached, the plugins' own settings, plans against the loaded plugins, and the
``[actors.<name>]`` tables against the actors there are. Every problem is collected and
raised once, so an operator fixes them all in one go.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from runtime.config import ConfigError, ConfigProblem, Settings, production_problems, suggest
from runtime.plugin_api import LoadedPlugins
from runtime.supervision import ActorSpec

from ._policy import apply_policy


@dataclass
class Preflight:
    """Problems (the configuration is refused: exit 78) and warnings (it runs, but something
    in it has no effect), in the order they were found."""

    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)

    def require_production(self, settings: Settings) -> None:
        self.problems.extend(production_problems(settings))

    def load_plugins(self, load: Callable[[], LoadedPlugins]) -> LoadedPlugins:
        """The plugins ``load`` returns; when their settings are wrong, every problem so far.

        Without the plugins nothing else can be checked truthfully (every plan would lack
        its backend), so this raises at once.
        """
        try:
            return load()
        except ConfigError as exc:
            raise ConfigError([*self.problems, *exc.problems]) from None

    def add(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems.extend(problems)

    def actor_tree(
        self,
        settings: Settings,
        specs: Sequence[ActorSpec],
        *,
        builtin: Collection[str],
        plugins: LoadedPlugins,
    ) -> list[ActorSpec]:
        """The specs ``[actors.<name>]`` leaves enabled, with its policy applied.

        ``builtin`` names every actor the runtime itself may run, whether or not this
        configuration runs it. A table naming no actor at all is a problem (a typo would
        otherwise leave the actor it meant on its defaults), unless a plugin was left out:
        its actors cannot be known, so the table is only a warning then.
        """
        running = {spec.name for spec in specs}
        plugin_actors = {spec.name for spec in plugins.actors()}
        self.problems.extend(_clashes(builtin, plugins))
        left_out = [p.name for p in plugins.problems] + [p.name for p in plugins.disabled]
        known = sorted(set(builtin) | plugin_actors)
        for name in settings.actors:
            path = f"actors.{name}"
            if name in running:
                continue
            if name in known:
                self.warnings.append(
                    ConfigProblem(path, "not run with this configuration: has no effect")
                )
            elif left_out:
                self.warnings.append(
                    ConfigProblem(
                        path,
                        "no actor has that name; it may be one of a plugin left out"
                        f" ({', '.join(left_out)})",
                    )
                )
            else:
                self.problems.append(ConfigProblem(path, _unknown_actor(name, known)))
        tree = []
        for spec in specs:
            override = settings.actor_override(spec.name)
            if override.enabled is False:
                continue
            try:
                tree.append(apply_policy(spec, override))
            except ConfigError as exc:
                self.problems.extend(exc.problems)
        return tree

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _unknown_actor(name: str, known: Sequence[str]) -> str:
    match = suggest(name, known)
    if match is not None:
        return f"no actor has that name (did you mean actors.{match}?)"
    return f"no actor has that name; the actors are {', '.join(known)}"


def _clashes(builtin: Collection[str], plugins: LoadedPlugins) -> list[ConfigProblem]:
    """Plugin actors named like one of ours: the supervisor needs unique names."""
    return [
        ConfigProblem(
            "plugins",
            f"the plugin {info.name!r} has an actor named {name!r} like a built-in one;"
            " leave the plugin out (plugins.disabled) until it renames it",
        )
        for info in plugins.plugins
        for name in info.provides.get("actors", [])
        if name in builtin
    ]
