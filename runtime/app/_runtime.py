"""Config -> plugins -> actor tree: the pieces of one running service, and how it runs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import stamina
import trio

from runtime.alerts import Alert, AlertPipeline, LogSink, Severity
from runtime.config import Settings
from runtime.logs import correlation, get_logger
from runtime.metrics import Metrics, SupervisionCollector
from runtime.plugin_api import LoadedPlugins, load_plugins
from runtime.supervision import ActorSpec, Restart, SdNotifier, Supervisor
from runtime.web import HttpEndpoint, build_app

from ._observer import RuntimeObserver, describe_failure
from ._policy import apply_policy


@dataclass
class Runtime:
    settings: Settings
    plugins: LoadedPlugins
    alerts: AlertPipeline
    metrics: Metrics
    supervisor: Supervisor
    http: HttpEndpoint | None
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def actor_boundary(name: str) -> Iterator[None]:
    """Each actor start and each unit of work gets its own correlation id."""
    with correlation(None, actor=name):
        yield


def core_actors(
    settings: Settings, alerts: AlertPipeline, http: HttpEndpoint | None
) -> list[ActorSpec]:
    """The runtime's own actors. Alerts start first so they stop last."""
    specs = [ActorSpec("alerts", alerts.run, critical=False, shutdown_timeout=5.0)]
    if http is not None:
        specs.append(ActorSpec("http", http.run, restart=Restart.PERMANENT, shutdown_timeout=5.0))
    return specs


def build_runtime(settings: Settings, *, environ: Mapping[str, str]) -> Runtime:
    """Load plugins and assemble the supervisor; raises ConfigError for bad actor policy."""
    # Retries log through runtime.failures; stamina's own hooks would write unstructured
    # lines and count into the global Prometheus registry that /metrics does not serve.
    stamina.instrumentation.set_on_retry_hooks([])
    plugins = load_plugins(settings, environ=environ)
    alerts = AlertPipeline(
        [LogSink(), *plugins.alert_sinks()],
        throttle_seconds=settings.alerts.throttle_seconds,
        queue_size=settings.alerts.queue_size,
    )
    for problem in plugins.problems:
        alerts.submit(
            Alert(
                severity=Severity.CRITICAL,
                key=f"plugin_failed:{problem.name}",
                component="plugins",
                title=f"plugin {problem.name} left out",
                text=f"{problem.stage} failed: {problem.error}",
            )
        )
    metrics = Metrics()
    holder: dict[str, Supervisor] = {}
    instance = settings.service.instance_id or f"{socket.gethostname()}-{os.getpid()}"
    info = {"service": settings.service.name, "instance": instance}

    def app() -> Any:
        return build_app(
            holder["supervisor"],
            metrics,
            extras=lambda: {**info, "alerts": alerts.stats.to_json()},
        )

    http = None
    if settings.http.enabled:
        http = HttpEndpoint(
            app,
            host=settings.http.host,
            port=settings.http.port,
            on_listening=lambda urls: get_logger("http").info("listening", urls=urls),
        )
    specs = [*core_actors(settings, alerts, http), *plugins.actors()]
    enabled = [s for s in specs if settings.actor_override(s.name).enabled is not False]
    tree = [apply_policy(s, settings.actor_override(s.name)) for s in enabled]
    supervisor = Supervisor(
        tree,
        observer=RuntimeObserver(metrics, alerts),
        describe_failure=describe_failure,
        notifier=SdNotifier(environ),
        boundary=actor_boundary,
    )
    holder["supervisor"] = supervisor
    metrics.register(SupervisionCollector(supervisor))
    return Runtime(settings, plugins, alerts, metrics, supervisor, http, info)


async def serve(runtime: Runtime) -> int:
    """Run until SIGTERM or SIGINT (exit 0) or an escalation (exit 75)."""
    log = get_logger("supervisor")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, runtime.supervisor)
        log.info(
            "starting",
            actors=[s.name for s in runtime.supervisor.statuses],
            plugins=[p.name for p in runtime.plugins.plugins],
        )
        code = await runtime.supervisor.run()
        nursery.cancel_scope.cancel()
    log.info("stopped", exit_code=code)
    return code


async def _stop_on_signal(supervisor: Supervisor) -> None:
    log = get_logger("supervisor")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal received: stopping", signal=signal.Signals(signum).name)
            supervisor.request_shutdown()
