"""Hooks through which the supervisor tells the rest of the runtime what happened.

The supervision core logs nothing and alerts no one by itself: the composition root
passes an observer that turns these events into log lines, metrics and alerts.
"""

from __future__ import annotations

from ._status import ActorStatus, SystemState


class SupervisorObserver:
    """Every method is a no-op; subclass and override what you need. Must not raise."""

    def actor_started(self, status: ActorStatus) -> None: ...

    def actor_exited(self, status: ActorStatus) -> None: ...

    def actor_failed(self, status: ActorStatus, error: BaseException) -> None: ...

    def iteration_failed(self, status: ActorStatus, error: BaseException) -> None: ...

    def actor_restarting(self, status: ActorStatus, delay: float) -> None: ...

    def actor_parked(self, status: ActorStatus, error: BaseException | None) -> None: ...

    def actor_unparked(self, status: ActorStatus) -> None: ...

    def escalating(self, status: ActorStatus, error: BaseException | None) -> None: ...

    def actor_stop_timed_out(self, status: ActorStatus) -> None: ...

    def actor_replaced(self, status: ActorStatus) -> None:
        """A planned restart (``Supervisor.replace``) starts the actor from its new spec."""

    def system_state_changed(self, old: SystemState, new: SystemState) -> None: ...

    def dependency_answered(self, dependency: str, cleared: list[ActorStatus]) -> None:
        """A probe of ``dependency`` succeeded and cleared these actors' degradation."""

    def tick(self, statuses: list[ActorStatus], state: SystemState) -> None:
        """Called from the supervising loop about once per heartbeat interval."""

    def observer_failed(self, error: BaseException) -> None:
        """An observer method raised; the supervisor swallowed it and calls this."""
