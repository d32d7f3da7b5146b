"""The wiring around the supervisor: policy from config, observer alerts, HTTP, tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import supervisor as cli
from runtime.alerts import Alert, AlertPipeline
from runtime.app import RuntimeObserver, apply_policy, describe_failure, failure_dependency
from runtime.app._database import database_probe
from runtime.app.tables import render_status
from runtime.config import ActorPolicyOverride, ConfigError, ConfigProblem, Settings
from runtime.failures import DATABASE, InfraError
from runtime.metrics import Metrics, SupervisionCollector
from runtime.plugin_api import Services
from runtime.supervision import (
    ActorContext,
    ActorSpec,
    ActorState,
    ActorStatus,
    Backoff,
    OnExhausted,
    Restart,
    Supervisor,
    SystemState,
    loop_worker,
)
from runtime.testing import RecordingSink
from runtime.web import operator_app
from runtime.workers import NAMES as WORKER_NAMES


async def idle(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await ctx.stop_requested.wait()


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def keys(self) -> list[str]:
        return [a.key for a in self.alerts]


# -- per-actor policy ---------------------------------------------------------------------


def test_policy_override_replaces_only_what_is_set() -> None:
    spec = ActorSpec("w", idle, backoff=Backoff(min=1, max=60, jitter=0.1))
    override = ActorPolicyOverride(
        restart="transient",
        backoff_max_seconds=30,
        budget_max_failures=2,
        on_exhausted="escalate",
        park_cooldown_seconds=600,
        critical=False,
        interval_seconds=7,
    )
    result = apply_policy(spec, override)
    assert result.restart is Restart.TRANSIENT
    assert (result.backoff.min, result.backoff.max, result.backoff.jitter) == (1, 30, 0.1)
    assert result.budget.max_failures == 2
    assert result.budget.on_exhausted is OnExhausted.ESCALATE
    assert result.budget.park_cooldown == 600
    assert result.critical is False
    assert result.extra["interval"] == 7


def test_empty_override_keeps_the_spec() -> None:
    spec = ActorSpec("w", idle)
    assert apply_policy(spec, ActorPolicyOverride()) is spec


def test_override_clashing_with_the_actor_default_is_a_config_error() -> None:
    spec = ActorSpec("w", idle, backoff=Backoff(min=1, max=60))
    with pytest.raises(ConfigError) as caught:
        apply_policy(spec, ActorPolicyOverride(backoff_min_seconds=120))
    assert caught.value.problems == [
        ConfigProblem(
            "actors.w.backoff_min_seconds",
            "must be <= 60, this actor's backoff_max_seconds (got 120);"
            " set backoff_max_seconds too",
        )
    ]
    with pytest.raises(ConfigError) as caught:
        apply_policy(spec, ActorPolicyOverride(backoff_max_seconds=0.5))
    assert [p.path for p in caught.value.problems] == ["actors.w.backoff_max_seconds"]
    assert caught.value.problems[0].reason.startswith("must be >= 1, this actor's")


# -- long-trouble alerts ---------------------------------------------------------------------


def _status(name: str, state: ActorState, *, critical: bool = True) -> ActorStatus:
    return ActorStatus(name, critical, "permanent", state=state, started_at=1.0)


async def test_long_unavailability_alerts_once_the_threshold_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()
    observer = RuntimeObserver(Metrics(), alerts, unavailable_after=60)  # type: ignore[arg-type]
    down = [_status("db", ActorState.BACKING_OFF)]
    observer.tick(down, SystemState.UNAVAILABLE)
    await trio.sleep(59)
    observer.tick(down, SystemState.UNAVAILABLE)
    assert alerts.keys() == []
    await trio.sleep(2)
    observer.tick(down, SystemState.UNAVAILABLE)
    assert alerts.keys() == ["system_unavailable"]
    assert "db" in alerts.alerts[0].text
    observer.tick([_status("db", ActorState.RUNNING)], SystemState.HEALTHY)
    await trio.sleep(61)
    observer.tick(down, SystemState.UNAVAILABLE)
    assert alerts.keys() == ["system_unavailable"]


async def test_an_actor_degraded_for_long_alerts(autojump_clock: trio.testing.MockClock) -> None:
    alerts = Alerts()
    observer = RuntimeObserver(Metrics(), alerts, degraded_after=300)  # type: ignore[arg-type]
    status = _status("activation", ActorState.RUNNING)
    status.degraded_reason = "panel down"
    observer.tick([status], SystemState.DEGRADED)
    await trio.sleep(299)
    observer.tick([status], SystemState.DEGRADED)
    assert alerts.keys() == []
    await trio.sleep(1)
    observer.tick([status], SystemState.DEGRADED)
    assert alerts.keys() == ["degraded:activation"]
    assert alerts.alerts[0].text == "panel down"


def test_failures_are_counted_and_bugs_alert() -> None:
    alerts = Alerts()
    metrics = Metrics()
    observer = RuntimeObserver(metrics, alerts)  # type: ignore[arg-type]
    status = _status("w", ActorState.RUNNING)
    observer.actor_failed(status, KeyError("x"))
    observer.iteration_failed(status, ConnectionError("refused"))
    text = metrics.render().decode()
    assert 'vpnbot_failures_total{component="w",failure_type="bug"} 1.0' in text
    assert 'vpnbot_failures_total{component="w",failure_type="infra_error"} 1.0' in text
    assert alerts.keys() == ["actor_failed:w:bug"]


# -- one root cause, one alert ---------------------------------------------------------------

DEPENDENTS = list(WORKER_NAMES)


class Outage:
    """The database as storage reports it: away, every unit fails naming it."""

    def __init__(self) -> None:
        self.down = False

    def check(self) -> None:
        if self.down:
            raise InfraError("the database is not accepting connections", dependency=DATABASE)


def outage_tree(outage: Outage, pipeline: AlertPipeline) -> list[ActorSpec]:
    async def ping(ctx: ActorContext) -> None:
        outage.check()

    async def work(ctx: ActorContext) -> None:
        outage.check()

    services = Services(Settings(), Metrics(), instance_id="test")
    probe = database_probe(services).evolve(run=loop_worker(ping, interval=5))  # its policy
    workers = [
        ActorSpec(name, loop_worker(work, interval=1), min_sleep_on_failure=600, critical=False)
        for name in DEPENDENTS
    ]
    return [pipeline.actor_spec(), probe, *workers]


async def test_a_database_outage_is_one_alert_and_degraded_follows_the_database(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outage = Outage()
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=300)
    metrics = Metrics()
    observer = RuntimeObserver(metrics, pipeline, degraded_after=60)
    supervisor = Supervisor(
        outage_tree(outage, pipeline),
        observer=observer,
        describe_failure=describe_failure,
        dependency_of=failure_dependency,
    )
    metrics.register(SupervisionCollector(supervisor))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(10)
        outage.down = True
        await trio.sleep(200)  # past degraded_after, within one throttle period
        assert sink.keys == ["degraded:database"]
        alert = sink.alerts[0]
        degraded = len(DEPENDENTS) + 1  # the workers and the probe
        assert alert.title.startswith(f"database is failing: {degraded} actor(s) degraded")
        assert alert.text.startswith("the database is not accepting connections")
        assert alert.text.endswith(", ".join(sorted(["database", *DEPENDENTS])))
        assert (
            f'vpnbot_degraded_by{{dependency="database"}} {degraded}.0' in metrics.render().decode()
        )

        outage.down = False
        await trio.sleep(6)  # one probe interval; the workers sleep ten minutes
        assert [s.name for s in supervisor.statuses if s.degraded_reason] == []
        assert supervisor.system_state is SystemState.HEALTHY
        assert "vpnbot_degraded_by{" not in metrics.render().decode()
        await trio.sleep(1200)
        supervisor.request_shutdown()
    assert sink.keys == ["degraded:database"]


async def test_a_dependency_failure_that_alerts_is_one_alert_whoever_meets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()
    observer = RuntimeObserver(Metrics(), alerts)  # type: ignore[arg-type]
    refused = InfraError("password authentication failed", transient=False, dependency=DATABASE)
    for name in DEPENDENTS:
        observer.iteration_failed(_status(name, ActorState.RUNNING), refused)
    assert set(alerts.keys()) == {"dependency_failed:database:infra_error"}
    assert alerts.alerts[0].component == "database"
    assert f"first met by {DEPENDENTS[0]}" in alerts.alerts[0].text


async def test_actors_that_name_no_cause_are_alerted_on_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()
    observer = RuntimeObserver(Metrics(), alerts, degraded_after=300)  # type: ignore[arg-type]
    panel = _status("activation", ActorState.RUNNING)
    panel.degraded_reason, panel.degraded_cause = "marzban is down", "marzban"
    sinks = _status("alerts", ActorState.RUNNING)
    sinks.degraded_reason = "alert sinks failing: webhook"
    observer.tick([panel, sinks], SystemState.DEGRADED)
    await trio.sleep(300)
    observer.tick([panel, sinks], SystemState.DEGRADED)
    assert sorted(alerts.keys()) == ["degraded:alerts", "degraded:marzban"]
    by_key = {a.key: a for a in alerts.alerts}
    assert by_key["degraded:alerts"].text == "alert sinks failing: webhook"
    assert by_key["degraded:marzban"].text == "marzban is down\naffected: activation"


def test_the_database_probe_probes_the_database() -> None:
    services = Services(Settings(), Metrics(), instance_id="test")
    assert database_probe(services).probes == DATABASE


# -- HTTP endpoint -------------------------------------------------------------------------


async def _get(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vpnbot") as client:
        return await client.get(path)


async def test_endpoints_follow_the_supervisor(autojump_clock: trio.testing.MockClock) -> None:
    async def slow_start(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(10)
        task_status.started()
        await ctx.stop_requested.wait()

    supervisor = Supervisor([ActorSpec("a", idle), ActorSpec("slow", slow_start)])
    metrics = Metrics()
    metrics.register(SupervisionCollector(supervisor))
    app = operator_app(supervisor, metrics, extras=lambda: {"instance": "test-1"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(1)
        ready = await _get(app, "/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "state": "unavailable"}
        assert (await _get(app, "/healthz")).status_code == 200
        await trio.sleep(10)
        assert (await _get(app, "/readyz")).status_code == 200
        status = (await _get(app, "/status")).json()
        assert status["state"] == "healthy" and status["instance"] == "test-1"
        assert [a["name"] for a in status["actors"]] == ["a", "slow"]
        metrics_text = (await _get(app, "/metrics")).text
        assert 'vpnbot_actor_state{actor="slow",state="running"} 1.0' in metrics_text
        assert 'vpnbot_system_state{state="healthy"} 1.0' in metrics_text
        supervisor.request_shutdown()


async def test_healthz_fails_when_the_supervising_loop_stops_beating(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor([ActorSpec("a", idle)])
    app = operator_app(supervisor, Metrics())
    assert (await _get(app, "/healthz")).status_code == 503
    supervisor.last_heartbeat = trio.current_time()
    assert (await _get(app, "/healthz")).status_code == 200
    await trio.sleep(10)
    assert (await _get(app, "/healthz")).status_code == 503


# -- command line ----------------------------------------------------------------------------


def test_status_table_is_readable() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    document = {
        "state": "degraded",
        "ready": True,
        "actors": [
            {"name": "http", "state": "running", "critical": True, "restarts": 0},
            {
                "name": "crashy",
                "state": "backing_off",
                "critical": False,
                "restarts": 3,
                "last_failure": {"type": "bug", "message": "boom", "time": None},
                "next_restart_at": "2026-01-01T12:00:04+00:00",
            },
        ],
    }
    text = render_status(document, now=now)
    assert "system: degraded" in text
    crashy = next(line for line in text.splitlines() if line.startswith("crashy"))
    assert "backing_off" in crashy and "bug: boom" in crashy and "in 4s" in crashy


def test_status_of_an_instance_that_does_not_answer_exits_69(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["status", "--url", "http://127.0.0.1:9", "--timeout", "1"], environ={})
    assert code == 69
    assert "not answering" in capsys.readouterr().err


def test_check_config_accepts_the_example_with_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = {"VPNBOT_TELEGRAM__TOKEN": "123456789:AAHexampleBotToken_0123456789abcdef"}
    assert cli.main(["check-config", "config/vpnbot.example.toml"], environ=token) == 0
    assert "config ok" in capsys.readouterr().out
    assert cli.main(["check-config", "config/vpnbot.example.toml"], environ={}) == 78
    assert "config error: telegram.token: required" in capsys.readouterr().err


def test_console_script_points_at_the_same_main() -> None:
    import tomllib

    with open("pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)
    assert project["project"]["scripts"]["vpnbot"] == "supervisor:main"
    assert json.dumps(project["project"]["entry-points"]["vpnbot.plugins"])
