"""The backlog gauges: read at most once per interval, bounded in time, last value kept."""

from __future__ import annotations

import trio
import trio.testing

from runtime.metrics import BacklogCollector, Metrics
from runtime.storage.backlog import Backlog, Waiting


class Reads:
    def __init__(self) -> None:
        self.count = 0
        self.hang = False
        self.fail = False

    async def __call__(self) -> Backlog:
        self.count += 1
        if self.hang:
            await trio.sleep_forever()
        if self.fail:
            raise ConnectionError("the database is gone")
        return Backlog({"notify": Waiting(self.count, 4.0)}, Waiting(2, 9.0))


def _samples(metrics: Metrics) -> dict[str, float]:
    return {
        sample.name + "".join(f"{{{v}}}" for v in sample.labels.values()): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
    }


def _collector(reads: Reads) -> tuple[Metrics, BacklogCollector]:
    metrics = Metrics()
    collector = BacklogCollector(reads, min_interval=10.0, timeout=2.0, clock=trio.current_time)
    metrics.register(collector)
    metrics.refresh_before_render(collector.refresh)
    return metrics, collector


async def test_nothing_is_exported_before_the_first_read() -> None:
    metrics, _ = _collector(Reads())
    assert not any(name.startswith("vpnbot_outbox") for name in _samples(metrics))


async def test_scrapes_read_once_per_interval_however_many_come(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reads = Reads()
    metrics, _ = _collector(reads)
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(metrics.render_fresh)
    assert reads.count == 1
    samples = _samples(metrics)
    assert samples["vpnbot_outbox_due_jobs{notify}"] == 1
    assert samples["vpnbot_outbox_oldest_due_seconds{notify}"] == 4.0
    assert samples["vpnbot_inbox_pending_updates"] == 2
    assert samples["vpnbot_inbox_oldest_pending_seconds"] == 9.0
    await trio.sleep(10.0)
    await metrics.render_fresh()
    assert reads.count == 2
    assert _samples(metrics)["vpnbot_outbox_due_jobs{notify}"] == 2


async def test_a_hanging_or_failing_database_keeps_the_last_figures_and_ages_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reads = Reads()
    metrics, _ = _collector(reads)
    await metrics.render_fresh()
    reads.hang = True
    await trio.sleep(10.0)
    started = trio.current_time()
    await metrics.render_fresh()
    assert trio.current_time() - started == 2.0
    reads.hang, reads.fail = False, True
    await trio.sleep(10.0)
    await metrics.render_fresh()
    samples = _samples(metrics)
    assert samples["vpnbot_outbox_due_jobs{notify}"] == 1
    assert samples["vpnbot_backlog_age_seconds"] == 22.0
