"""Turns supervision events into log lines, metrics and alerts."""

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
        if escalation_for(failure, operation=status.name).alert:
            self._alert(
                _SEVERITY[failure.type],
                f"actor_failed:{status.name}:{failure.type.value}",
                status.name,
                f"{status.name} failed: {failure.type.value}",
                _describe(failure),
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

    def actor_stop_timed_out(self, status: ActorStatus) -> None:
        self._log.warning("actor ignored the stop request: cancelled", actor=status.name)

    def system_state_changed(self, old: SystemState, new: SystemState) -> None:
        log = self._log.info if new is SystemState.HEALTHY else self._log.warning
        log("system state changed", old=old.value, new=new.value)

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
        for status in statuses:
            if status.degraded_reason is None:
                self._degraded_since.pop(status.name, None)
                continue
            since = self._degraded_since.setdefault(status.name, now)
            if now - since >= self._degraded_after:
                self._alert(
                    Severity.WARNING,
                    f"degraded:{status.name}",
                    status.name,
                    f"{status.name} has been degraded for {now - since:.0f}s",
                    status.degraded_reason,
                )

    def observer_failed(self, error: BaseException) -> None:
        log_failure(self._log, error, operation="observer")

    def _alert(self, severity: Severity, key: str, component: str, title: str, text: str) -> None:
        self._metrics.alerts_submitted.labels(key.split(":", 1)[0]).inc()
        self._alerts.submit(
            Alert(severity=severity, key=key, component=component, title=title, text=text)
        )


def _describe(failure: Failure) -> str:
    return f"{failure.exception_type}: {failure.message}"
