"""Updates whose ids went backwards: logged, and admins alerted, once per throttle period.

The real Bot API numbers updates upwards for good; an emulator that restarted starts
again from 1. The inbox keeps such updates all the same (``inbox.Stored``); this tells
whoever runs the bot that its updates come from somewhere that forgot what it sent. The
alert's key is fixed and the text carries counts only: nothing an update says chooses
either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from runtime.alerts import Alert, Severity
from runtime.failures import Outcome
from runtime.logs import get_logger
from runtime.storage.inbox import Stored

ALERT_KEY = "bot_update_ids_went_back"

_log = get_logger("bot.inbox")


class AlertSubmitter(Protocol):
    def submit(self, alert: Alert) -> None: ...


def report_went_back(stored: Stored, alerts: Callable[[], AlertSubmitter] | None) -> None:
    """Log and alert when ``stored`` has updates whose ids went backwards."""
    if not stored.went_backwards:
        return
    renumbered, went_back = len(stored.renumbered), len(stored.went_back)
    _log.warning(
        "update ids went backwards: the updates are kept as new ones",
        operation="bot.inbox.store",
        outcome=Outcome.DEGRADED,
        failure_type="dependency_error",
        renumbered=renumbered,
        went_back=went_back,
        update_ids=[seen for seen, _ in stored.renumbered[:10]] or list(stored.went_back[:10]),
    )
    if alerts is None:
        return
    alert = Alert(
        severity=Severity.WARNING,
        key=ALERT_KEY,
        component="bot",
        title="update ids went backwards",
        text=(
            f"{renumbered} update(s) came with an id already used by another update and "
            f"{went_back} with an id below those already handled. They are handled once "
            "each, as new updates. The Bot API never numbers updates backwards: check "
            "that telegram.api_base points at the server that gave the earlier updates "
            "(an emulator or a local Bot API server that restarted forgets them)."
        ),
    )
    try:
        alerts().submit(alert)
    except Exception as exc:
        _log.warning("could not alert", operation="alert", error=repr(exc))
