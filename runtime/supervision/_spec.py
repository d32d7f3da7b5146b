"""What an actor is: a run function plus the policy the supervisor applies to it."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from ._context import ActorContext


class Restart(enum.StrEnum):
    """Erlang/OTP restart types."""

    PERMANENT = "permanent"
    """Always restarted, also after a normal return."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (an exception)."""
    TEMPORARY = "temporary"
    """Never restarted."""


class OnExhausted(enum.StrEnum):
    """What happens when an actor spends its failure budget."""

    PARK = "park"
    """The actor stays down (optionally retried after a cool-down); siblings keep running."""
    ESCALATE = "escalate"
    """The whole runtime shuts down cleanly and the process exits 75 (EX_TEMPFAIL)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between restarts.

    The n-th consecutive restart waits ``min(max, min * multiplier**n)`` shrunk by a random
    factor in ``[1 - jitter, 1]``, so the cap is never exceeded. The count goes back to zero
    after the actor has run for ``reset_after`` seconds without failing.
    """

    min: float = 1.0
    max: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if self.min < 0 or self.max < 0 or self.reset_after < 0:
            raise ValueError("backoff durations must not be negative")
        if self.min > self.max:
            raise ValueError(f"backoff min ({self.min}) is above max ({self.max})")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max_failures`` failures within ``window`` seconds; one more exhausts it."""

    max_failures: int = 5
    window: float = 60.0
    on_exhausted: OnExhausted = OnExhausted.PARK
    park_cooldown: float | None = None
    """Seconds after which a parked actor is tried again with a fresh budget; None: never."""

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("budget max_failures must be at least 1")
        if self.window <= 0:
            raise ValueError("budget window must be positive")
        if self.park_cooldown is not None and self.park_cooldown <= 0:
            raise ValueError("park cool-down must be positive")


class RunFunction(Protocol):
    """An actor body. It calls ``task_status.started()`` once it is ready to serve."""

    def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = ...
    ) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class ActorSpec:
    name: str
    run: RunFunction
    restart: Restart = Restart.PERMANENT
    backoff: Backoff = field(default_factory=Backoff)
    budget: Budget = field(default_factory=Budget)
    shutdown_timeout: float = 5.0
    """Seconds between the stop request and cancellation."""
    critical: bool = True
    """Readiness needs this actor running."""
    min_sleep_on_failure: float = 1.0
    """For loop workers: the least pause after a failed iteration."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings an actor reads from its context (e.g. a worker's interval)."""
    probes: str | None = None
    """The shared dependency this actor watches, if it is one's probe. Its degradation is
    that dependency's, and each of its units of work that succeeds clears what other
    actors reported under that cause before the unit began."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an actor needs a name")
        if self.probes == "":
            raise ValueError("a probe needs the name of the dependency it watches")
        if self.shutdown_timeout < 0 or self.min_sleep_on_failure < 0:
            raise ValueError("actor durations must not be negative")

    def evolve(self, **changes: Any) -> ActorSpec:
        return replace(self, **changes)


ActorFactory = Callable[[], ActorSpec]
