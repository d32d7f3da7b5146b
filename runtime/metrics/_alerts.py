from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.alerts import AlertPipeline


class AlertsCollector(Collector):
    """Alerts sent, failed, suppressed and dropped, read from the pipeline at scrape time."""

    def __init__(self, pipeline: AlertPipeline) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        stats = self._pipeline.stats
        submitted = CounterMetricFamily(
            "vpnbot_alerts_submitted",
            "Alerts raised, before deduplication, by kind (the key up to its first colon).",
            labels=["key_kind"],
        )
        for kind, count in sorted(stats.submitted_total.items()):
            submitted.add_metric([kind], count)
        yield submitted
        sent = CounterMetricFamily(
            "vpnbot_alerts_sent", "Alerts delivered, by sink.", labels=["sink"]
        )
        failed = CounterMetricFamily(
            "vpnbot_alerts_failed", "Alert deliveries that failed, by sink.", labels=["sink"]
        )
        for sink in self._pipeline.sinks:
            sent.add_metric([sink.name], stats.sent_total.get(sink.name, 0))
            failed.add_metric([sink.name], stats.failed_total.get(sink.name, 0))
        yield sent
        yield failed
        yield CounterMetricFamily(
            "vpnbot_alerts_suppressed",
            "Alerts held back because the same key was sent within the throttle period.",
            value=stats.suppressed_total,
        )
        yield CounterMetricFamily(
            "vpnbot_alerts_dropped",
            "Alerts lost because the queue was full.",
            value=stats.dropped_total,
        )
