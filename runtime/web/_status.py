"""What ``/status`` may show: nothing that acts as a bearer token.

A payment intent id (a UUID) or a provider's charge id in the wrong hands names a payment;
they travel in alert keys and texts and in exception messages. ``/status`` is for
operators and listens on loopback by default, but it is still no place for them: alerts
are shown by kind and title only, and free text (titles, failure messages, degraded
reasons) has id-shaped words masked.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.alerts import Alert

MASK = "<id>"

_ID_SHAPED = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # UUIDs: intent ids
    r"|(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{16,}",  # charge ids
    re.IGNORECASE,
)


def mask_ids(text: str) -> str:
    """``text`` with UUIDs and long words of letters and digits replaced by ``<id>``."""
    return _ID_SHAPED.sub(MASK, text)


def alert_summary(alert: Alert) -> dict[str, Any]:
    """An alert as ``/status`` lists it: its kind (the key up to the first ``:``), no text."""
    return {
        "severity": alert.severity.value,
        "kind": alert.key.split(":", 1)[0],
        "component": alert.component,
        "title": mask_ids(alert.title),
        "correlation_id": alert.correlation_id,
        "time": alert.time.isoformat(),
        "suppressed_count": alert.suppressed_count,
    }


def actor_summary(actor: dict[str, Any]) -> dict[str, Any]:
    """An actor's status document with its failure message and degraded reason masked."""
    shown = dict(actor)
    failure = shown.get("last_failure")
    if isinstance(failure, dict) and isinstance(failure.get("message"), str):
        shown["last_failure"] = {**failure, "message": mask_ids(failure["message"])}
    if isinstance(shown.get("degraded"), str):
        shown["degraded"] = mask_ids(shown["degraded"])
    return shown
