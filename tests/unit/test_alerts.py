"""The alert pipeline: dedup and throttle, containment of sink failures, bounded queue, drain."""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from runtime.alerts import Alert, AlertPipeline, LogSink, Severity
from runtime.alerts._pipeline import KINDS_COUNTED
from runtime.config import Settings
from runtime.metrics import AlertsCollector, Metrics
from runtime.supervision import ActorContext
from runtime.testing import RecordingSink, check_alert_sink, sample_alert


class FakeReporter:
    def __init__(self) -> None:
        self.degraded: list[str | None] = []

    def iteration_failed(self, name: str, exc: BaseException) -> None:
        pass

    def iteration_succeeded(self, name: str) -> None:
        pass

    def set_degraded(self, name: str, reason: str | None, cause: str | None) -> None:
        self.degraded.append(reason)


def make_ctx(pipeline: AlertPipeline, reporter: FakeReporter | None = None) -> ActorContext:
    return ActorContext(
        pipeline.actor_spec(),
        reporter or FakeReporter(),
        lambda name: contextlib.nullcontext(),
    )


def alert(key: str = "k", **changes: Any) -> Alert:
    return sample_alert(key=key, **changes)


@contextlib.asynccontextmanager
async def running(pipeline: AlertPipeline, ctx: ActorContext | None = None) -> Any:
    ctx = ctx or make_ctx(pipeline)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run, ctx)
        yield ctx
        ctx.stop_requested.set()


# -- the model --------------------------------------------------------------------------------


def test_alert_to_json() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = Alert(
        severity=Severity.CRITICAL,
        key="db:down",
        component="storage",
        title="Database unreachable",
        text="connection refused",
        correlation_id="c-1",
        time=when,
        suppressed_count=2,
    )
    assert a.to_json() == {
        "severity": "critical",
        "key": "db:down",
        "component": "storage",
        "title": "Database unreachable",
        "text": "connection refused",
        "correlation_id": "c-1",
        "time": "2025-01-02T03:04:05+00:00",
        "suppressed_count": 2,
    }


def test_alert_time_is_utc() -> None:
    assert alert().time.tzinfo is UTC
    plus_two = timezone(timedelta(hours=2))
    shifted = alert(time=datetime(2025, 1, 1, 12, tzinfo=plus_two))
    assert shifted.time == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert shifted.time.utcoffset() == timedelta(0)
    assert alert(severity="warning").severity is Severity.WARNING


def test_log_sink_is_always_present() -> None:
    pipeline = AlertPipeline([RecordingSink()], throttle_seconds=1)
    assert [sink.name for sink in pipeline.sinks] == ["log", "recording"]
    custom = LogSink()
    assert AlertPipeline([custom], throttle_seconds=1).sinks == (custom,)


def test_from_settings() -> None:
    settings = Settings.model_validate({"alerts": {"throttle_seconds": 7.0, "queue_size": 1}})
    pipeline = AlertPipeline.from_settings(settings, [])
    pipeline.submit(alert("a"))
    pipeline.submit(alert("b"))
    assert pipeline.stats.dropped_total == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"throttle_seconds": -1},
        {"throttle_seconds": 1, "queue_size": 0},
        {"throttle_seconds": 1, "sink_timeout": 0},
        {"throttle_seconds": 1, "kind_limit": 0},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AlertPipeline([], **kwargs)


async def test_log_sink_writes_a_structured_line() -> None:
    with structlog.testing.capture_logs() as logs:
        await LogSink().send(alert("x", severity=Severity.CRITICAL, suppressed_count=3))
        await LogSink().send(alert("y", severity=Severity.INFO))
    assert [entry["log_level"] for entry in logs] == ["error", "warning"]
    assert logs[0]["component"] == "alerts"
    assert logs[0]["alert_key"] == "x"
    assert logs[0]["suppressed_count"] == 3
    assert logs[0]["correlation_id"] == "test-correlation-id"


# -- dedup and throttle -----------------------------------------------------------------------


async def test_same_key_is_throttled_and_carries_the_suppressed_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60)
    async with running(pipeline):
        pipeline.submit(alert("disk", text="first"))
        for _ in range(3):
            await trio.sleep(10)
            pipeline.submit(alert("disk", text="repeat"))
        await trio.sleep(1)
        assert [a.text for a in sink.alerts] == ["first"]
        assert pipeline.stats.suppressed_total == 3

        await trio.sleep(60)  # the period has ended
        pipeline.submit(alert("disk", text="after"))
        await trio.sleep(1)
        pipeline.submit(alert("disk", text="suppressed again"))
        await trio.sleep(61)
        pipeline.submit(alert("disk", text="later"))
        await trio.sleep(1)

    assert [(a.text, a.suppressed_count) for a in sink.alerts] == [
        ("first", 0),
        ("after", 3),
        ("later", 1),
    ]
    stats = pipeline.stats
    assert stats.suppressed_total == 4
    assert stats.sent_total == {"log": 3, "recording": 3}
    assert stats.failed_total == {}


async def test_no_extra_alert_when_a_throttle_period_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=10)
    async with running(pipeline):
        pipeline.submit(alert("k"))
        pipeline.submit(alert("k"))
        await trio.sleep(100)
    assert len(sink.alerts) == 1


async def test_distinct_keys_are_all_sent(autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60)
    async with running(pipeline):
        pipeline.submit(alert("a"))
        pipeline.submit(alert("b"))
        pipeline.submit(alert("a"))
        await trio.sleep(1)
    assert sink.keys == ["a", "b"]
    assert pipeline.stats.suppressed_total == 1


async def test_zero_throttle_sends_everything(autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=0)
    async with running(pipeline):
        for _ in range(3):
            pipeline.submit(alert("a"))
        await trio.sleep(1)
    assert sink.keys == ["a", "a", "a"]


async def test_a_kind_flooding_under_distinct_keys_folds_into_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Keys that vary with outside data (a mistake) cost a handful of alerts, not one per
    request: after ``kind_limit`` distinct keys of one kind in a throttle period, the rest
    share ``<kind>:*``, throttled and counted like any repeat."""
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60, kind_limit=3)
    async with running(pipeline):
        with structlog.testing.capture_logs() as logs:
            for n in range(300):
                pipeline.submit(alert(f"forged:{n}", severity=Severity.CRITICAL))
            pipeline.submit(alert("other:1"))
            await trio.sleep(1)
        assert sink.keys == ["forged:0", "forged:1", "forged:2", "forged:*", "other:1"]
        folded = sink.alerts[3]
        assert folded.severity is Severity.CRITICAL
        assert "More than 3 forged alerts within 60s" in folded.text
        assert pipeline.stats.suppressed_total == 296
        assert sum(e["event"] == "alert folded into its kind" for e in logs) == 297

        await trio.sleep(60)  # a new period: the kind has room again
        pipeline.submit(alert("forged:300"))
        pipeline.submit(alert("forged:*", text="more"))
        await trio.sleep(1)
    assert sink.keys[5:] == ["forged:300", "forged:*"]
    assert sink.alerts[6].suppressed_count == 296


async def test_folding_needs_a_throttle_period(autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=0, kind_limit=1)
    async with running(pipeline):
        for n in range(3):
            pipeline.submit(alert(f"k:{n}"))
        await trio.sleep(1)
    assert sink.keys == ["k:0", "k:1", "k:2"]


def test_submit_outside_trio_uses_the_monotonic_clock() -> None:
    pipeline = AlertPipeline([], throttle_seconds=60, queue_size=10)
    pipeline.submit(alert("a"))
    pipeline.submit(alert("a"))
    assert pipeline.stats.suppressed_total == 1
    assert pipeline.stats.dropped_total == 0


async def test_alerts_queued_before_the_run_are_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60)
    pipeline.submit(alert("early"))
    async with running(pipeline):
        await trio.sleep(1)
    assert sink.keys == ["early"]


async def test_correlation_id_comes_from_the_callers_log_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60)
    async with running(pipeline):
        with structlog.contextvars.bound_contextvars(correlation_id="upd-7"):
            pipeline.submit(alert("a", correlation_id=None))
        pipeline.submit(alert("b", correlation_id="explicit"))
        await trio.sleep(1)
    assert [a.correlation_id for a in sink.alerts] == ["upd-7", "explicit"]


# -- failing sinks ----------------------------------------------------------------------------


async def test_failing_and_hanging_sinks_do_not_break_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    good = RecordingSink("good")
    failing = RecordingSink("failing", fail=True)
    exploding = RecordingSink("exploding", fail=ZeroDivisionError("bug in a sink"))
    hanging = RecordingSink("hanging", delay=math.inf)
    reporter = FakeReporter()
    pipeline = AlertPipeline(
        [failing, hanging, exploding, good], throttle_seconds=1, sink_timeout=5
    )
    ctx = make_ctx(pipeline, reporter)

    with structlog.testing.capture_logs() as logs:
        async with running(pipeline, ctx):
            start = trio.current_time()
            pipeline.submit(alert("a"))
            pipeline.submit(alert("b"))
            await trio.sleep(20)

    assert good.keys == ["a", "b"]
    assert len(hanging.attempts) == 2
    # both alerts were delivered one after the other, each bounded by the sink timeout
    assert trio.current_time() - start >= 10
    stats = pipeline.stats
    assert stats.sent_total == {"log": 2, "good": 2}
    assert stats.failed_total == {"failing": 2, "hanging": 2, "exploding": 2}
    failures = [entry for entry in logs if entry["event"] == "alert sink failed"]
    assert {entry["sink"] for entry in failures} == {"failing", "hanging", "exploding"}
    assert {entry["log_level"] for entry in failures} == {"warning"}
    by_sink = {entry["sink"]: entry["error"] for entry in failures}
    assert by_sink["hanging"] == "timed out after 5s"
    assert by_sink["exploding"] == "ZeroDivisionError: bug in a sink"
    assert reporter.degraded == ["alert sinks failing: exploding, failing, hanging"]


async def test_degraded_is_cleared_when_sinks_recover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = RecordingSink("flaky", fail=True)
    reporter = FakeReporter()
    pipeline = AlertPipeline([flaky], throttle_seconds=1)
    async with running(pipeline, make_ctx(pipeline, reporter)):
        pipeline.submit(alert("a"))
        await trio.sleep(1)
        flaky.fail = False
        pipeline.submit(alert("b"))
        await trio.sleep(1)
    assert reporter.degraded == ["alert sinks failing: flaky", None]
    assert flaky.keys == ["b"]


def test_submit_never_raises() -> None:
    pipeline = AlertPipeline([], throttle_seconds=1)
    with structlog.testing.capture_logs() as logs:
        pipeline.submit("not an alert")  # type: ignore[arg-type]
    assert pipeline.stats.dropped_total == 1
    assert logs[0]["event"] == "alert not queued"


# -- the queue --------------------------------------------------------------------------------


def test_full_queue_drops_and_counts() -> None:
    pipeline = AlertPipeline([], throttle_seconds=60, queue_size=2)
    with structlog.testing.capture_logs() as logs:
        for key in "abcde":
            pipeline.submit(alert(key))
    assert pipeline.stats.dropped_total == 3
    assert [entry["alert_key"] for entry in logs if entry["log_level"] == "error"] == [
        "c",
        "d",
        "e",
    ]


async def test_a_dropped_alert_does_not_throttle_its_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60, queue_size=1)
    pipeline.submit(alert("a"))
    pipeline.submit(alert("b"))  # dropped: the queue is full
    async with running(pipeline):
        await trio.sleep(1)
        pipeline.submit(alert("b"))
        await trio.sleep(1)
    assert sink.keys == ["a", "b"]
    assert pipeline.stats.dropped_total == 1


# -- stopping ---------------------------------------------------------------------------------


async def test_stop_drains_what_is_queued(autojump_clock: trio.testing.MockClock) -> None:
    slow = RecordingSink("slow", delay=1)
    pipeline = AlertPipeline([slow], throttle_seconds=60)
    ctx = make_ctx(pipeline)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run, ctx)
        for key in "abc":
            pipeline.submit(alert(key))
        await trio.sleep(0.5)  # "a" is being delivered
        ctx.stop_requested.set()
    assert slow.keys == ["a", "b", "c"]
    assert trio.current_time() >= 3


async def test_stop_when_idle_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    pipeline = AlertPipeline([], throttle_seconds=60)
    ctx = make_ctx(pipeline)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run, ctx)
        await trio.sleep(5)
        start = trio.current_time()
        ctx.stop_requested.set()
    assert trio.current_time() == start


async def test_cancelled_drain_leaves_the_rest_for_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = RecordingSink("slow", delay=1)
    pipeline = AlertPipeline([slow], throttle_seconds=60)
    for key in "abcd":
        pipeline.submit(alert(key))
    ctx = make_ctx(pipeline)
    ctx.stop_requested.set()
    with trio.move_on_after(1.5):  # the supervisor's shutdown timeout
        await pipeline.run(ctx)
    assert slow.keys == ["a"]

    await pipeline.run(_stopped(pipeline))
    assert slow.keys == ["a", "c", "d"]  # "b" was cut off mid-delivery


def _stopped(pipeline: AlertPipeline) -> ActorContext:
    ctx = make_ctx(pipeline)
    ctx.stop_requested.set()
    return ctx


async def test_deliver_bypasses_queue_and_throttle() -> None:
    sink = RecordingSink()
    pipeline = AlertPipeline([sink], throttle_seconds=60)
    await pipeline.deliver(alert("a"))
    await pipeline.deliver(alert("a"))
    assert sink.keys == ["a", "a"]


# -- the helpers for plugin authors -----------------------------------------------------------


async def test_check_alert_sink_accepts_a_good_sink() -> None:
    sink = RecordingSink()
    await check_alert_sink(sink)
    assert len(sink.alerts) == 1


async def test_check_alert_sink_rejects_bad_sinks(autojump_clock: trio.testing.MockClock) -> None:
    class SyncSend:
        name = "sync"

        def send(self, alert: Alert) -> None:
            pass

    with pytest.raises(AssertionError):
        await check_alert_sink(SyncSend())
    with pytest.raises(AssertionError):
        await check_alert_sink(object())
    with pytest.raises(trio.TooSlowError):
        await check_alert_sink(RecordingSink(delay=math.inf), within_seconds=1)
    with pytest.raises(Exception, match="told to fail"):
        await check_alert_sink(RecordingSink(fail=True))


def test_every_alert_raised_is_counted_by_kind_before_deduplication() -> None:
    """Whoever raises it (billing, the bot, the supervisor's observer), so the count shows
    an alert a forged request made even when throttling held it back."""
    pipeline = AlertPipeline([], throttle_seconds=60, queue_size=1000)
    for n in range(3):
        pipeline.submit(alert(f"payment_mismatch:stars:{n}"))
    pipeline.submit(alert("asyncio_leak"))
    pipeline.submit(alert("asyncio_leak"))
    for n in range(KINDS_COUNTED + 5):  # kinds are our words; a flood of them is bounded
        pipeline.submit(alert(f"kind{n}:x"))
    submitted = pipeline.stats.submitted_total
    assert submitted["payment_mismatch"] == 3 and submitted["asyncio_leak"] == 2
    assert len(submitted) == KINDS_COUNTED + 1 and submitted["other"] == 7
    metrics = Metrics()
    metrics.register(AlertsCollector(pipeline))
    text = metrics.render().decode()
    assert 'vpnbot_alerts_submitted_total{key_kind="payment_mismatch"} 3.0' in text


def test_stats_to_json() -> None:
    pipeline = AlertPipeline([], throttle_seconds=60, queue_size=1)
    pipeline.submit(alert("a"))
    pipeline.submit(alert("a"))
    pipeline.submit(alert("b"))
    assert pipeline.stats.to_json() == {
        "submitted_total": {"a": 2, "b": 1},
        "sent_total": {},
        "failed_total": {},
        "suppressed_total": 1,
        "dropped_total": 1,
    }
