"""The handle an actor gets from its supervisor."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from ._spec import ActorSpec


class _Reporter(Protocol):
    def iteration_failed(self, name: str, exc: BaseException) -> None: ...
    def iteration_succeeded(self, name: str) -> None: ...
    def set_degraded(self, name: str, reason: str | None, cause: str | None) -> None: ...


class ActorContext:
    """Given to an actor's run function on every start.

    ``stop_requested`` is set when the supervisor wants the actor to finish; an actor that
    watches it can stop cleanly within its shutdown timeout, after which it is cancelled.
    """

    def __init__(
        self,
        spec: ActorSpec,
        reporter: _Reporter,
        boundary: Callable[[str], AbstractContextManager[Any]],
    ) -> None:
        self.spec = spec
        self.stop_requested = trio.Event()
        self._reporter = reporter
        self._boundary = boundary

    @property
    def name(self) -> str:
        return self.spec.name

    def boundary(self) -> AbstractContextManager[Any]:
        """A fresh context for one unit of work (the runtime binds a new correlation id)."""
        return self._boundary(self.name)

    def record_failure(self, exc: BaseException) -> None:
        """Count a failed unit of work against the actor's budget without exiting."""
        self._reporter.iteration_failed(self.name, exc)

    def record_success(self) -> None:
        """A unit of work succeeded: the consecutive-failure count starts again."""
        self._reporter.iteration_succeeded(self.name)

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        """Mark the actor degraded (running, but its dependency is failing), or clear it.

        ``cause`` names the shared dependency that is failing (the database, Telegram, a
        panel), as ``Failure.dependency`` does: the actors that name one cause are alerted
        on once, together, and when an actor probes that dependency (``ActorSpec.probes``),
        this degradation clears as soon as a probe succeeds after it, whatever this actor
        is doing meanwhile. Without a cause, the degradation is the actor's own: it stays
        until the actor reports again.
        """
        self._reporter.set_degraded(self.name, reason, cause)
