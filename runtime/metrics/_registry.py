from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The counters the runtime increments, plus collectors that read live state on scrape."""

    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.failures = Counter(
            "vpnbot_failures_total",
            "Failures by component and failure type.",
            ["component", "failure_type"],
            registry=self.registry,
        )

        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def refresh_before_render(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await ``refresh`` before each ``render_fresh``: for figures read from elsewhere
        (the database), which the refresher bounds in time and frequency itself."""
        self._refreshers.append(refresh)

    async def render_fresh(self) -> bytes:
        for refresh in self._refreshers:
            await refresh()
        return self.render()

    def render(self) -> bytes:
        return generate_latest(self.registry)
