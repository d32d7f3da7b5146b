"""The sink that is always there: every alert becomes a structured log line."""

from __future__ import annotations

from typing import Any

from runtime.logs import get_logger

from ._model import Alert, Severity


class LogSink:
    """Writes each alert as one log line: ``error`` for critical alerts, ``warning`` otherwise."""

    name = "log"

    def __init__(self, logger: Any | None = None) -> None:
        self._log = logger if logger is not None else get_logger("alerts")

    async def send(self, alert: Alert) -> None:
        fields = {
            "alert_key": alert.key,
            "alert_component": alert.component,
            "severity": alert.severity.value,
            "title": alert.title,
            "text": alert.text,
            "correlation_id": alert.correlation_id,
            "alert_time": alert.time.isoformat(),
            "suppressed_count": alert.suppressed_count,
        }
        if alert.severity is Severity.CRITICAL:
            self._log.error("alert", **fields)
        else:
            self._log.warning("alert", **fields)
