from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.supervision import ActorState, Supervisor, SystemState


class SupervisionCollector(Collector):
    """Actor restarts, failures and states, read from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "vpnbot_actor_restarts", "Restarts of each actor.", labels=["actor"]
        )
        failures = CounterMetricFamily(
            "vpnbot_actor_failures", "Failures of each actor.", labels=["actor"]
        )
        states = GaugeMetricFamily(
            "vpnbot_actor_state", "1 for the state each actor is in.", labels=["actor", "state"]
        )
        degraded = GaugeMetricFamily(
            "vpnbot_actor_degraded", "1 when the actor reports itself degraded.", labels=["actor"]
        )
        blamed: Counter[str] = Counter()
        for status in self._supervisor.statuses:
            restarts.add_metric([status.name], status.restarts)
            failures.add_metric([status.name], status.failures)
            degraded.add_metric([status.name], int(status.degraded_reason is not None))
            if status.degraded_reason is not None and status.degraded_cause is not None:
                blamed[status.degraded_cause] += 1
            for state in ActorState:
                states.add_metric([status.name, state.value], int(status.state is state))
        system = GaugeMetricFamily(
            "vpnbot_system_state", "1 for the current system state.", labels=["state"]
        )
        for system_state in SystemState:
            current = self._supervisor.system_state is system_state
            system.add_metric([system_state.value], int(current))
        degraded_by = GaugeMetricFamily(
            "vpnbot_degraded_by",
            "Actors degraded that name this shared dependency as the cause.",
            labels=["dependency"],
        )
        for dependency, count in sorted(blamed.items()):
            degraded_by.add_metric([dependency], count)
        yield from (restarts, failures, states, degraded, degraded_by, system)
