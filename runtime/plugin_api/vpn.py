"""The VPN-backend extension point.

Every call is idempotent and absolute: accounts have deterministic names chosen by the
core, and expiry and limits are set to absolute values. A retry after a crash therefore
adopts what the crashed attempt created instead of creating a second account.

**Traffic is per paid period.** A period starts when it is paid for (the first purchase,
each renewal, manual or automatic) and lasts until the next one starts or the
subscription ends; a plan's traffic limit counts what the account used since its period
started. ``AccountSpec.period_start`` says when that was. An account set up for another
period is entering a new one: ``ensure_account`` resets its usage once, so a renewal
after the traffic ran out restores access, and a retried activation of the same period
never resets again.

Panels keep no notion of our periods, so a backend remembers on the panel which period it
last reset for: a ``PeriodMark`` in a free-text field of the account (a note, a comment),
written before the reset and completed after it with the usage seen before the reset; a
retry that finds a mark still open compares the usage now with that figure, so a crash
between the two calls neither skips the reset nor repeats it (``enter_period`` runs it). A
panel without a reset call can give each period an account of its own instead, as the
Outline backend does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar, runtime_checkable

from runtime.logs import get_logger

T = TypeVar("T")

_log = get_logger("vpn_backend")


@dataclass(frozen=True, slots=True)
class AccountSpec:
    name: str
    """Deterministic, lowercase ``[a-z0-9_]``, at most 32 characters: the same subscription
    always gets the same name."""
    expires_at: datetime
    """Absolute, timezone-aware."""
    telegram_id: int
    period_start: datetime
    """When the current paid period started (absolute, timezone-aware): usage counts from
    here. Another ``period_start`` than the one the account was last set up for is a new
    period."""
    traffic_limit_bytes: int | None = None
    """Traffic per period; None: unlimited."""
    device_limit: int | None = None
    """None: unlimited. Backends without such a limit ignore it."""

    @property
    def period(self) -> str:
        """The period's short, stable name for marks kept on a panel: its start in unix
        microseconds (as precise as the core keeps it: two payments in one second are two
        periods)."""
        return str((self.period_start - _EPOCH) // timedelta(microseconds=1))


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    reference: str
    """The panel's own id of the account (a numeric id, a UUID, the name itself)."""
    access_url: str
    """What the user imports into a client: a subscription URL or a config such as an
    ``ss://`` key."""
    expires_at: datetime | None
    enabled: bool
    """The account can connect right now: not disabled, not expired, not over its
    traffic."""
    limited: bool = False
    """It cannot connect only because its period's traffic is used up (``enabled`` is
    False then)."""
    used_bytes: int | None = None
    """Traffic used in the current period as the panel counts it; None: the backend does
    not read it (``BackendCapabilities.usage``)."""
    traffic_limit_bytes: int | None = None
    """The traffic limit the panel applies now; None: unlimited, or not read."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MARK = re.compile(r"vpnbot-period:(?P<period>\d+)(?:/open:(?P<used>\d+))?")
_MAX_DIGITS = 24
"""Longer figures are no mark of ours (and would not even convert to an int)."""


@dataclass(frozen=True, slots=True)
class PeriodMark:
    """Which period an account's usage was reset for, kept in a free-text field of the
    account on its panel (``vpnbot-period:<period>``, with ``/open:<bytes>`` while the reset
    is under way).

    The protocol, for panels whose reset call and text field are two requests:

    1. the mark names an earlier period (or is missing): write it *open* for the new
       period, with the usage seen now (``opened(spec, used)``), in the same request that
       sets the spec's values; then reset the usage; then write it *closed*
       (``closed(spec)``);
    2. the mark is open for this period: the reset happened if the usage is now below the
       figure the mark holds (``reset_evident``), else it is done again; then closed;
    3. the mark is closed for this period: nothing to reset.

    An account that used nothing needs no reset: it is closed at once, so an open mark
    always holds a positive figure. ``enter_period`` runs the protocol.
    """

    period: str
    used_before_reset: int | None = None
    """Set while the reset is under way: the usage seen before it."""

    @property
    def is_open(self) -> bool:
        return self.used_before_reset is not None

    @classmethod
    def opened(cls, spec: AccountSpec, used_bytes: int) -> PeriodMark:
        return cls(spec.period, used_bytes)

    @classmethod
    def closed(cls, spec: AccountSpec) -> PeriodMark:
        return cls(spec.period)

    @classmethod
    def find(cls, text: str | None) -> PeriodMark | None:
        found = _MARK.search(text or "")
        if found is None:
            return None
        period, used = found["period"], found["used"]
        if len(period) > _MAX_DIGITS or (used is not None and len(used) > _MAX_DIGITS):
            return None
        return cls(period, int(used) if used is not None else None)

    def is_for(self, spec: AccountSpec) -> bool:
        return self.period == spec.period

    def reset_evident(self, used_bytes: int) -> bool:
        """For an open mark: the usage went down since it was written, so the reset it
        announced took place."""
        return self.used_before_reset is not None and used_bytes < self.used_before_reset

    def render(self) -> str:
        text = f"vpnbot-period:{self.period}"
        return text if self.used_before_reset is None else f"{text}/open:{self.used_before_reset}"

    def written_into(self, text: str | None, *, max_length: int | None = None) -> str:
        """``text`` with this mark in place of any earlier one (or appended on a line of
        its own); the operator's own words are kept, shortened if ``max_length`` says so."""
        mark = self.render()
        own = _MARK.sub("", text or "").strip()
        if max_length is not None:
            own = own[: max(0, max_length - len(mark) - 1)].rstrip()
        return f"{own}\n{mark}" if own else mark


def needs_reset(mark: PeriodMark | None, spec: AccountSpec, used_bytes: int) -> bool:
    """Whether an existing account's usage must be reset for ``spec``'s period, given the
    mark found on it and the usage it shows now."""
    if mark is not None and mark.is_for(spec):
        return mark.is_open and not mark.reset_evident(used_bytes)
    return used_bytes > 0


async def enter_period(
    spec: AccountSpec,
    text: str | None,
    used_bytes: int,
    *,
    write: Callable[[str | None], Awaitable[T]],
    reset: Callable[[], Awaitable[object]],
    max_length: int | None = None,
) -> T:
    """Bring an existing account into ``spec``'s period, following ``PeriodMark``'s
    protocol; returns what the last ``write`` returned.

    ``text`` is the account's free-text field as it is now and ``used_bytes`` its usage;
    ``write(new_text)`` is the panel call that sets the spec's values and, unless
    ``new_text`` is None, that field; ``reset()`` is the panel's reset of the usage.
    """
    mark = PeriodMark.find(text)
    closed = PeriodMark.closed(spec)
    if not needs_reset(mark, spec, used_bytes):
        same = mark == closed
        return await write(None if same else closed.written_into(text, max_length=max_length))
    opened = PeriodMark.opened(spec, used_bytes)
    await write(opened.written_into(text, max_length=max_length))
    await reset()
    _log.info(
        "usage reset for a new period",
        operation="ensure_account",
        account=spec.name,
        period=spec.period,
        used_bytes=used_bytes,
    )
    return await write(closed.written_into(text, max_length=max_length))


@runtime_checkable
class VpnBackend(Protocol):
    """A VPN panel. Methods raise ``DependencyError`` when the panel fails (transient for
    network errors, 5xx and 429; permanent for other 4xx), never with a secret in it."""

    name: str

    async def ensure_account(self, spec: AccountSpec) -> Account:
        """Create the account, or adopt the one with this name, and set its expiry and
        limits to the spec's absolute values; enables it. When the spec's period is newer
        than the account's last reset, its usage is reset (once per period). Calling it
        twice gives one state. The answer is the account as the panel now has it: an
        account left unusable is reported so (``enabled``/``limited``), never as usable."""
        ...

    async def disable(self, name: str) -> None:
        """Stop access without forgetting the account. A missing account is not an error."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the account. A missing account is not an error."""
        ...

    async def get_account(self, name: str) -> Account | None: ...

    async def health(self) -> None:
        """Raise ``DependencyError`` when the panel cannot serve."""
        ...
