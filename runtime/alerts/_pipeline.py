"""Alert delivery: dedup and throttle on submit, a bounded queue, an actor that delivers.

Design choices:

- Throttling happens in ``submit``: a repeat inside the throttle period never takes a queue
  slot. Time is ``trio.current_time()`` (so ``MockClock`` drives it in tests), or
  ``time.monotonic()`` when ``submit`` is called outside a trio run; readings from different
  clocks are never compared (a key last seen under another clock is treated as new).
- Suppressed repeats ride on the next alert sent for the same key (``suppressed_count``).
  No extra "N suppressed" alert is sent when a period ends: that message would be noise of
  its own, and the count is not lost from the numbers (``stats.suppressed_total``).
- An alert dropped because the queue is full does not mark its key as sent, so the next one
  for that key goes through and still carries the suppressed count.
- Alerts of one kind (the key up to its first ``:``) are sent at most ``kind_limit`` times
  per throttle period under distinct keys; further ones are folded into one key,
  ``<kind>:*``, throttled like any other (so they are counted in its ``suppressed_count``),
  and each folded one is logged. Whatever raises alerts under keys that vary with outside
  data (a mistake: see ``Alert``), a flood of them costs admins a handful of alerts, not
  one per request, and one root cause met by many items (a panel that fails every
  activation) is one alert more, not hundreds.
- Sink failures are logged with the exception type and message only, never a traceback:
  tracebacks may render local variables, and sinks hold tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
import trio

from runtime.logs import get_logger

from ._log_sink import LogSink
from ._model import Alert, AlertStats

if TYPE_CHECKING:
    from runtime.config import Settings
    from runtime.plugin_api.protocols import AlertSink
    from runtime.supervision import ActorContext, ActorSpec

_log = get_logger("alerts")

_PRUNE_ABOVE = 1024
"""Forget keys whose throttle period has ended once this many are remembered."""

KIND_LIMIT = 10
"""Alerts of one kind sent under distinct keys per throttle period before they fold."""

KINDS_COUNTED = 64
"""Kinds counted by name in ``stats.submitted_total``; any further one counts as ``other``."""

FOLDED = "*"
"""The last part of the key that folds the alerts of one kind over ``KIND_LIMIT``."""


@dataclasses.dataclass(slots=True)
class _KeyState:
    clock: object
    last_sent: float
    suppressed: int = 0


def _now() -> tuple[object, float]:
    try:
        return trio.lowlevel.current_clock(), trio.current_time()
    except RuntimeError:  # not inside trio.run
        return time.monotonic, time.monotonic()


def _folded(alert: Alert, kind: str, limit: int, throttle: float) -> Alert:
    return dataclasses.replace(
        alert,
        key=f"{kind}:{FOLDED}",
        title=f"{alert.title} (and more {kind} alerts)",
        text=(
            f"{alert.text}\n\nMore than {limit} {kind} alerts within {throttle:g}s: the "
            f"rest are folded into this one and counted as suppressed; each is in the log."
        ),
    )


def _describe_error(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _with_log_sink(sinks: Sequence[AlertSink]) -> tuple[AlertSink, ...]:
    listed = list(sinks)
    if not any(getattr(sink, "name", None) == LogSink.name for sink in listed):
        listed.insert(0, LogSink())
    return tuple(listed)


class AlertPipeline:
    """Takes alerts from anywhere (``submit``) and delivers them to every sink (``run``).

    The ``LogSink`` is added when no sink named ``"log"`` is given, so every alert at least
    reaches the logs. ``run`` is an actor body: give it to the supervisor (``actor_spec``).
    """

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        throttle_seconds: float,
        queue_size: int = 1000,
        sink_timeout: float = 10.0,
        kind_limit: int = KIND_LIMIT,
    ) -> None:
        if throttle_seconds < 0 or math.isnan(throttle_seconds):
            raise ValueError("throttle_seconds must not be negative")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if kind_limit < 1:
            raise ValueError("kind_limit must be at least 1")
        if not sink_timeout > 0:
            raise ValueError("sink_timeout must be positive")
        self._sinks: tuple[AlertSink, ...] = _with_log_sink(sinks)
        self._throttle = throttle_seconds
        self._sink_timeout = sink_timeout
        self._send_channel, self._receive_channel = trio.open_memory_channel[Alert](queue_size)
        self._keys: dict[str, _KeyState] = {}
        self._submitted: dict[str, int] = {}
        self._kind_limit = kind_limit
        self._kinds: dict[str, deque[tuple[object, float]]] = {}
        """Per kind, when its alerts were sent under their own keys (clock, time)."""
        self._sent: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._suppressed_total = 0
        self._dropped_total = 0
        self._failing: frozenset[str] = frozenset()

    @classmethod
    def from_settings(
        cls, settings: Settings, sinks: Sequence[AlertSink], *, sink_timeout: float = 10.0
    ) -> AlertPipeline:
        """Build a pipeline with the throttle and queue size from ``settings.alerts``."""
        return cls(
            sinks,
            throttle_seconds=settings.alerts.throttle_seconds,
            queue_size=settings.alerts.queue_size,
            sink_timeout=sink_timeout,
        )

    @property
    def sinks(self) -> tuple[AlertSink, ...]:
        return self._sinks

    def reconfigure(self, sinks: Sequence[AlertSink], *, throttle_seconds: float) -> None:
        """Deliver to ``sinks`` from the next alert on, throttled by ``throttle_seconds``
        (a reload). What is queued and what throttling remembers stay."""
        if throttle_seconds < 0 or math.isnan(throttle_seconds):
            raise ValueError("throttle_seconds must not be negative")
        self._sinks = _with_log_sink(sinks)
        self._throttle = throttle_seconds

    @property
    def stats(self) -> AlertStats:
        return AlertStats(
            submitted_total=dict(self._submitted),
            sent_total=dict(self._sent),
            failed_total=dict(self._failed),
            suppressed_total=self._suppressed_total,
            dropped_total=self._dropped_total,
        )

    def actor_spec(self, name: str = "alerts", **overrides: Any) -> ActorSpec:
        """An ``ActorSpec`` running this pipeline (not critical for readiness by default)."""
        from runtime.supervision import ActorSpec

        options: dict[str, Any] = {"critical": False}
        options.update(overrides)
        return ActorSpec(name=name, run=self.run, **options)

    # -- submitting ----------------------------------------------------------------------

    def submit(self, alert: Alert) -> None:
        """Queue an alert for delivery. Never raises, never blocks.

        When the alert has no correlation id, the caller's ``correlation_id`` from
        ``structlog.contextvars`` is used, if any.
        """
        try:
            self._submit(alert)
        except Exception as exc:  # the caller is reporting a failure already: never add one
            self._dropped_total += 1
            with contextlib.suppress(Exception):  # logging itself may be what is broken
                _log.error("alert not queued", error=_describe_error(exc), outcome="failed")

    def _submit(self, alert: Alert) -> None:
        clock, now = _now()
        kind = alert.key.split(":", 1)[0]
        counted = (
            kind if kind in self._submitted or len(self._submitted) < KINDS_COUNTED else "other"
        )
        self._submitted[counted] = self._submitted.get(counted, 0) + 1
        if self._throttled(alert.key, clock, now):
            return
        if not self._kind_has_room(kind, clock, now):
            _log.info(
                "alert folded into its kind",
                alert_key=alert.key,
                severity=alert.severity.value,
                title=alert.title,
                outcome="skipped",
            )
            alert = _folded(alert, kind, self._kind_limit, self._throttle)
            if self._throttled(alert.key, clock, now):
                return

        state = self._keys.get(alert.key)
        suppressed = state.suppressed if state is not None else 0
        changes: dict[str, Any] = {}
        if suppressed:
            changes["suppressed_count"] = alert.suppressed_count + suppressed
        if alert.correlation_id is None:
            correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
            if correlation_id is not None:
                changes["correlation_id"] = str(correlation_id)
        if changes:
            alert = dataclasses.replace(alert, **changes)

        try:
            self._send_channel.send_nowait(alert)
        except trio.WouldBlock:
            self._dropped_total += 1
            _log.error(
                "alert queue full, alert dropped",
                alert_key=alert.key,
                severity=alert.severity.value,
                title=alert.title,
                outcome="failed",
            )
            return

        if len(self._keys) >= _PRUNE_ABOVE and alert.key not in self._keys:
            self._prune(clock, now)
        self._keys[alert.key] = _KeyState(clock=clock, last_sent=now)
        if alert.key != f"{kind}:{FOLDED}":
            self._kinds.setdefault(kind, deque()).append((clock, now))

    def _throttled(self, key: str, clock: object, now: float) -> bool:
        """Whether ``key`` was sent within the throttle period (then count it suppressed)."""
        state = self._keys.get(key)
        if (
            state is None
            or state.clock is not clock
            or self._throttle <= 0
            or now - state.last_sent >= self._throttle
        ):
            return False
        state.suppressed += 1
        self._suppressed_total += 1
        _log.debug("alert suppressed", alert_key=key, outcome="skipped")
        return True

    def _kind_has_room(self, kind: str, clock: object, now: float) -> bool:
        sent = self._kinds.get(kind)
        if sent is None or self._throttle <= 0:
            return True
        while sent and (sent[0][0] is not clock or now - sent[0][1] >= self._throttle):
            sent.popleft()
        if not sent:
            del self._kinds[kind]
            return True
        return len(sent) < self._kind_limit

    def _prune(self, clock: object, now: float) -> None:
        for kind in list(self._kinds):
            self._kind_has_room(kind, clock, now)
        for key, state in list(self._keys.items()):
            expired = state.clock is not clock or now - state.last_sent >= self._throttle
            if expired and state.suppressed == 0:
                del self._keys[key]

    # -- delivering ----------------------------------------------------------------------

    async def run(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver queued alerts until ``ctx.stop_requested``, then deliver what is queued.

        The final drain is bounded by the actor's shutdown timeout: the supervisor cancels
        this function when it runs out. Alerts still queued then stay queued, and a restarted
        pipeline delivers them.
        """
        waiting: trio.CancelScope | None = None

        async def cancel_wait_on_stop() -> None:
            await ctx.stop_requested.wait()
            if waiting is not None:
                waiting.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_wait_on_stop)
            task_status.started()
            while not ctx.stop_requested.is_set():
                alert: Alert | None = None
                with trio.CancelScope() as waiting:
                    alert = await self._receive_channel.receive()
                waiting = None
                if alert is not None:
                    await self._deliver(alert, ctx)
            while True:
                try:
                    alert = self._receive_channel.receive_nowait()
                except trio.WouldBlock:
                    break
                await self._deliver(alert, ctx)
            nursery.cancel_scope.cancel()

    async def deliver(self, alert: Alert) -> None:
        """Send one alert to every sink now, bypassing queue and throttle (for tests, CLIs)."""
        await self._deliver(alert, None)

    async def _deliver(self, alert: Alert, ctx: ActorContext | None) -> None:
        failed: set[str] = set()
        async with trio.open_nursery() as nursery:
            for sink in self._sinks:
                nursery.start_soon(self._send_one, sink, alert, failed)
        failing = frozenset(failed)
        if ctx is not None and failing != self._failing:
            reason = f"alert sinks failing: {', '.join(sorted(failing))}" if failing else None
            try:
                ctx.set_degraded(reason)
            except Exception as exc:
                _log.warning("could not report degraded state", error=_describe_error(exc))
        self._failing = failing

    async def _send_one(self, sink: AlertSink, alert: Alert, failed: set[str]) -> None:
        name = str(getattr(sink, "name", type(sink).__name__))
        error: str | None = None
        with trio.move_on_after(self._sink_timeout) as scope:
            try:
                await sink.send(alert)
            except Exception as exc:
                error = _describe_error(exc)
        if scope.cancelled_caught:
            error = f"timed out after {self._sink_timeout:g}s"
        if error is None:
            self._sent[name] = self._sent.get(name, 0) + 1
            return
        self._failed[name] = self._failed.get(name, 0) + 1
        failed.add(name)
        _log.warning(
            "alert sink failed",
            sink=name,
            alert_key=alert.key,
            error=error,
            failure_type="dependency_error",
            outcome="failed",
        )
