"""What the supervisor knows of each actor, and the system state derived from it."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ActorState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    PARKED = "parked"
    STOPPING = "stopping"
    STOPPED = "stopped"


class SystemState(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@dataclass(slots=True)
class FailureRecord:
    type: str
    message: str
    time: float
    """Wall-clock seconds since the epoch."""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "time": _iso(self.time)}


@dataclass(slots=True)
class ActorStatus:
    name: str
    critical: bool
    restart: str
    state: ActorState = ActorState.STARTING
    restarts: int = 0
    failures: int = 0
    last_failure: FailureRecord | None = None
    next_restart_at: float | None = None
    """Wall-clock time of the next restart while backing off or parked with a cool-down."""
    started_at: float | None = None
    degraded_reason: str | None = None
    degraded_cause: str | None = None
    """The shared dependency the actor names as the reason it is degraded, if any."""
    degraded_since: float | None = None
    """Wall-clock time the current degradation began."""
    finished_normally: bool = False
    """Stopped because its work was done (transient or temporary exit), not because it broke."""
    history: list[str] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.state is ActorState.RUNNING

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "critical": self.critical,
            "restart": self.restart,
            "restarts": self.restarts,
            "failures": self.failures,
            "degraded": self.degraded_reason,
            "degraded_cause": self.degraded_cause,
            "degraded_since": _iso(self.degraded_since),
            "last_failure": self.last_failure.to_json() if self.last_failure else None,
            "next_restart_at": _iso(self.next_restart_at),
            "started_at": _iso(self.started_at),
        }


def system_state(statuses: Iterable[ActorStatus], *, stopping: bool = False) -> SystemState:
    """Unavailable when a critical actor is down; degraded when anything else is amiss."""
    if stopping:
        return SystemState.UNAVAILABLE
    state = SystemState.HEALTHY
    for status in statuses:
        done = status.state is ActorState.STOPPED and status.finished_normally
        if status.up or done:
            if status.degraded_reason is not None:
                state = SystemState.DEGRADED
            continue
        if status.critical:
            return SystemState.UNAVAILABLE
        state = SystemState.DEGRADED
    return state
