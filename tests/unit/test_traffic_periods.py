"""Traffic periods in the VPN backend API: the period's name, the mark kept on a panel, and
the reset protocol that survives a crash between its panel calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from runtime.plugin_api.vpn import AccountSpec, PeriodMark, enter_period, needs_reset

START = datetime(2030, 1, 1, tzinfo=UTC)


def spec(start: datetime = START) -> AccountSpec:
    return AccountSpec(
        name="u1_s1",
        expires_at=start + timedelta(days=30),
        telegram_id=1,
        period_start=start,
    )


def test_a_period_is_named_by_its_start_to_the_microsecond() -> None:
    assert spec().period == "1893456000000000"
    assert spec(START + timedelta(microseconds=1)).period == "1893456000000001"
    assert spec(START.astimezone(tz=None)).period == spec().period  # any time zone


def test_a_mark_is_found_written_and_replaced_in_free_text() -> None:
    opened = PeriodMark.opened(spec(), 1234)
    assert opened.render() == "vpnbot-period:1893456000000000/open:1234"
    text = opened.written_into("VIP customer\nask Anna")
    assert text == "VIP customer\nask Anna\nvpnbot-period:1893456000000000/open:1234"
    assert PeriodMark.find(text) == opened
    closed = PeriodMark.closed(spec()).written_into(text)
    assert closed == "VIP customer\nask Anna\nvpnbot-period:1893456000000000"
    assert PeriodMark.find(closed) == PeriodMark.closed(spec())
    assert PeriodMark.find("telegram_id 42") is None
    assert PeriodMark.find(None) is None
    assert PeriodMark.find("vpnbot-period:" + "9" * 5000) is None  # a panel's nonsense
    assert PeriodMark.find("vpnbot-period:1/open:" + "9" * 5000) is None


def test_a_mark_fits_a_field_with_a_length_limit() -> None:
    text = PeriodMark.closed(spec()).written_into("x" * 600, max_length=500)
    assert len(text) <= 500
    assert PeriodMark.find(text) == PeriodMark.closed(spec())


@pytest.mark.parametrize(
    ("mark", "used", "expected"),
    [
        (None, 0, False),  # nothing used: nothing to reset
        (None, 10, True),  # an account from before marks, or another period's
        (PeriodMark("1"), 10, True),
        (PeriodMark("1893456000000000"), 10, False),  # this period, closed
        (PeriodMark("1893456000000000", 500), 500, True),  # open: not reset yet
        (PeriodMark("1893456000000000", 500), 20, False),  # open: the usage went down
    ],
)
def test_when_a_reset_is_needed(mark: PeriodMark | None, used: int, expected: bool) -> None:
    assert needs_reset(mark, spec(), used) is expected


@dataclass
class Account:
    """An account on a panel whose reset and text field are two calls."""

    text: str | None = None
    used: int = 0
    calls: list[str] = field(default_factory=list)
    crash_after_reset: bool = False

    async def write(self, text: str | None) -> str | None:
        self.calls.append("write" if text is None else f"write {text}")
        if text is not None:
            self.text = text
        return self.text

    async def reset(self) -> None:
        self.calls.append("reset")
        self.used = 0
        if self.crash_after_reset:
            self.crash_after_reset = False
            raise RuntimeError("killed between the reset and closing the mark")

    async def enter(self, period: AccountSpec) -> str | None:
        return await enter_period(period, self.text, self.used, write=self.write, reset=self.reset)


async def test_a_new_period_resets_once_and_a_retry_does_not() -> None:
    account = Account(text="vpnbot-period:1", used=900)
    assert await account.enter(spec()) == "vpnbot-period:1893456000000000"
    assert account.calls == [
        "write vpnbot-period:1893456000000000/open:900",
        "reset",
        "write vpnbot-period:1893456000000000",
    ]
    account.calls.clear()
    account.used = 50
    await account.enter(spec())
    assert account.calls == ["write"] and account.used == 50


async def test_a_crash_after_the_reset_is_not_followed_by_a_second_one() -> None:
    account = Account(text="vpnbot-period:1", used=900, crash_after_reset=True)
    with pytest.raises(RuntimeError):
        await account.enter(spec())
    assert PeriodMark.find(account.text) == PeriodMark(spec().period, 900)
    account.used = 30  # used since the reset
    account.calls.clear()
    await account.enter(spec())
    assert account.calls == ["write vpnbot-period:1893456000000000"]
    assert account.used == 30


async def test_a_crash_before_the_reset_is_followed_by_the_reset() -> None:
    account = Account(text=PeriodMark(spec().period, 900).render(), used=950)
    await account.enter(spec())
    assert account.calls[-2:] == ["reset", "write vpnbot-period:1893456000000000"]
    assert account.used == 0
