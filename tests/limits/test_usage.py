"""The usage a panel reports, as the screens and reminders see it: cached for a TTL, one
panel call per account however many ask, and a panel that lies, fails or hangs shows the
last good figure or nothing, never an error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import trio
import trio.testing

from runtime.failures import DependencyError
from runtime.plugin_api import BackendCapabilities
from runtime.plugin_api.vpn import Account, AccountSpec
from runtime.traffic import UsageReader, believable


class StubPanel:
    """A backend whose answers the test sets: a figure, an exception, or a hang."""

    capabilities = BackendCapabilities(traffic_limit=True, usage=True)
    name = "stub"

    def __init__(self) -> None:
        self.answer: Any = 5
        self.calls = 0

    async def get_account(self, name: str) -> Account | None:
        self.calls += 1
        await trio.sleep(0.1)
        if self.answer == "hang":
            await trio.sleep_forever()
        if isinstance(self.answer, Exception):
            raise self.answer
        return Account(name, name, "url", datetime.now(UTC), True, used_bytes=self.answer)

    async def ensure_account(self, spec: AccountSpec) -> Account:
        raise NotImplementedError

    async def disable(self, name: str) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def health(self) -> None: ...


@pytest.mark.parametrize(
    ("value", "believed"),
    [(0, 0), (10, 10), (-1, None), (2**80, None), (True, None), ("12", None), (None, None)],
)
def test_only_believable_counts_are_taken(value: object, believed: int | None) -> None:
    assert believable(value) == believed


async def test_a_flood_asks_the_panel_once_per_ttl(autojump_clock: trio.testing.MockClock) -> None:
    panel = StubPanel()
    reader = UsageReader({"stub": panel}, ttl=60, timeout=3)
    seen: list[int | None] = []

    async def press() -> None:
        found = await reader.used("stub", "acc")
        seen.append(found.used_bytes if found else None)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(press)
    assert seen == [5] * 50 and panel.calls == 1
    panel.answer = 7
    await trio.sleep(30)
    assert (await reader.used("stub", "acc")).used_bytes == 5  # type: ignore[union-attr]
    await trio.sleep(31)
    assert (await reader.used("stub", "acc")).used_bytes == 7  # type: ignore[union-attr]
    assert panel.calls == 2


@pytest.mark.parametrize(
    "answer",
    ["hang", DependencyError("panel down", transient=True), RuntimeError("bug"), -5, 2**70],
    ids=["hangs", "down", "raises", "negative", "huge"],
)
async def test_a_bad_panel_shows_the_last_figure_or_nothing(
    autojump_clock: trio.testing.MockClock, answer: Any
) -> None:
    panel = StubPanel()
    reader = UsageReader({"stub": panel}, ttl=60, timeout=3)
    panel.answer = answer
    started = trio.current_time()
    assert await reader.used("stub", "new") is None
    assert trio.current_time() - started <= 3.5, "the screen waits for the timeout at most"
    panel.answer = 9
    assert (await reader.used("stub", "old")).used_bytes == 9  # type: ignore[union-attr]
    await trio.sleep(61)
    panel.answer = answer
    kept = await reader.used("stub", "old")
    assert kept is not None and kept.used_bytes == 9, "the cached figure, not an error"


async def test_a_backend_that_does_not_read_usage_is_not_asked() -> None:
    panel = StubPanel()
    panel.capabilities = BackendCapabilities(traffic_limit=True)  # type: ignore[misc]
    reader = UsageReader({"stub": panel}, ttl=60, timeout=3)
    assert not reader.supported("stub") and not reader.supported("missing")
    assert await reader.used("stub", "acc") is None
    assert await reader.used("missing", "acc") is None
    assert panel.calls == 0


async def test_the_cache_stays_bounded(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from runtime.traffic import _usage

    monkeypatch.setattr(_usage, "MAX_ENTRIES", 3)
    reader = UsageReader({"stub": StubPanel()}, ttl=60, timeout=3)
    for index in range(10):
        assert await reader.used("stub", f"account-{index}") is not None
        assert len(reader._cache) <= 3 and len(reader._locks) <= 3
