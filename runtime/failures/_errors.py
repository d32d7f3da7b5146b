"""The vocabulary of failures: their classes, the outcomes of an operation, the project's bases."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureType(enum.StrEnum):
    """Where a failure comes from; each type has a fixed escalation (see ``escalation_for``)."""

    DOMAIN = "domain_error"
    """A bad request or an invalid state: the caller asked for something that cannot be done."""
    DEPENDENCY = "dependency_error"
    """A peer misbehaved or is unreachable: payment provider, VPN panel, Telegram."""
    INFRA = "infra_error"
    """Our own infrastructure: database, network, disk."""
    BUG = "bug"
    """Anything unexpected."""


class Outcome(enum.StrEnum):
    """How an operation ended; every failure log line carries one."""

    SUCCESS = "success"
    SKIPPED = "skipped"
    """Nothing to do, for example a duplicate webhook for a payment already credited."""
    DEGRADED = "degraded"
    """Done with reduced function, for example with a fallback after a dependency failed."""
    FAILED = "failed"


class DomainError(Exception):
    """A bad request or an invalid state. Never transient: retrying gives the same answer."""


DATABASE = "database"
"""The dependency name of PostgreSQL: what storage names when the database is away."""
TELEGRAM = "telegram"
"""The dependency name of the Telegram Bot API."""


class DependencyError(Exception):
    """A payment provider, VPN panel or Telegram failed.

    ``transient`` says whether trying again later can succeed. ``retry_after`` is the peer's
    hint, in seconds, of when to try again (a 429 answer, for example). ``dependency`` names
    the peer when the peer itself is failing (unreachable, timing out, answering 5xx), so
    that every actor it fails is reported under one cause; leave it out for an answer that
    only concerns this request (a 400, a refused card).
    """

    def __init__(
        self,
        message: str = "",
        *,
        transient: bool = True,
        retry_after: float | None = None,
        dependency: str | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.dependency = dependency


class InfraError(Exception):
    """The database, the network or the disk failed; ``transient`` and ``dependency`` as for
    ``DependencyError``."""

    def __init__(
        self, message: str = "", *, transient: bool = True, dependency: str | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.dependency = dependency


@dataclass(frozen=True, slots=True)
class Failure:
    """What ``classify`` decided about an exception.

    ``exception_type`` and ``message`` describe the exception that decided the class, which
    may sit deeper in the chain than the one raised (asyncpg's ``InterfaceError`` hides the
    real ``ConnectionDoesNotExistError`` in its context). ``retry_after`` is a peer's hint in
    seconds, kept only for transient failures. ``dependency`` names the shared dependency
    that is failing (``"database"``, ``"telegram"``, a peer's name), when the deciding
    exception says so; it is the cause under which actors report and admins are alerted
    once for all. Always None for bugs and domain errors: those are ours, not a dependency's.
    """

    type: FailureType
    transient: bool
    message: str
    exception_type: str
    retry_after: float | None = None
    dependency: str | None = None
