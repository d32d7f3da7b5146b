"""Failures are data: every failure is classified once, here, and has a fixed escalation.

- ``classify(exc)`` turns an exception (its whole chain) into a ``Failure``: a
  ``FailureType`` (domain, dependency, infra, bug) and whether it is transient.
- ``escalation_for(failure, operation=...)`` gives its cost: log level, retry, alert.
- ``retry_transient(...)`` retries what is transient, with capped, jittered backoff.
- Project code raises ``DomainError``, ``DependencyError`` or ``InfraError`` to classify a
  failure on purpose, and names the failing dependency with ``dependency=`` (``DATABASE``,
  ``TELEGRAM``, a peer's name): ``Failure.dependency`` is the cause actors report.

This package imports neither aiogram nor asyncpg: their exceptions are recognised by name.
"""

from ._classify import classify, is_control_flow
from ._errors import (
    DATABASE,
    TELEGRAM,
    DependencyError,
    DomainError,
    Failure,
    FailureType,
    InfraError,
    Outcome,
)
from ._policy import (
    ALERTING_OPERATIONS,
    ESCALATION_POLICY,
    Escalation,
    escalation_for,
    is_alerting_operation,
)
from ._retry import RetryTransient, retry_transient

# Public classes report the public module: error_type reads "runtime.failures.DomainError".
for _cls in (
    DependencyError,
    DomainError,
    Escalation,
    Failure,
    FailureType,
    InfraError,
    Outcome,
    RetryTransient,
):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "ALERTING_OPERATIONS",
    "DATABASE",
    "ESCALATION_POLICY",
    "TELEGRAM",
    "DependencyError",
    "DomainError",
    "Escalation",
    "Failure",
    "FailureType",
    "InfraError",
    "Outcome",
    "RetryTransient",
    "classify",
    "escalation_for",
    "is_alerting_operation",
    "is_control_flow",
    "retry_transient",
]
