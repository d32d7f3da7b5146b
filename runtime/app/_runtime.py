"""Config -> plugins -> actor tree: the pieces of one running service, and how it runs."""

from __future__ import annotations

import contextlib
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stamina
import trio
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from runtime.access import Access
from runtime.alerts import Alert, AlertPipeline, LogSink, Severity
from runtime.billing import Billing, payment_webhook_routes
from runtime.bot import ACTOR_NAMES as BOT_ACTOR_NAMES
from runtime.bot import ActorTable, bot_actors, declared_bot_actors, telegram_webhook_routes
from runtime.bridge import asyncio_loop
from runtime.catalog import Catalog
from runtime.config import ConfigProblem, Settings
from runtime.failures import classify
from runtime.logs import correlation, get_logger
from runtime.metrics import AlertsCollector, BacklogCollector, Metrics, SupervisionCollector
from runtime.plugin_api import LoadedPlugins, Services, capabilities_of, load_plugins
from runtime.promo import seed_codes
from runtime.storage import Database, MigrationError, apply_migrations, backlog
from runtime.storage.instances import InstanceLock
from runtime.supervision import ActorSpec, Restart, SdNotifier, Supervisor
from runtime.traffic import package_problems
from runtime.web import HttpEndpoint, alert_summary, operator_app, public_app
from runtime.workers import NAMES as WORKER_ACTOR_NAMES
from runtime.workers import worker_actors

from ._database import (
    DATABASE_ACTOR,
    OpenDatabase,
    StartupError,
    connect,
    database_probe,
    ensure_schema,
)
from ._early import EarlyStart
from ._identity import InstanceInUse, claim_instance, keep_instance, take_back
from ._listeners import PUBLIC_HTTP_ACTOR, listeners
from ._observer import RuntimeObserver, describe_failure, failure_dependency
from ._preflight import Preflight
from ._services import plugin_services
from ._settle import settle_when_ready
from ._sighup import ConfigSource, reload_on_signal
from .exit_codes import EX_CONFIG, EX_OK, EX_TEMPFAIL


@dataclass
class Runtime:
    settings: Settings
    services: Services
    plugins: LoadedPlugins
    alerts: AlertPipeline
    metrics: Metrics
    supervisor: Supervisor
    http: HttpEndpoint | None
    """The operator listener (``[http]``)."""
    catalog: Catalog
    info: dict[str, Any] = field(default_factory=dict)
    config_warnings: list[ConfigProblem] = field(default_factory=list)
    """What the configuration says that has no effect (logged at start)."""
    public_http: HttpEndpoint | None = None
    """The public listener (``[http.public]``): the webhooks."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """The environment the configuration was read with (overrides, credentials)."""
    build_bot: BotActors | None = None
    """Builds the bot's actors: a reload builds them again from the new settings."""
    actor_table: ActorTable | None = None
    recent: RecentAlerts | None = None
    observer: RuntimeObserver | None = None
    current: dict[str, LoadedPlugins] = field(default_factory=dict)
    """The plugins the public listener serves (``current["plugins"]``)."""

    def start_domain(self) -> None:
        """Billing and access, once the database is connected."""
        db = self.services.db
        providers = {p.name: p for p in self.plugins.payment_providers()}
        backends = {b.name: b for b in self.plugins.vpn_backends()}
        billing = self.settings.billing
        self.services.provide_domain(
            Billing(
                db,
                self.catalog,
                providers,
                self.alerts,
                balance_currency=billing.balance_currency,
                invoice_ttl_minutes=billing.invoice_ttl_minutes,
                activation_max_attempts=billing.activation_max_attempts,
                discounts_enabled=self.settings.promo.enabled,
                min_prices=self.settings.promo.min_price,
            ),
            Access(
                db,
                self.catalog,
                backends,
                self.alerts,
                max_attempts=billing.activation_max_attempts,
            ),
        )


@contextlib.contextmanager
def actor_boundary(name: str) -> Iterator[None]:
    """Each actor start and each unit of work gets its own correlation id."""
    with correlation(None, actor=name):
        yield


def core_actors(
    services: Services,
    alerts: AlertPipeline,
    http: HttpEndpoint | None,
    public_http: HttpEndpoint | None = None,
) -> list[ActorSpec]:
    """The runtime's own actors. Alerts start first so they stop last.

    The public listener is critical only in webhook mode: without it no update arrives,
    while payment webhooks have the watcher and reconciliation behind them.
    """
    specs = [
        ActorSpec("alerts", alerts.run, critical=False, shutdown_timeout=5.0),
        database_probe(services),
    ]
    if http is not None:
        specs.append(ActorSpec("http", http.run, restart=Restart.PERMANENT, shutdown_timeout=5.0))
    if public_http is not None:
        specs.append(
            ActorSpec(
                PUBLIC_HTTP_ACTOR,
                public_http.run,
                restart=Restart.PERMANENT,
                critical=services.settings.bot.mode == "webhook",
                shutdown_timeout=5.0,
            )
        )
    return specs


class RecentAlerts:
    """A sink that keeps the last alerts for /status (and the sandbox page), as summaries
    without their keys and texts (``runtime.web.alert_summary``)."""

    name = "recent"

    def __init__(self, keep: int = 20) -> None:
        self.alerts: deque[Alert] = deque(maxlen=keep)

    async def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def to_json(self) -> list[dict[str, Any]]:
        return [alert_summary(alert) for alert in self.alerts]


CORE_ACTOR_NAMES = ("alerts", DATABASE_ACTOR, "http", PUBLIC_HTTP_ACTOR)
BUILTIN_ACTOR_NAMES = (*CORE_ACTOR_NAMES, *WORKER_ACTOR_NAMES, *BOT_ACTOR_NAMES)
"""Every actor the runtime itself may run; which ones run depends on the configuration."""

BotActors = Callable[[Services, ActorTable], list[ActorSpec]]


@dataclass(frozen=True)
class ConfigReport:
    """What ``check_configuration`` found in a configuration it accepts."""

    plugins: LoadedPlugins
    warnings: list[ConfigProblem]
    """Settings that have no effect: the service runs, but not as the file says."""
    actors: list[str]
    """The actors ``vpnbot run`` would start, in order."""


def build_runtime(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    operator_routes: Sequence[BaseRoute] = (),
    production: bool = True,
) -> Runtime:
    """Load plugins, check the configuration against them, and assemble the supervisor.

    Raises ``ConfigError`` listing every problem (``check_configuration`` finds the same);
    logs the warnings. ``production`` requires what serving users takes (a bot token, unless
    ``telegram.enabled`` is false); the sandbox supplies its own Telegram.
    ``operator_routes`` join /status and /metrics on the operator listener (the sandbox's
    chat page); webhooks go on the public one.
    """

    def bot(services: Services, actor_table: ActorTable) -> list[ActorSpec]:
        return bot_actors(services, actor_table=actor_table)

    runtime = _assemble(
        settings,
        environ=environ,
        production=production,
        bot=bot,
        operator_routes=operator_routes,
    )
    log = get_logger("config")
    for warning in runtime.config_warnings:
        log.warning("config warning", path=warning.path, reason=warning.reason)
    return runtime


def check_configuration(
    settings: Settings, *, environ: Mapping[str, str], production: bool = True
) -> ConfigReport:
    """Everything ``build_runtime`` refuses, found by the same code (``ConfigError``).

    Nothing is started or connected, and the bot's actors are only declared: building the
    bot imports aiogram, which takes seconds and checks nothing more.
    """

    def bot(services: Services, actor_table: ActorTable) -> list[ActorSpec]:
        return declared_bot_actors(services.settings)

    runtime = _assemble(settings, environ=environ, production=production, bot=bot)
    return ConfigReport(
        runtime.plugins,
        runtime.config_warnings,
        [status.name for status in runtime.supervisor.statuses],
    )


def _assemble(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    production: bool,
    bot: BotActors,
    operator_routes: Sequence[BaseRoute] = (),
) -> Runtime:
    # Retries log through runtime.failures; stamina's own hooks would write unstructured
    # lines and count into the global Prometheus registry that /metrics does not serve.
    stamina.instrumentation.set_on_retry_hooks([])
    services = plugin_services(settings)
    metrics, instance = services.metrics, services.instance_id
    preflight = Preflight()
    if production:
        preflight.require_production(settings)
    plugins, catalog = plugins_and_catalog(settings, services, environ, preflight)
    recent = RecentAlerts()
    alerts = AlertPipeline(
        [LogSink(), recent, *plugins.alert_sinks()],
        throttle_seconds=settings.alerts.throttle_seconds,
        queue_size=settings.alerts.queue_size,
    )
    services.provide_alerts(alerts)
    holder: dict[str, Supervisor] = {}
    current = {"plugins": plugins}
    """What the public listener reads per request: a reload replaces the plugins."""
    info = {"service": settings.service.name, "instance": instance}

    def operator() -> Starlette:
        return operator_app(
            holder["supervisor"],
            metrics,
            extras=lambda: {
                **info,
                "alerts": alerts.stats.to_json(),
                "recent_alerts": recent.to_json(),
            },
            routes=operator_routes,
        )

    def public() -> Starlette:
        return public_app(
            holder["supervisor"],
            routes=[
                *payment_webhook_routes(
                    lambda: services.billing,
                    providers=lambda: current["plugins"].payment_providers(),
                ),
                *telegram_webhook_routes(services),
            ],
        )

    http, public_http = listeners(settings.http, operator=operator, public=public)

    def actor_table() -> dict[str, Any]:
        supervisor = holder["supervisor"]
        return {
            "state": supervisor.system_state.value,
            "ready": supervisor.ready.is_set(),
            "actors": [status.to_json() for status in supervisor.statuses],
        }

    specs = [
        *core_actors(services, alerts, http, public_http),
        *worker_actors(services),
        *bot(services, actor_table),
        *plugins.actors(),
    ]
    tree = preflight.actor_tree(settings, specs, builtin=BUILTIN_ACTOR_NAMES, plugins=plugins)
    preflight.raise_problems()
    for problem in plugins.problems:
        alerts.submit(problem.to_alert())
    observer = RuntimeObserver(
        metrics,
        alerts,
        unavailable_after=settings.alerts.unavailable_after_seconds,
        degraded_after=settings.alerts.degraded_after_seconds,
    )
    supervisor = Supervisor(
        tree,
        observer=observer,
        describe_failure=describe_failure,
        dependency_of=failure_dependency,
        notifier=SdNotifier(environ),
        boundary=actor_boundary,
    )
    holder["supervisor"] = supervisor
    metrics.register(SupervisionCollector(supervisor))
    metrics.register(AlertsCollector(alerts))
    waiting = BacklogCollector(lambda: backlog.read(services.db))
    metrics.register(waiting)
    metrics.refresh_before_render(waiting.refresh)
    return Runtime(
        settings,
        services,
        plugins,
        alerts,
        metrics,
        supervisor,
        http,
        catalog,
        info,
        config_warnings=preflight.warnings,
        public_http=public_http,
        environ=environ,
        build_bot=bot,
        actor_table=actor_table,
        recent=recent,
        observer=observer,
        current=current,
    )


def plugins_and_catalog(
    settings: Settings, services: Services, environ: Mapping[str, str], preflight: Preflight
) -> tuple[LoadedPlugins, Catalog]:
    """The plugins ``settings`` load and the catalog, checked against each other."""
    plugins = preflight.load_plugins(lambda: load_plugins(settings, services, environ=environ))
    catalog = Catalog.from_settings(settings)
    providers = [p.name for p in plugins.payment_providers()]
    preflight.add(
        catalog.problems(
            backends={b.name: capabilities_of(b) for b in plugins.vpn_backends()},
            providers=providers,
        )
    )
    preflight.add(
        package_problems(
            settings.traffic,
            providers=providers,
            limited_plans=any(plan.traffic_limit_bytes for plan in catalog.plans),
        )
    )
    return plugins, catalog


OnConnected = Callable[[Database], Awaitable[None]]


async def serve(
    runtime: Runtime,
    *,
    early: EarlyStart | None = None,
    on_connected: OnConnected | None = None,
    config: Path | None = None,
) -> int:
    """Open the asyncio loop and the database, then supervise until a signal or escalation.

    Returns the exit code: 0 after SIGTERM/SIGINT (at any point of the start too), 75 after
    an escalation or when the database is unreachable, 78 when the database needs an
    operator. ``early`` holds what the command line started before the runtime existed (the
    embedded server, a stop request already received). ``on_connected`` runs once the
    database is migrated and the instance id held, before any actor starts (the sandbox
    tells its Telegram emulator where the inbox left off). ``config``: the file SIGHUP
    reads again (``_sighup``, ``_reload``); without one, SIGHUP is ignored.
    """
    source = None if config is None else ConfigSource(config, runtime.environ)
    starting = trio.CancelScope()
    if early is not None:
        for endpoint, name in ((runtime.http, "operator"), (runtime.public_http, "public")):
            if endpoint is not None:
                endpoint.adopt(early.ports.get(name))
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signal, runtime.supervisor, starting, early)
        await nursery.start(reload_on_signal, runtime, source, early)
        code = await _serve(runtime, starting, early, on_connected)
        nursery.cancel_scope.cancel()
    return code


async def _serve(
    runtime: Runtime,
    starting: trio.CancelScope,
    early: EarlyStart | None,
    on_connected: OnConnected | None,
) -> int:
    log = get_logger("supervisor")
    progress = early.progress if early is not None else _silent

    def leaked(message: str, error: BaseException | None) -> None:
        runtime.alerts.submit(
            Alert(
                severity=Severity.CRITICAL,
                key="asyncio_leak",
                component="bridge",
                title="an asyncio task failed unobserved",
                text=f"{message}: {error!r}",
            )
        )

    async with asyncio_loop(report=leaked, kind=runtime.settings.service.asyncio_loop):
        opened: OpenDatabase | None = None
        lock: InstanceLock | None = None
        try:
            with starting:
                try:
                    opened = await connect(runtime.settings.database, early=early)
                    await ensure_schema(
                        opened,
                        auto_migrate=runtime.settings.database.auto_migrate,
                        progress=progress,
                    )
                    runtime.services.provide_db(opened.db)
                    lock = InstanceLock(opened.db, runtime.services.instance_id)
                    await _take_over(runtime, lock)
                    await seed_codes(opened.db, runtime.settings.promo)
                    if on_connected is not None:
                        await on_connected(opened.db)
                except StartupError as exc:
                    log.error(
                        "cannot start", reason=str(exc), exit_code=exc.exit_code, outcome="failed"
                    )
                    return exc.exit_code
            if starting.cancelled_caught or lock is None:
                log.info("stopped during the start", exit_code=EX_OK)
                return EX_OK
            runtime.start_domain()
            progress("starting the workers and the bot…")
            return await _supervise(runtime, lock)
        finally:
            with trio.CancelScope(shield=True):
                if lock is not None:
                    await lock.close()
                if opened is not None:
                    await opened.close()


def _silent(text: str) -> None:
    pass


async def _take_over(runtime: Runtime, lock: InstanceLock) -> None:
    """Hold the instance id, then take back what the previous run of it left claimed."""
    try:
        await claim_instance(lock)
        await take_back(runtime.services)
    except InstanceInUse as exc:
        raise StartupError(str(exc), EX_CONFIG) from exc
    except Exception as exc:
        failure = classify(exc)
        raise StartupError(
            f"taking the instance id over failed: {failure.exception_type}: {failure.message}",
            EX_TEMPFAIL if failure.transient else EX_CONFIG,
        ) from exc


async def _supervise(runtime: Runtime, lock: InstanceLock) -> int:
    log = get_logger("supervisor")
    lost: list[str] = []

    def instance_lost(reason: str) -> None:
        lost.append(reason)
        log.error("instance id taken by another process: stopping", reason=reason)
        runtime.alerts.submit(
            Alert(
                severity=Severity.CRITICAL,
                key="instance_id_in_use",
                component="supervisor",
                title="two processes use one instance id",
                text=reason,
            )
        )
        runtime.supervisor.request_shutdown()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_instance, lock, instance_lost)
        nursery.start_soon(settle_when_ready, runtime.supervisor.ready)
        log.info(
            "starting",
            actors=[s.name for s in runtime.supervisor.statuses],
            plugins=[p.name for p in runtime.plugins.plugins],
            instance=runtime.info["instance"],
        )
        code = await runtime.supervisor.run()
        nursery.cancel_scope.cancel()
    if lost and code == 0:
        code = EX_CONFIG
    log.info("stopped", exit_code=code)
    return code


async def _stop_on_signal(
    supervisor: Supervisor,
    starting: trio.CancelScope,
    early: EarlyStart | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A signal ends the start if it is still going on, else asks the supervisor to stop.

    A stop asked for before the receiver was open (``early`` recorded it) counts too: it is
    looked at once the receiver is open, so no signal falls between the two.
    """
    log = get_logger("supervisor")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        if early is not None and early.stop_requested.is_set():
            log.info("stop requested during the start: stopping")
            starting.cancel()
            supervisor.request_shutdown()
        async for signum in signals:
            log.info("signal received: stopping", signal=signal.Signals(signum).name)
            starting.cancel()
            supervisor.request_shutdown()


async def migrate(settings: Settings) -> list[str]:
    """Apply pending migrations (``vpnbot migrate``); returns their labels."""
    async with asyncio_loop(kind=settings.service.asyncio_loop):
        opened = await connect(settings.database)
        try:
            return [m.label for m in await apply_migrations(opened.db)]
        except MigrationError as exc:
            raise StartupError(f"database schema: {exc}", EX_CONFIG) from exc
        finally:
            await opened.close()
