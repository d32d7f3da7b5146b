"""Long polling without aiogram's polling loop: getUpdates, store, then acknowledge.

Only one process polls at a time: the poller holds the ``telegram-polling`` lease (renewed
in the background) and stores updates fenced by it, so a poller that lost the lease
stores nothing. Updates are acknowledged by the next ``getUpdates`` offset, which is only
sent once the previous batch is stored; a poller killed in between leaves them
unacknowledged, and Telegram hands them out again (storing is idempotent).

After a failed ``getUpdates`` the poller backs off, but no longer than Telegram stays
unreachable: when it answers again (``TelegramLink``) polling resumes at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, cast

import trio
from aiogram import Bot
from aiogram.methods import GetUpdates

from runtime.bridge import run_asyncio
from runtime.logs import get_logger, log_failure
from runtime.storage import Database, inbox
from runtime.storage.leases import LeaseKeeper, LeaseLost
from runtime.supervision import ActorContext, Backoff, backoff_delay

from ._inbox import report_failure
from ._renumbered import AlertSubmitter, report_went_back
from ._telegram_link import TelegramLink

LEASE = "telegram-polling"
ALLOWED_UPDATES = ["message", "callback_query", "pre_checkout_query", "my_chat_member"]
POLL_BACKOFF = Backoff(min=1.0, max=30.0, multiplier=2.0, jitter=0.2)
SHORT_POLL_PAUSE = 1.0
"""Seconds between empty answers when ``bot.polling_timeout_seconds`` is 0."""

_log = get_logger("bot.polling")


class RawGetUpdates(GetUpdates):
    """``getUpdates`` answered with the JSON objects Telegram sent, unparsed: they are
    stored as they came and parsed once, when handled."""

    __returning__ = list[dict[str, Any]]


async def _get_updates(bot: Bot, offset: int | None, poll_seconds: int) -> list[dict[str, Any]]:
    """asyncio side: one getUpdates, as the JSON objects Telegram sent."""
    method = RawGetUpdates(offset=offset, timeout=poll_seconds, allowed_updates=ALLOWED_UPDATES)
    updates = await bot(method, request_timeout=poll_seconds + 15)
    return cast(list[dict[str, Any]], updates)


class Poller:
    def __init__(
        self,
        db: Callable[[], Database],
        *,
        holder: str,
        on_stored: Callable[[], None],
        alerts: Callable[[], AlertSubmitter] | None = None,
        timeout: int = 25,
        lease_ttl: float = 30.0,
        backoff: Backoff = POLL_BACKOFF,
        link: TelegramLink | None = None,
    ) -> None:
        self._db = db
        self.link = link if link is not None else TelegramLink()
        self.holder = holder
        self._on_stored = on_stored
        self._alerts = alerts
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self.backoff = backoff
        self.stored = 0

    async def run(self, ctx: ActorContext, bot: Bot) -> None:
        """Poll until ``ctx.stop_requested``: wait for the lease, then poll while it holds."""
        async with trio.open_nursery() as nursery:

            async def stop_on_request() -> None:
                await ctx.stop_requested.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_request)
            keeper = LeaseKeeper(self._db(), LEASE, self.holder, self.lease_ttl)
            while True:
                try:
                    async with keeper.held():
                        _log.info("polling lease acquired", operation="polling", lease=LEASE)
                        await self._poll(ctx, bot, keeper)
                except LeaseLost as exc:
                    _log.warning(
                        "polling lease lost; waiting for it again",
                        operation="polling",
                        outcome="degraded",
                        reason=str(exc),
                    )

    async def _poll(self, ctx: ActorContext, bot: Bot, keeper: LeaseKeeper) -> None:
        offset: int | None = None
        failures = 0
        webhook_deleted = False
        while True:
            try:
                if not webhook_deleted:  # getUpdates is refused while a webhook is set
                    await run_asyncio(bot.delete_webhook, drop_pending_updates=False)
                    webhook_deleted = True
                updates = await run_asyncio(_get_updates, bot, offset, self.timeout)
                if updates:
                    await self._store(updates, keeper, fresh_page=offset is None)
                    offset = max(int(u["update_id"]) for u in updates) + 1
                elif self.timeout == 0:
                    await trio.sleep(SHORT_POLL_PAUSE)  # short polling: do not spin
            except LeaseLost:
                raise
            except Exception as exc:
                failures += 1
                failure = log_failure(_log, exc, operation="polling", attempt=failures)
                report_failure(ctx, exc, failure)
                if failure.retry_after is not None:
                    await trio.sleep(failure.retry_after)
                else:
                    delay = backoff_delay(self.backoff, min(failures - 1, 16), random.random())
                    await self.link.sleep_unless_back(delay)
                continue
            if failures:
                failures = 0
                ctx.record_success()

    async def _store(
        self, updates: Sequence[dict[str, Any]], keeper: LeaseKeeper, *, fresh_page: bool
    ) -> None:
        """The whole page in one statement; the caller acknowledges it (the next offset)
        only once this returned. ``fresh_page``: the first page since polling started."""
        lease = keeper.lease
        if lease is None:
            raise LeaseLost("the polling lease is not held")
        stored = await inbox.store(
            self._db(), _storable(updates), lease=lease, fresh_page=fresh_page
        )
        self.stored += stored
        report_went_back(stored, self._alerts)
        self._on_stored()


def _storable(updates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The updates the inbox can keep. The others are dropped with an error in the log: they
    are still acknowledged, or the same answer would stop polling for good."""
    kept = []
    for update in updates:
        try:
            inbox.check_update(update)
        except inbox.InvalidUpdate as exc:
            _log.error(
                "update refused: the inbox cannot keep it",
                operation="polling",
                outcome="skipped",
                failure_type="domain_error",
                reason=str(exc),
                update_id=update.get("update_id"),
            )
            continue
        kept.append(update)
    return kept
