"""The escalation policy: what each class of failure costs (log level, retry, alert).

The policy in words:

- expected failures (domain errors, dependency errors) and transient ones are warnings;
  unexpected ones (bugs, non-transient infrastructure failures) are errors;
- only transient failures are retried, and never domain errors or bugs, whatever their flag;
- admins are alerted for bugs and non-transient infrastructure failures, and for any failure
  of an operation in ``ALERTING_OPERATIONS``: money and access are at stake there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ._errors import Failure, FailureType

LogLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Escalation:
    log_level: LogLevel
    retry: bool
    alert: bool


ALERTING_OPERATIONS: frozenset[str] = frozenset({"payment_finalization", "activation"})
"""Operations whose every failure alerts an admin.

An operation named ``"<name>.<detail>"`` (``"activation.panel_call"``) counts as ``<name>``.
"""

_WARN = Escalation("warning", retry=False, alert=False)

# Keyed by (failure type, transient). Every combination is listed, even those ``classify``
# never produces (a transient domain error), so a hand-made Failure has a defined cost too.
ESCALATION_POLICY: Mapping[tuple[FailureType, bool], Escalation] = MappingProxyType(
    {
        (FailureType.DOMAIN, False): _WARN,
        (FailureType.DOMAIN, True): _WARN,
        (FailureType.DEPENDENCY, False): _WARN,
        (FailureType.DEPENDENCY, True): Escalation("warning", retry=True, alert=False),
        (FailureType.INFRA, False): Escalation("error", retry=False, alert=True),
        (FailureType.INFRA, True): Escalation("warning", retry=True, alert=False),
        (FailureType.BUG, False): Escalation("error", retry=False, alert=True),
        (FailureType.BUG, True): Escalation("error", retry=False, alert=True),
    }
)


def is_alerting_operation(operation: str | None) -> bool:
    if not operation:
        return False
    return operation in ALERTING_OPERATIONS or operation.split(".", 1)[0] in ALERTING_OPERATIONS


def escalation_for(failure: Failure, *, operation: str | None = None) -> Escalation:
    """The log level, retry and alert decision for ``failure`` raised by ``operation``."""
    escalation = ESCALATION_POLICY[(failure.type, failure.transient)]
    if is_alerting_operation(operation) and not escalation.alert:
        escalation = dataclasses.replace(escalation, alert=True)
    return escalation
