"""``systemctl reload``: the configuration read again and applied without a restart.

SIGHUP reads the file and the credentials again (in a thread) and checks them as a start
would (``check_configuration``). A configuration that fails is refused whole: one log line
naming every bad key, one alert, and the running configuration stays. Keys a running
process cannot take (its listeners, its database, its identity, which plugins and actors
it runs: ``RESTART_ONLY``) are reported as needing a restart and keep their running
values; the rest applies: the settings the services hold, the catalog, billing and
access, the plugins (payment providers, VPN backends, alert sinks) built again from their
settings, then a planned restart of every actor built from the settings (the workers, the
bot, the plugins' actors): each stops as at a shutdown, its units in flight finishing, and
starts again from the new settings. What it leaves undone waits in the inbox and the
outbox, so nothing is lost or done twice. The runtime's own actors (alerts, the database
probe, the listeners) keep running.

systemd hears ``RELOADING=1`` before and ``READY=1`` after, with the outcome in
``STATUS=``; ``/status`` shows it under ``reload``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from runtime.alerts import Alert, LogSink, Severity
from runtime.config import ConfigError, ConfigProblem, Settings, load_settings
from runtime.config._diff import changed_keys, is_under, with_kept
from runtime.logs import add_secrets, get_logger, log_failure
from runtime.promo import seed_codes
from runtime.supervision import ActorSpec, SdNotifier
from runtime.workers import worker_actors

from ._preflight import Preflight
from ._runtime import (
    BUILTIN_ACTOR_NAMES,
    CORE_ACTOR_NAMES,
    Runtime,
    check_configuration,
    plugins_and_catalog,
)
from ._sighup import ConfigSource

RESTART_ONLY = (
    "service",
    "http",
    "database",
    "telegram.enabled",
    "telegram.token",
    "telegram.api_base",
    "bot.mode",
    "bot.webhook_url",
    "bot.webhook_secret",
    "alerts.queue_size",
    "wakeups.enabled",
    "plugins.paths",
    "plugins.disabled",
    *(f"actors.{name}" for name in CORE_ACTOR_NAMES),
)
"""Keys that take a restart: the listeners and their limits, the database and its pool,
the logging and the instance's identity, the bot's token and mode, the alert queue, which
plugins load, the runtime's own actors. ``actors.<name>.enabled`` too: the tree's shape."""

_SHOWN = 10
"""Keys named in a log line, an alert or a status, at most."""

_log = get_logger("config")


def needs_restart(path: str) -> bool:
    """Whether a change of the key at ``path`` waits for a restart."""
    tree_shape = path.startswith("actors.") and path.endswith(".enabled")
    return tree_shape or is_under(path, RESTART_ONLY)


@dataclass(frozen=True)
class Reloaded:
    """What one reload did."""

    outcome: str
    """``applied``, ``unchanged`` (nothing that applies live changed), ``refused`` or
    ``failed`` (a bug: logged, and the service may run partly on the new settings)."""
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)

    def summary(self) -> str:
        text = {
            "applied": f"configuration reloaded ({len(self.applied)} keys)",
            "unchanged": "configuration reloaded: nothing to apply",
            "refused": "new configuration refused; the running one stays",
            "failed": "configuration reload failed",
        }[self.outcome]
        if self.needs_restart:
            text += "; needs a restart: " + _listed(self.needs_restart)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "at": time.time(),
            "applied": self.applied[:_SHOWN],
            "needs_restart": self.needs_restart[:_SHOWN],
            "restarted": self.restarted,
            "problems": [f"{p.path}: {p.reason}" for p in self.problems[:_SHOWN]],
        }


def _listed(paths: Sequence[str]) -> str:
    more = len(paths) - _SHOWN
    return ", ".join(paths[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class _Rebuilt:
    specs: list[ActorSpec]
    not_running: list[str]


class Reloader:
    """Reloads ``runtime`` from ``source``, one reload at a time."""

    def __init__(self, runtime: Runtime, source: ConfigSource) -> None:
        self.runtime = runtime
        self.source = source
        self.notifier = SdNotifier(source.environ)
        self._lock = trio.Lock()

    async def reload(self) -> Reloaded:
        async with self._lock:
            self.notifier.reloading("reloading the configuration")
            _log.info("reloading the configuration", operation="config.reload")
            try:
                done = await self._reload()
            except Exception as exc:
                log_failure(_log, exc, operation="config.reload")
                done = Reloaded("failed")
            self.runtime.info["reload"] = done.to_json()
            state = self.runtime.supervisor.system_state.value
            self.notifier.ready(f"{state}; {done.summary()}")
            return done

    async def _reload(self) -> Reloaded:
        runtime = self.runtime
        try:
            new = await trio.to_thread.run_sync(
                partial(load_settings, self.source.path, environ=self.source.environ)
            )
            report = check_configuration(new, environ=self.source.environ)
        except ConfigError as exc:
            return self._refused(exc.problems)
        broken = {p.name for p in report.plugins.problems} - {
            p.name for p in runtime.plugins.problems
        }
        if broken:
            return self._refused(
                [
                    ConfigProblem(f"plugins.settings.{p.name}", f"the plugin fails: {p.error}")
                    for p in report.plugins.problems
                    if p.name in broken
                ]
            )
        old = runtime.settings
        changed = changed_keys(old, new)
        later = [path for path in changed if needs_restart(path)]
        now = [path for path in changed if not needs_restart(path)]
        if later:
            _log.warning(
                "configuration changes that need a restart",
                operation="config.reload",
                keys=later[:_SHOWN],
                outcome="skipped",
            )
        if not now:
            _log.info("configuration reloaded: nothing to apply", operation="config.reload")
            return Reloaded("unchanged", needs_restart=later)
        try:
            settings = with_kept(new, old, later)
            rebuilt = self._swap(settings)
        except ConfigError as exc:
            note = ConfigProblem(
                "reload", "the change cannot apply without the keys that need a restart"
            )
            return self._refused([*exc.problems, note], needs_restart=later)
        if settings.promo != old.promo:
            await seed_codes(runtime.services.db, settings.promo)
        restarted = await runtime.supervisor.replace(rebuilt.specs)
        later += [f"actors.{name}" for name in rebuilt.not_running]
        _log.info(
            "configuration reloaded",
            operation="config.reload",
            keys=now[:_SHOWN],
            restarted=restarted,
            needs_restart=later[:_SHOWN],
            outcome="success",
        )
        return Reloaded("applied", applied=now, needs_restart=later, restarted=restarted)

    def _swap(self, settings: Settings) -> _Rebuilt:
        """Build everything the settings make and put it in place, or change nothing
        (``ConfigError``). Never awaits: no task sees half of it."""
        runtime = self.runtime
        services = runtime.services
        previous = services.settings
        services.settings = settings
        try:
            preflight = Preflight()
            plugins, catalog = plugins_and_catalog(
                settings, services, self.source.environ, preflight
            )
            bot = runtime.build_bot
            specs = [
                *(spec for spec in runtime.supervisor.specs if spec.name in CORE_ACTOR_NAMES),
                *worker_actors(services),
                *(bot(services, runtime.actor_table) if bot and runtime.actor_table else []),
                *plugins.actors(),
            ]
            tree = preflight.actor_tree(
                settings, specs, builtin=BUILTIN_ACTOR_NAMES, plugins=plugins
            )
            preflight.raise_problems()
        except BaseException:
            services.settings = previous
            raise
        runtime.settings = settings
        runtime.plugins = plugins
        runtime.current["plugins"] = plugins
        runtime.catalog = catalog
        if runtime.recent is not None:
            runtime.alerts.reconfigure(
                [LogSink(), runtime.recent, *plugins.alert_sinks()],
                throttle_seconds=settings.alerts.throttle_seconds,
            )
        if runtime.observer is not None:
            runtime.observer.thresholds(
                unavailable_after=settings.alerts.unavailable_after_seconds,
                degraded_after=settings.alerts.degraded_after_seconds,
            )
        runtime.start_domain()
        add_secrets(settings.secret_values())
        for warning in preflight.warnings:
            _log.warning("config warning", path=warning.path, reason=warning.reason)
        running = {spec.name for spec in runtime.supervisor.specs}
        built = {spec.name for spec in tree}
        return _Rebuilt(
            [spec for spec in tree if spec.name in running and spec.name not in CORE_ACTOR_NAMES],
            sorted(running ^ built),
        )

    def _refused(
        self, problems: Sequence[ConfigProblem], *, needs_restart: Sequence[str] = ()
    ) -> Reloaded:
        listed = [f"{p.path}: {p.reason}" for p in problems[:_SHOWN]]
        _log.error(
            "new configuration refused; the running one stays",
            operation="config.reload",
            problems=listed,
            outcome="failed",
        )
        self.runtime.alerts.submit(
            Alert(
                severity=Severity.WARNING,
                key="config_reload_refused",
                component="config",
                title="a configuration reload was refused; the running configuration stays",
                text="; ".join(listed),
            )
        )
        return Reloaded("refused", needs_restart=list(needs_restart), problems=list(problems))
