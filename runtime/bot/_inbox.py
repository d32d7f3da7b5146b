"""Processing the update inbox: claim stored updates, run their handlers, settle them.

Any number of processes run this side by side: claims use ``FOR UPDATE SKIP LOCKED`` and
expire, so a process killed mid-handler leaves its updates to be claimed again. Within a
claimed batch, updates of different chats run concurrently and updates of one chat run
in order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from runtime.alerts import Alert, Severity
from runtime.failures import Failure, Outcome
from runtime.logs import correlation, get_logger, log_failure
from runtime.storage import Database, inbox
from runtime.storage.inbox import InboxUpdate
from runtime.supervision import ActorContext, Backoff, backoff_delay

from ._middleware import HandlerFailed

Feed = Callable[[InboxUpdate, str], Awaitable[Any]]
"""Runs one update's handlers (trio side; crosses into asyncio) given the update and its
correlation id; returns what the dispatcher returned (a ``HandlerFailed`` on failure)."""

RETRY_BACKOFF = Backoff(min=2.0, max=300.0, multiplier=2.0, jitter=0.2)
"""Between attempts of an update whose handler failed transiently: 2 s, 4 s ... 5 min."""

_log = get_logger("bot.inbox")


def report_failure(ctx: ActorContext, exc: BaseException, failure: Failure) -> None:
    """A transient failure (Telegram or the database away) degrades the actor while it
    lasts; anything else counts against its failure budget."""
    if failure.transient:
        ctx.set_degraded(f"{failure.type.value}: {failure.message[:200]}")
    else:
        ctx.record_failure(exc)


class AlertSubmitter(Protocol):
    def submit(self, alert: Alert) -> None: ...


class Wakeup:
    """Tells an idle processor that something was stored (same process)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._event.wait()
        self._event = trio.Event()


class InboxProcessor:
    def __init__(
        self,
        db: Callable[[], Database],
        *,
        owner: str,
        alerts: Callable[[], AlertSubmitter],
        batch_size: int = 20,
        claim_seconds: float = 120.0,
        handler_timeout: float = 60.0,
        max_attempts: int = 8,
        concurrency: int = 8,
        idle_seconds: float = 2.0,
        retry_backoff: Backoff = RETRY_BACKOFF,
    ) -> None:
        if handler_timeout >= claim_seconds:
            raise ValueError("a claim must outlast the handler timeout")
        self._db = db
        self.owner = owner
        self._alerts = alerts
        self.batch_size = batch_size
        self.claim_seconds = claim_seconds
        self.handler_timeout = handler_timeout
        self.max_attempts = max_attempts
        self.idle_seconds = idle_seconds
        self.retry_backoff = retry_backoff
        self._limiter = trio.CapacityLimiter(concurrency)
        self.wakeup = Wakeup()
        self.processed = 0
        """Updates settled by this processor (for tests and status)."""

    async def run(self, ctx: ActorContext, feed: Feed) -> None:
        """Claim and process until ``ctx.stop_requested``; updates in flight finish."""
        failures = 0
        while not ctx.stop_requested.is_set():
            try:
                claimed = await inbox.claim(
                    self._db(),
                    owner=self.owner,
                    limit=self.batch_size,
                    claim_seconds=self.claim_seconds,
                )
            except Exception as exc:
                failures += 1
                failure = log_failure(_log, exc, operation="bot.inbox.claim", attempt=failures)
                report_failure(ctx, exc, failure)
                pause = backoff_delay(self.retry_backoff, min(failures - 1, 16), random.random())
                await self.wakeup.wait(pause)
                continue
            if failures:
                failures = 0
                ctx.record_success()
            if claimed:
                await self.process(claimed, feed, ctx.stop_requested)
            if len(claimed) < self.batch_size and not ctx.stop_requested.is_set():
                await self.wakeup.wait(self.idle_seconds)

    async def process(
        self, claimed: Sequence[InboxUpdate], feed: Feed, stop: trio.Event | None = None
    ) -> None:
        """Process a claimed batch: chats concurrently, each chat's updates in order."""
        chats: dict[object, list[InboxUpdate]] = {}
        for update in claimed:
            key = update.chat_key
            chats.setdefault(key if key is not None else ("update", update.update_id), []).append(
                update
            )
        async with trio.open_nursery() as nursery:
            for updates in chats.values():
                nursery.start_soon(self._run_chat, updates, feed, stop)

    async def _run_chat(
        self, updates: list[InboxUpdate], feed: Feed, stop: trio.Event | None
    ) -> None:
        async with self._limiter:
            for index, update in enumerate(updates):
                if stop is not None and stop.is_set():
                    await self._release(updates[index:])
                    return
                await self._run_one(update, feed)

    async def _run_one(self, update: InboxUpdate, feed: Feed) -> None:
        with correlation(None, update_id=update.update_id) as correlation_id:
            try:
                result = await self._feed(update, feed, correlation_id)
            except BaseException:
                # Cancelled mid-handler (a shutdown past its timeout): hand it back so it
                # runs again at once after the restart rather than after the claim expires.
                await self._release([update])
                raise
            try:
                await self._settle(update, result)
            except Exception as exc:
                # The claim expires and the update runs again: handlers are safe to repeat.
                log_failure(_log, exc, operation="bot.inbox.settle", outcome=Outcome.DEGRADED)

    async def _feed(self, update: InboxUpdate, feed: Feed, correlation_id: str) -> Any:
        try:
            with trio.fail_after(self.handler_timeout):
                return await feed(update, correlation_id)
        except Exception as exc:  # outside the handler boundary: parsing, the bridge, time
            failure = log_failure(_log, exc, operation="bot.update", attempt=update.attempts)
            return HandlerFailed(failure, retry=failure.transient, payment=_is_payment(update))

    async def _settle(self, update: InboxUpdate, result: Any) -> None:
        db = self._db()
        if not isinstance(result, HandlerFailed):
            await inbox.mark_processed(db, update, owner=self.owner)
            self.processed += 1
            return
        error = f"{result.failure.exception_type}: {result.failure.message}"
        if not result.retry:
            await inbox.give_up(db, update, owner=self.owner, error=error)
            self.processed += 1
            return
        delay = _delay(self.retry_backoff, update.attempts, result.failure)
        again = await inbox.retry_later(
            db,
            update,
            owner=self.owner,
            error=error,
            delay_seconds=delay,
            max_attempts=self.max_attempts,
        )
        if again is False:
            self.processed += 1
            _log.error(
                "update given up after its last attempt",
                operation="bot.update",
                outcome=Outcome.FAILED,
                failure_type=result.failure.type.value,
                attempts=update.attempts,
                payment=result.payment,
            )
            if result.payment:
                self._alert_given_up(update, result.failure)

    def _alert_given_up(self, update: InboxUpdate, failure: Failure) -> None:
        try:
            self._alerts().submit(
                Alert(
                    severity=Severity.CRITICAL,
                    key=f"bot_payment_given_up:{update.update_id}",
                    component="bot",
                    title="a payment update was given up",
                    text=(
                        f"update {update.update_id} failed {update.attempts} times "
                        f"({failure.type.value}: {failure.message[:300]}). The payment "
                        "reconciliation should still credit it; check the payment by hand."
                    ),
                )
            )
        except Exception as exc:
            _log.warning("could not alert", operation="alert", error=repr(exc))

    async def _release(self, updates: Sequence[InboxUpdate]) -> None:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                await inbox.release(self._db(), updates, owner=self.owner)
            except Exception as exc:  # their claims expire anyway
                _log.warning(
                    "could not release claimed updates",
                    operation="bot.inbox.release",
                    error=repr(exc),
                )


def _delay(backoff: Backoff, attempts: int, failure: Failure) -> float:
    if failure.retry_after is not None and math.isfinite(failure.retry_after):
        return max(0.0, failure.retry_after)
    return backoff_delay(backoff, max(0, attempts - 1), random.random())


def _is_payment(update: InboxUpdate) -> bool:
    payload = update.payload
    message = payload.get("message")
    return "pre_checkout_query" in payload or (
        isinstance(message, dict) and "successful_payment" in message
    )
