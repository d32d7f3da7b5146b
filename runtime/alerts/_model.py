"""What an alert is, and the counters the pipeline keeps."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertDeliveryError(Exception):
    """A sink could not deliver an alert. Sinks keep secrets (tokens, URLs) out of the message."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing an admin should hear about.

    ``key`` identifies the condition (for example ``"actor_parked:bot"``): alerts with the
    same key are deduplicated and throttled. ``suppressed_count`` is filled in by the
    pipeline: how many alerts with this key were held back since the last one was sent.

    A key is ``<kind>:<name>[:<name>...]``: a fixed word, then names from our own code and
    configuration (an actor, a plugin, a provider, a dependency, a failure type, an id we
    issued). Never put into a key, and never raise a critical alert for, anything a request,
    an update or a peer's answer chose: an unauthenticated sender would pick how many
    alerts admins get and what they are called. Ids an attacker could use (payment intents,
    charges) stay out of the text as well: it is shown on ``/status``; log them and let the
    alert's correlation id lead to the log line. The pipeline folds a kind that still
    floods (see ``AlertPipeline``).
    """

    severity: Severity
    key: str
    component: str
    title: str
    text: str
    correlation_id: str | None = None
    time: datetime = field(default_factory=_utc_now)
    suppressed_count: int = 0

    def __post_init__(self) -> None:
        # Alerts are built on failure paths: coerce what can be coerced rather than raise.
        object.__setattr__(self, "severity", Severity(self.severity))
        if self.time.tzinfo is None:
            object.__setattr__(self, "time", self.time.replace(tzinfo=UTC))
        else:
            object.__setattr__(self, "time", self.time.astimezone(UTC))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the webhook sink posts)."""
        return {
            "severity": self.severity.value,
            "key": self.key,
            "component": self.component,
            "title": self.title,
            "text": self.text,
            "correlation_id": self.correlation_id,
            "time": self.time.isoformat(),
            "suppressed_count": self.suppressed_count,
        }


@dataclass(frozen=True, slots=True)
class AlertStats:
    """A snapshot of the pipeline's counters."""

    submitted_total: dict[str, int]
    """Alerts raised, before deduplication, by kind (the key up to its first ``:``)."""
    sent_total: dict[str, int]
    """Alerts delivered, by sink name."""
    failed_total: dict[str, int]
    """Deliveries that raised or timed out, by sink name."""
    suppressed_total: int
    """Alerts held back by deduplication/throttling."""
    dropped_total: int
    """Alerts lost because the queue was full (or the alert could not be queued at all)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "submitted_total": dict(self.submitted_total),
            "sent_total": dict(self.sent_total),
            "failed_total": dict(self.failed_total),
            "suppressed_total": self.suppressed_total,
            "dropped_total": self.dropped_total,
        }
