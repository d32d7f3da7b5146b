"""What this process knows of Telegram, learnt from every Bot API call the bot makes.

Telegram's own failures are not failures of the update being handled:

- flood control (429) says when to call again (``retry_after``): the update waits that
  long and nothing else;
- Telegram unreachable (5xx, a proxy's error page, network errors, timeouts, a token it
  refuses) says nothing of when it will answer again. The link is then *down*: the bot is
  reported degraded, a cheap probe (``getMe``) runs every ``probe_interval`` seconds, and
  the first call Telegram answers (a probe's or any other) brings the link back up, which
  wakes whatever waits for it (``sleep_unless_back``, ``wait_changed``).

``TelegramLink`` is an aiogram request middleware: register it on every Bot session of
the process (``session.middleware(link)``) and it watches every call. Any answer from
Telegram other than a 429 or a 5xx counts as Telegram answering, a 400 included, except
to ``getUpdates``: long polling may well work while sending does not.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates

from runtime.failures import Outcome
from runtime.logs import get_logger

from ._seam import call_trio_soon, trio_time

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType

PROBE_INTERVAL = 1.0
"""Seconds between probes while Telegram is unreachable: recovery is seen within about
this long (plus one round trip) of Telegram answering again."""
PROBE_TIMEOUT = 5.0
"""Probes are started on time even while earlier ones hang (a Telegram that accepts
connections but does not answer): up to ``PROBE_TIMEOUT / PROBE_INTERVAL + 1`` at once."""

_CHAIN_LIMIT = 50
_log = get_logger("bot.telegram")


class Trouble(enum.Enum):
    FLOOD_CONTROL = "flood control"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class TelegramTrouble:
    """Telegram, not the update, failed: ``retry_after`` is flood control's wait."""

    kind: Trouble
    description: str
    retry_after: float | None = None


def telegram_trouble(exc: BaseException) -> TelegramTrouble | None:
    """Whether ``exc`` (anywhere in its chain) is Telegram's flood control or Telegram
    being unreachable, rather than a failure of our own handling."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < _CHAIN_LIMIT:
        node = pending.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        found = _trouble_of(node)
        if found is not None:
            return found
        if isinstance(node, BaseExceptionGroup):
            pending.extend(node.exceptions)
        for linked in (node.__cause__, node.__context__):
            if linked is not None:
                pending.append(linked)
    return None


def _trouble_of(exc: BaseException) -> TelegramTrouble | None:
    described = f"{type(exc).__name__}: {_message(exc)}"
    if isinstance(exc, TelegramRetryAfter):
        wait = float(exc.retry_after)
        return TelegramTrouble(Trouble.FLOOD_CONTROL, described, wait if wait >= 0 else 0.0)
    if isinstance(exc, TelegramEntityTooLarge):
        return None  # a file too large stays too large
    if isinstance(
        exc,
        TelegramServerError | TelegramNetworkError | ClientDecodeError | TelegramUnauthorizedError,
    ):
        return TelegramTrouble(Trouble.UNREACHABLE, described)
    return None


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None)
    if not isinstance(text, str):
        text = str(exc)
    return text[:200] or type(exc).__name__


class TelegramLink:
    """Up or down, as the last Bot API calls found it; see the module docstring."""

    def __init__(
        self,
        *,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.reason: str | None = None
        """Why Telegram is taken to be unreachable; None while it answers."""
        self.version = 0
        """Grows on every change between up and down."""
        self.outages = 0
        """Times the link went down (for tests and status)."""
        self._down_since: float | None = None
        self._back_since = -math.inf
        self._changed = trio.Event()
        self._probes = 0
        self._down_reports = 0
        """Failures handed over to trio by the middleware (asyncio's side writes it)."""
        self._down_reports_seen = 0
        """Those trio has taken in (trio's side writes it)."""

    @property
    def down(self) -> bool:
        return self.reason is not None

    @property
    def probes_in_flight(self) -> int:
        return self._probes

    def down_for(self) -> float:
        """Seconds since Telegram stopped answering (0 while it answers)."""
        if self._down_since is None:
            return 0.0
        return max(0.0, trio.current_time() - self._down_since)

    # -- what the calls tell ---------------------------------------------------------

    def unreachable(self, reason: str, *, call_started: float | None = None) -> None:
        """A call failed as if Telegram were away. A call started before Telegram last
        came back (one that hung through the outage, then timed out) proves nothing."""
        if call_started is not None and call_started < self._back_since:
            return
        if self.down:
            self.reason = reason
            return
        self.reason = reason
        self._down_since = trio.current_time()
        self.outages += 1
        _log.warning(
            "Telegram is unreachable; waiting for it to answer again",
            operation="telegram.link",
            outcome=Outcome.DEGRADED,
            failure_type="dependency_error",
            reason=reason,
        )
        self._change()

    def answered(self) -> None:
        if not self.down:
            return
        down_for = self.down_for()
        self.reason = None
        self._down_since = None
        self._back_since = trio.current_time()
        _log.info(
            "Telegram answers again",
            operation="telegram.link",
            outcome=Outcome.SUCCESS,
            down_seconds=round(down_for, 3),
        )
        self._change()

    def _change(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """The aiogram request middleware: every call's outcome updates the link.

        It runs on asyncio's side; the link is trio's, so what a call found is handed over
        (in order: before the call's own result reaches trio)."""
        evidence = not isinstance(method, GetUpdates)
        started = trio_time()
        try:
            response = await make_request(bot, method)
        except Exception as exc:
            trouble = _trouble_of(exc)
            if trouble is not None and trouble.kind is Trouble.UNREACHABLE:
                self._down_reports += 1
                call_trio_soon(self._unreachable_since, trouble.description, started)
            elif isinstance(exc, TelegramAPIError) and evidence:
                self._answered_soon()  # Telegram answered; it refused this one call
            raise
        if evidence:
            self._answered_soon()
        return response

    def _answered_soon(self) -> None:
        """Hand the answer over to trio only when it can change something: the link is
        down, or a failure on its way there may take it down first. While Telegram
        answers, a call costs no hand-over."""
        if self.reason is not None or self._down_reports != self._down_reports_seen:
            call_trio_soon(self.answered)

    def _unreachable_since(self, reason: str, call_started: float) -> None:
        self._down_reports_seen += 1
        self.unreachable(reason, call_started=call_started)

    # -- waiting on it -----------------------------------------------------------------

    async def wait_changed(self, seen: int) -> int:
        """Wait until ``version`` differs from ``seen``; returns the new version."""
        while self.version == seen:
            await self._changed.wait()
        return self.version

    async def sleep_unless_back(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: while Telegram is down, until it answers again."""
        if not math.isfinite(seconds):
            seconds = 3600.0
        with trio.move_on_after(max(0.0, seconds)):
            seen = self.version
            if not self.down:
                await trio.sleep(seconds)
                return
            while self.down:
                seen = await self.wait_changed(seen)

    async def probe_while_down(self, probe: Callable[[], Awaitable[Any]]) -> None:
        """Run until cancelled: while the link is down, start ``probe`` (a cheap call such
        as ``getMe``) every ``probe_interval`` seconds without waiting for a hanging one."""
        async with trio.open_nursery() as nursery:
            seen = self.version
            while True:
                while not self.down:
                    seen = await self.wait_changed(seen)
                if self._probes <= self.probe_timeout / self.probe_interval:
                    self._probes += 1
                    nursery.start_soon(self._probe_once, probe)
                await self.sleep_unless_back(self.probe_interval)

    async def _probe_once(self, probe: Callable[[], Awaitable[Any]]) -> None:
        """A probe's failure is on record already: the probe is a call through this
        link. An answer is recorded here too, in case it was not."""
        try:
            with trio.move_on_after(self.probe_timeout):
                await probe()
                self.answered()
        except Exception as exc:
            _log.debug("probe failed", operation="telegram.link", error=repr(exc)[:200])
        finally:
            self._probes -= 1
