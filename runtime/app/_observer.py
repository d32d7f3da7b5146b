"""Turns supervision events into log lines, metrics and alerts.

One root cause, one alert: a failure that names a failing dependency alerts under that
dependency's key, whichever actor met it first, and actors degraded for long are alerted on
per cause (``degraded:<dependency>`` lists every actor that names it), or alone
(``degraded:<actor>``) when they name none. Alert keys are built from actor and dependency
names only: names from our code and configuration, never from what a request or a peer
sent (see ``runtime.alerts.Alert``).
"""

from __future__ import annotations

import trio

from runtime.alerts import Alert, AlertPipeline, Severity
from runtime.failures import Failure, FailureType, Outcome, classify, escalation_for
from runtime.logs import get_logger, log_failure
from runtime.metrics import Metrics
from runtime.supervision import ActorStatus, SupervisorObserver, SystemState

_SEVERITY = {
    FailureType.BUG: Severity.CRITICAL,
    FailureType.INFRA: Severity.CRITICAL,
    FailureType.DEPENDENCY: Severity.WARNING,
    FailureType.DOMAIN: Severity.WARNING,
}


def describe_failure(error: BaseException) -> str:
    return classify(error).type.value


def failure_dependency(error: BaseException) -> str | None:
    """The shared dependency a failed unit of work blames: its degradation's cause."""
    return classify(error).dependency


class RuntimeObserver(SupervisorObserver):
    def __init__(
        self,
        metrics: Metrics,
        alerts: AlertPipeline,
        *,
        unavailable_after: float = 60.0,
        degraded_after: float = 300.0,
    ) -> None:
        self._log = get_logger("supervisor")
        self._metrics = metrics
        self._alerts = alerts
        self._unavailable_after = unavailable_after
        self._degraded_after = degraded_after
        self._unavailable_since: float | None = None
        self._degraded_since: dict[str, float] = {}

    def actor_started(self, status: ActorStatus) -> None:
        self._log.info(
            "actor started", actor=status.name, restarts=status.restarts, outcome=Outcome.SUCCESS
        )

    def actor_exited(self, status: ActorStatus) -> None:
        self._log.info("actor exited", actor=status.name, restart=status.restart)

    def actor_failed(self, status: ActorStatus, error: BaseException) -> None:
        self._failed(status, error, operation="actor.run")

    def iteration_failed(self, status: ActorStatus, error: BaseException) -> None:
        self._failed(status, error, operation="actor.iteration")

    def _failed(self, status: ActorStatus, error: BaseException, *, operation: str) -> None:
        failure = log_failure(
            self._log.bind(component=status.name), error, operation=operation, actor=status.name
        )
        self._metrics.failures.labels(status.name, failure.type.value).inc()
        if not escalation_for(failure, operation=status.name).alert:
            return
        if failure.dependency is None:
            self._alert(
                _SEVERITY[failure.type],
                f"actor_failed:{status.name}:{failure.type.value}",
                status.name,
                f"{status.name} failed: {failure.type.value}",
                _describe(failure),
            )
            return
        self._alert(
            _SEVERITY[failure.type],
            f"dependency_failed:{failure.dependency}:{failure.type.value}",
            failure.dependency,
            f"{failure.dependency} is failing: {failure.type.value}",
            f"{_describe(failure)} (first met by {status.name}; every actor that depends "
            f"on {failure.dependency} is affected)",
        )

    def actor_restarting(self, status: ActorStatus, delay: float) -> None:
        self._log.info("actor restarting", actor=status.name, delay_seconds=round(delay, 3))

    def actor_parked(self, status: ActorStatus, error: BaseException | None) -> None:
        self._log.error("actor parked", actor=status.name, failures=status.failures)
        cause = _describe(classify(error)) if error is not None else "failure budget spent"
        self._alert(
            Severity.CRITICAL,
            f"actor_parked:{status.name}",
            status.name,
            f"{status.name} is parked",
            f"{status.name} spent its failure budget and stays down. Last failure: {cause}",
        )

    def actor_unparked(self, status: ActorStatus) -> None:
        self._log.warning("actor leaves parking after its cool-down", actor=status.name)

    def escalating(self, status: ActorStatus, error: BaseException | None) -> None:
        self._log.critical("escalating: shutting the runtime down", actor=status.name)
        cause = _describe(classify(error)) if error is not None else "failure budget spent"
        self._alert(
            Severity.CRITICAL,
            f"escalated:{status.name}",
            status.name,
            f"{status.name} brought the service down",
            f"{status.name} spent its failure budget; the process exits 75 to be restarted. "
            f"Last failure: {cause}",
        )

    def actor_replaced(self, status: ActorStatus) -> None:
        self._log.info("actor restarting with the new configuration", actor=status.name)

    def thresholds(self, *, unavailable_after: float, degraded_after: float) -> None:
        """How long the service may be unavailable or degraded before admins hear of it."""
        self._unavailable_after = unavailable_after
        self._degraded_after = degraded_after

    def actor_stop_timed_out(self, status: ActorStatus) -> None:
        self._log.warning("actor ignored the stop request: cancelled", actor=status.name)

    def system_state_changed(self, old: SystemState, new: SystemState) -> None:
        log = self._log.info if new is SystemState.HEALTHY else self._log.warning
        log("system state changed", old=old.value, new=new.value)

    def dependency_answered(self, dependency: str, cleared: list[ActorStatus]) -> None:
        self._log.info(
            "dependency answers again: degradation cleared",
            dependency=dependency,
            actors=[status.name for status in cleared],
            outcome=Outcome.SUCCESS,
        )

    def tick(self, statuses: list[ActorStatus], state: SystemState) -> None:
        """Alert on long trouble: the service unavailable, or an actor degraded for long."""
        now = trio.current_time()
        if state is SystemState.UNAVAILABLE and any(s.started_at for s in statuses):
            if self._unavailable_since is None:
                self._unavailable_since = now
            since = self._unavailable_since
            if now - since >= self._unavailable_after:
                down = [s.name for s in statuses if s.critical and not s.up]
                self._alert(
                    Severity.CRITICAL,
                    "system_unavailable",
                    "supervisor",
                    "the service is unavailable",
                    f"unavailable for {now - since:.0f}s; critical actors down: {', '.join(down)}",
                )
        else:
            self._unavailable_since = None
        self._alert_long_degradation(statuses, now)

    def _alert_long_degradation(self, statuses: list[ActorStatus], now: float) -> None:
        """One alert per cause: the actors that blame one dependency share it."""
        groups: dict[str, list[ActorStatus]] = {}
        for status in statuses:
            if status.degraded_reason is not None:
                groups.setdefault(status.degraded_cause or status.name, []).append(status)
        for gone in self._degraded_since.keys() - groups.keys():
            del self._degraded_since[gone]
        for cause, members in groups.items():
            since = self._degraded_since.setdefault(cause, now)
            if now - since < self._degraded_after:
                continue
            for_seconds = f"{now - since:.0f}s"
            if len(members) == 1 and members[0].name == cause:
                title = f"{cause} has been degraded for {for_seconds}"
            else:
                title = f"{cause} is failing: {len(members)} actor(s) degraded for {for_seconds}"
            self._alert(
                Severity.WARNING, f"degraded:{cause}", cause, title, _degradation(cause, members)
            )

    def observer_failed(self, error: BaseException) -> None:
        log_failure(self._log, error, operation="observer")

    def _alert(self, severity: Severity, key: str, component: str, title: str, text: str) -> None:
        self._alerts.submit(
            Alert(severity=severity, key=key, component=component, title=title, text=text)
        )


def _describe(failure: Failure) -> str:
    return f"{failure.exception_type}: {failure.message}"


def _degradation(cause: str, members: list[ActorStatus]) -> str:
    """The reason of the actor that names the cause (its probe), else of the one degraded
    longest, and which actors the cause affects."""
    lead = min(members, key=lambda s: (s.name != cause, s.degraded_since or 0.0, s.name))
    reason = lead.degraded_reason or ""
    if len(members) == 1 and lead.name == cause:
        return reason
    names = ", ".join(sorted(s.name for s in members))
    return f"{reason}\naffected: {names}"
