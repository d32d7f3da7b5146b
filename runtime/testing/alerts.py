"""Test helpers for alerts: a sink that records, and a contract check for sink authors.

A plugin author checks their sink with::

    async def test_my_sink_follows_the_contract():
        await check_alert_sink(MySink(...))
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import trio

from runtime.alerts import Alert, AlertDeliveryError, Severity
from runtime.plugin_api.protocols import AlertSink


def sample_alert(**changes: Any) -> Alert:
    """A plausible alert; pass fields to change."""
    alert = Alert(
        severity=Severity.WARNING,
        key="test:sample",
        component="tests",
        title="Sample alert",
        text="Something an admin should know about.",
        correlation_id="test-correlation-id",
    )
    return dataclasses.replace(alert, **changes) if changes else alert


class RecordingSink:
    """An ``AlertSink`` that keeps every alert it is sent, in ``alerts``.

    ``fail`` makes ``send`` raise (after recording the attempt in ``attempts``);
    ``delay`` makes it sleep first (``math.inf`` to hang).
    """

    def __init__(
        self,
        name: str = "recording",
        *,
        fail: bool | BaseException = False,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.fail = fail
        self.delay = delay
        self.alerts: list[Alert] = []
        self.attempts: list[Alert] = []

    def __repr__(self) -> str:
        return f"RecordingSink(name={self.name!r}, alerts={len(self.alerts)})"

    @property
    def keys(self) -> list[str]:
        return [alert.key for alert in self.alerts]

    async def send(self, alert: Alert) -> None:
        self.attempts.append(alert)
        if self.delay:
            await trio.sleep(self.delay)
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail:
            raise AlertDeliveryError(f"{self.name} was told to fail")
        self.alerts.append(alert)


async def check_alert_sink(
    sink: object, *, alert: Alert | None = None, within_seconds: float = 10.0
) -> None:
    """Assert that ``sink`` follows the ``AlertSink`` contract and delivers one alert.

    Checks: a non-empty string ``name``, an ``async def send``, and that sending
    ``alert`` (default: ``sample_alert()``) returns within ``within_seconds`` seconds without
    raising. Point the sink at a fake peer first (e.g. an ``httpx.MockTransport`` or a
    local server).
    """
    assert isinstance(sink, AlertSink), f"{sink!r} lacks a name or a send method"
    assert isinstance(sink.name, str) and sink.name, f"{sink!r} needs a non-empty str name"
    assert inspect.iscoroutinefunction(sink.send), f"{sink!r}.send must be an async def"
    with trio.fail_after(within_seconds):
        await sink.send(alert if alert is not None else sample_alert())
