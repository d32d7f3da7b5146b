"""One log line per failure, with the fields every failure line carries."""

from __future__ import annotations

from typing import Any

import structlog

from runtime.failures import Failure, FailureType, Outcome, classify, escalation_for

from ._context import current_correlation_id


def log_failure(
    logger: Any,
    exc: BaseException,
    *,
    operation: str,
    outcome: Outcome = Outcome.FAILED,
    event: str = "operation failed",
    **fields: Any,
) -> Failure:
    """Classify ``exc``, log it once at the level the policy gives, and return the failure.

    The line carries ``component`` (from ``fields``, else bound on ``logger``, else ``"-"``),
    ``operation``, ``correlation_id`` (from the context, else ``"-"``), ``failure_type``,
    ``transient``, ``outcome``, ``error`` (the message), ``error_type`` and ``fields``;
    ``alert: true`` when the policy alerts an admin, ``retry_after`` when a peer gave one,
    and bugs carry their traceback (``exception`` in JSON). These names are reserved:
    ``fields`` cannot override them, except ``component`` and ``correlation_id``.

    Raises ``TypeError`` for a cancellation or another control-flow signal (see ``classify``).
    """
    failure = classify(exc)
    escalation = escalation_for(failure, operation=operation)
    component = fields.pop("component", None) or _bound(logger, "component") or "-"
    correlation_id = fields.pop("correlation_id", None) or current_correlation_id()
    line: dict[str, Any] = {
        **fields,
        "component": component,
        "operation": operation,
        "correlation_id": correlation_id,
        "failure_type": failure.type.value,
        "transient": failure.transient,
        "outcome": Outcome(outcome).value,
        "error": failure.message,
        "error_type": failure.exception_type,
    }
    if failure.retry_after is not None:
        line["retry_after"] = failure.retry_after
    if escalation.alert:
        line["alert"] = True
    if failure.type is FailureType.BUG:
        line["exc_info"] = exc
    getattr(logger, escalation.log_level)(event, **line)
    return failure


def _bound(logger: Any, key: str) -> Any:
    try:
        return structlog.get_context(logger).get(key)
    except (AttributeError, TypeError):
        return None
