"""Processing the update inbox: claim stored updates, run their handlers, settle them.

Any number of processes run this side by side: claims use ``FOR UPDATE SKIP LOCKED`` and
expire, so a process killed mid-handler leaves its updates to be claimed again. Updates
of different chats run concurrently and updates of one chat run in order.

There is no barrier between batches: up to ``max_in_flight`` updates are handled at a
time, and a new batch is claimed as soon as a batch's worth of them has finished. An
update whose handler finished is settled with the others that finished meanwhile, in one
statement (``inbox.mark_many_processed``): its handler's effects are committed by then,
and until the settle commits a crash only makes it run again, as a crash mid-handler
would. ``processed`` counts an update once its settle committed.

The bot's feed runs on asyncio's side (``OnAsyncio``): each claimed batch then crosses
the seam once, each chat's updates run in order in one asyncio task there, and finished
updates come back in groups (``_chains``). A feed on trio's side (tests) runs a trio task
per chat instead. Either way, an update not run to its end (a stop, a cancellation) is
released at once, so it runs again without waiting for its claim to expire.

A claimed update carries its sender's user record as the claim read it, so the handler
boundary need not record a contact that changes nothing. It is dropped when an update of
the same chat finished in this process after that claim was made (it may be stale).

How an update is settled follows the handler boundary's ``Next``:

- Telegram's failures cost no attempt. Flood control: the update runs again after
  ``retry_after``. Telegram unreachable: the bot is degraded, and the update waits until
  Telegram answers again (``TelegramLink``), when every update waiting for it, this
  process's or another's, is made due at once; a fallback delay as long as the outage so
  far (``telegram_backoff``) covers a wake-up that never comes.
- A failure of the handling is retried with backoff (``retry_backoff``) when it may pass,
  up to ``max_attempts``; a bug is given up at once (money: after ``max_attempts``).
- An update given up is kept (``inbox.dead_updates``) and admins are alerted once; it runs
  again when an operator replays it (the admin ``/replay`` command, ``vpnbot updates``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from runtime.alerts import Alert, Severity
from runtime.bridge import run_asyncio
from runtime.failures import TELEGRAM, Failure, FailureType, Outcome
from runtime.logs import correlation, get_logger, log_failure
from runtime.storage import Database, inbox
from runtime.storage.inbox import InboxUpdate
from runtime.supervision import ActorContext, Backoff, backoff_delay

from ._chains import Batch, ChatChains, Report, RunOne
from ._middleware import HandlerFailed, Next, next_step
from ._seam import call_trio_soon
from ._telegram_link import TelegramLink, TelegramTrouble, Trouble, telegram_trouble

Feed = Callable[[InboxUpdate, str], Awaitable[Any]]
"""Runs one update's handlers (trio side; crosses into asyncio) given the update and its
correlation id; returns what the dispatcher returned (a ``HandlerFailed`` on failure)."""


@dataclasses.dataclass(frozen=True, slots=True)
class OnAsyncio:
    """A feed whose ``run_one`` runs one update on asyncio's side (the dispatcher): each
    claimed batch then crosses the seam once, and its updates run there (``_chains``)."""

    run_one: RunOne


RETRY_BACKOFF = Backoff(min=2.0, max=300.0, multiplier=2.0, jitter=0.2)
"""Between attempts of an update whose handler failed transiently: 2 s, 4 s ... 5 min."""
TELEGRAM_BACKOFF = Backoff(min=2.0, max=300.0, jitter=0.2)
"""How long an update waits for an unreachable Telegram if no one wakes it: as long as
Telegram has been down so far, within these bounds."""
UPDATE_KINDS = frozenset(
    {"message", "callback_query", "pre_checkout_query", "my_chat_member", "edited_message"}
)
"""Update types named in alert keys; any other is ``other`` (keys never carry what a
sender chose)."""

_log = get_logger("bot.inbox")


def report_failure(ctx: ActorContext, exc: BaseException, failure: Failure) -> None:
    """A transient failure (Telegram or the database away) degrades the actor while it
    lasts; anything else counts against its failure budget."""
    if failure.transient:
        ctx.set_degraded(f"{failure.type.value}: {failure.message[:200]}", cause=failure.dependency)
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
        link: TelegramLink | None = None,
        batch_size: int = 100,
        claim_seconds: float = 120.0,
        handler_timeout: float = 60.0,
        max_attempts: int = 8,
        max_in_flight: int = 200,
        idle_seconds: float = 2.0,
        retry_backoff: Backoff = RETRY_BACKOFF,
        telegram_backoff: Backoff = TELEGRAM_BACKOFF,
    ) -> None:
        if handler_timeout >= claim_seconds:
            raise ValueError("a claim must outlast the handler timeout")
        self._db = db
        self.owner = owner
        self._alerts = alerts
        self.link = link if link is not None else TelegramLink()
        self.batch_size = batch_size
        self.claim_seconds = claim_seconds
        self.handler_timeout = handler_timeout
        self.max_attempts = max_attempts
        self.idle_seconds = idle_seconds
        self.retry_backoff = retry_backoff
        self.telegram_backoff = telegram_backoff
        if max_in_flight < batch_size:
            raise ValueError("max_in_flight must hold at least one batch")
        self.max_in_flight = max_in_flight
        self.wakeup = Wakeup()
        """Set when something was stored, or when room for a batch freed up."""
        self._in_flight = 0
        self._chats: dict[object, deque[tuple[InboxUpdate, int]]] = {}
        """Per chat, its updates not finished yet (with the number of their claim)."""
        self._claims = 0
        self._finished_while_claiming: set[object] = set()
        self._done: list[InboxUpdate] = []
        self._done_added = trio.Event()
        self.processed = 0
        """Updates settled by this processor (for tests and status)."""
        self.woken = 0
        """Updates made due at once because Telegram answered again (for tests and status)."""
        self._claim_trouble: str | None = None
        self._claim_cause: str | None = None
        """The dependency the last failed claim named (the database, usually)."""

    async def run(self, ctx: ActorContext, feed: Feed | OnAsyncio) -> None:
        """Claim and process until ``ctx.stop_requested``; updates in flight finish."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_telegram, ctx)
            async with self._pipeline(feed, ctx.stop_requested) as add:
                await self._claim_loop(ctx, add)
            nursery.cancel_scope.cancel()

    async def _claim_loop(
        self, ctx: ActorContext, add: Callable[[Sequence[InboxUpdate], int], None]
    ) -> None:
        failures = 0
        while not ctx.stop_requested.is_set():
            if self.max_in_flight - self._in_flight < self.batch_size:
                await self.wakeup.wait(self.idle_seconds)
                continue
            try:
                number = self._start_claim()
                claimed = await inbox.claim(
                    self._db(),
                    owner=self.owner,
                    limit=self.batch_size,
                    claim_seconds=self.claim_seconds,
                )
            except Exception as exc:
                failures += 1
                failure = log_failure(_log, exc, operation="bot.inbox.claim", attempt=failures)
                self._claim_trouble = f"{failure.type.value}: {failure.message[:200]}"
                self._claim_cause = failure.dependency
                report_failure(ctx, exc, failure)
                pause = backoff_delay(self.retry_backoff, min(failures - 1, 16), random.random())
                await self.wakeup.wait(pause)
                continue
            if failures:
                failures = 0
                self._claim_trouble = None
                ctx.record_success()
                self._show_health(ctx)
            for dead in claimed.given_up:
                self._died_running(dead)
            add(claimed, number)
            if len(claimed) < self.batch_size and not ctx.stop_requested.is_set():
                await self.wakeup.wait(self.idle_seconds)

    # -- Telegram's availability ---------------------------------------------------------

    async def _follow_telegram(self, ctx: ActorContext) -> None:
        """Degraded while Telegram is unreachable; when it answers again, every update
        waiting for it is made due at once."""
        seen = self.link.version
        while True:
            seen = await self.link.wait_changed(seen)
            self._show_health(ctx)
            if not self.link.down:
                await self.telegram_answers_again()

    def _show_health(self, ctx: ActorContext) -> None:
        if self._claim_trouble is not None:
            ctx.set_degraded(self._claim_trouble, cause=self._claim_cause)
        elif self.link.down:
            ctx.set_degraded(f"Telegram unreachable: {self.link.reason}", cause=TELEGRAM)
        else:
            ctx.set_degraded(None)

    async def telegram_answers_again(self) -> int:
        """Make the updates waiting for Telegram due now and look for them at once."""
        try:
            woken = await inbox.telegram_answers_again(self._db())
        except Exception as exc:  # they come back after their fallback delay
            log_failure(_log, exc, operation="bot.inbox.wake", outcome=Outcome.DEGRADED)
            return 0
        self.woken += woken
        if woken:
            _log.info(
                "updates waiting for Telegram are due again",
                operation="bot.inbox.wake",
                outcome=Outcome.SUCCESS,
                updates=woken,
            )
        self.wakeup.set()
        return woken

    # -- processing ----------------------------------------------------------------------

    async def process(
        self,
        claimed: Sequence[InboxUpdate],
        feed: Feed | OnAsyncio,
        stop: trio.Event | None = None,
    ) -> None:
        """Process a claimed batch to the end: every update handled and settled."""
        async with self._pipeline(feed, stop) as add:
            add(claimed, self._start_claim())

    def _start_claim(self) -> int:
        self._claims += 1
        self._finished_while_claiming.clear()
        return self._claims

    @contextlib.asynccontextmanager
    async def _pipeline(
        self, feed: Feed | OnAsyncio, stop: trio.Event | None
    ) -> AsyncIterator[Callable[[Sequence[InboxUpdate], int], None]]:
        """Yields ``add(claimed, claim_number)``, which starts handling a claimed batch;
        on exit, waits until every update added is handled and settled."""
        closed = trio.Event()
        async with trio.open_nursery() as settling:
            settling.start_soon(self._settle_finished, closed)
            async with trio.open_nursery() as handling:
                if isinstance(feed, OnAsyncio):
                    yield self._batches(feed, stop, handling)
                else:
                    yield self._per_chat(feed, stop, handling)
            closed.set()
            self._done_added.set()
            settling.cancel_scope.deadline = trio.current_time() + 30
        # Whatever is still unsettled after that runs again once its claim expires.

    def _per_chat(
        self, feed: Feed, stop: trio.Event | None, handling: trio.Nursery
    ) -> Callable[[Sequence[InboxUpdate], int], None]:
        """``add`` for a feed on trio's side: a task per chat, a crossing per update."""

        def add(claimed: Sequence[InboxUpdate], number: int) -> None:
            for update in claimed:
                key = _chat_key(update)
                if key in self._finished_while_claiming:
                    update = dataclasses.replace(update, sender=None)
                self._in_flight += 1
                queue = self._chats.get(key)
                if queue is not None:
                    queue.append((update, number))
                    continue
                self._chats[key] = deque([(update, number)])
                handling.start_soon(self._run_chat, key, feed, stop)

        return add

    async def _run_chat(self, key: object, feed: Feed, stop: trio.Event | None) -> None:
        """One chat's updates, in order, including those added while they run."""
        queue = self._chats[key]
        last_finished: int | None = None
        try:
            while queue:
                if stop is not None and stop.is_set():
                    left = [update for update, _ in queue]
                    await self._release(left)
                    self._finish(len(left))
                    queue.clear()
                    return
                update, number = queue[0]
                if last_finished is not None and last_finished >= number:
                    update = dataclasses.replace(update, sender=None)
                await self._run_one(update, feed)
                queue.popleft()
                last_finished = self._claims
                self._finished_while_claiming.add(key)
                self._finish(1)
        finally:
            del self._chats[key]
            if queue:
                self._finish(len(queue))

    def _batches(
        self, feed: OnAsyncio, stop: trio.Event | None, handling: trio.Nursery
    ) -> Callable[[Sequence[InboxUpdate], int], None]:
        """``add`` for a feed on asyncio's side: one crossing per claimed batch, and the
        reports of finished updates come back together (``_chains``)."""

        def report(reports: list[Report]) -> None:
            done = 0
            for each in reports:
                each.batch.reported[each.index] = True
                update = each.batch.updates[each.index]
                result = each.result
                if each.error is not None:
                    with correlation(each.correlation_id, update_id=update.update_id):
                        result = self._failed_outside(update, each.error)
                if not isinstance(result, HandlerFailed) or result.next is Next.DONE:
                    self._done.append(update)
                    done += 1
                    continue
                handling.start_soon(self._settle_one_failed, update, result, each.correlation_id)
            if done:
                self._done_added.set()
                self._finish(done)

        chains = ChatChains(
            feed.run_one,
            timeout=self.handler_timeout,
            report=report,
            hand_over=call_trio_soon,
            claims=lambda: self._claims,
            stopping=lambda: stop is not None and stop.is_set(),
        )

        def add(claimed: Sequence[InboxUpdate], number: int) -> None:
            if not claimed:
                return
            self._in_flight += len(claimed)
            batch = Batch(number, list(claimed), [False] * len(claimed))
            keys = [_chat_key(update) for update in claimed]
            handling.start_soon(self._run_batch, chains, batch, keys)

        return add

    async def _run_batch(self, chains: ChatChains, batch: Batch, keys: list[object]) -> None:
        try:
            await run_asyncio(chains.run_batch, batch, keys)
        except Exception as exc:  # the seam itself: its updates run again
            log_failure(_log, exc, operation="bot.update", outcome=Outcome.DEGRADED)
        finally:
            # Not run to their end (a stop, a cancellation): hand them back so they run
            # again at once rather than after their claims expire.
            left = [
                update
                for update, seen in zip(batch.updates, batch.reported, strict=True)
                if not seen
            ]
            if left:
                await self._release(left)
                self._finish(len(left))

    async def _settle_one_failed(
        self, update: InboxUpdate, result: HandlerFailed, correlation_id: str
    ) -> None:
        with correlation(correlation_id, update_id=update.update_id):
            try:
                await self._settle_failed(update, result)
            except Exception as exc:
                # The claim expires and the update runs again: handlers are safe to repeat.
                log_failure(_log, exc, operation="bot.inbox.settle", outcome=Outcome.DEGRADED)
            finally:
                self._finish(1)

    def _finish(self, count: int) -> None:
        before = self.max_in_flight - self._in_flight
        self._in_flight -= count
        if before < self.batch_size <= before + count:
            self.wakeup.set()  # room for another batch

    async def _run_one(self, update: InboxUpdate, feed: Feed) -> None:
        with correlation(None, update_id=update.update_id) as correlation_id:
            try:
                result = await self._feed(update, feed, correlation_id)
            except BaseException:
                # Cancelled mid-handler (a shutdown past its timeout): hand it back so it
                # runs again at once after the restart rather than after the claim expires.
                await self._release([update])
                raise
            if not isinstance(result, HandlerFailed) or result.next is Next.DONE:
                self._done.append(update)
                self._done_added.set()
                return
            try:
                await self._settle_failed(update, result)
            except Exception as exc:
                # The claim expires and the update runs again: handlers are safe to repeat.
                log_failure(_log, exc, operation="bot.inbox.settle", outcome=Outcome.DEGRADED)

    async def _settle_finished(self, closed: trio.Event) -> None:
        """Mark finished updates processed, all that finished since the last time in one
        statement, until ``closed`` and none are left."""
        while True:
            if not self._done:
                if closed.is_set():
                    return
                await self._done_added.wait()
                self._done_added = trio.Event()
                continue
            finished, self._done = self._done, []
            try:
                settled = await inbox.mark_many_processed(self._db(), finished, owner=self.owner)
            except Exception as exc:
                # Their claims expire and they run again: handlers are safe to repeat.
                log_failure(_log, exc, operation="bot.inbox.settle", outcome=Outcome.DEGRADED)
                continue
            self.processed += len(settled)

    async def _feed(self, update: InboxUpdate, feed: Feed, correlation_id: str) -> Any:
        try:
            with trio.fail_after(self.handler_timeout):
                return await feed(update, correlation_id)
        except Exception as exc:
            return self._failed_outside(update, exc)

    def _failed_outside(self, update: InboxUpdate, exc: Exception) -> HandlerFailed:
        """A failure outside the handler boundary: parsing, the bridge, time."""
        trouble = telegram_trouble(exc)
        if trouble is None and isinstance(exc, trio.TooSlowError) and self.link.down:
            trouble = TelegramTrouble(Trouble.UNREACHABLE, f"{self.link.reason} (timed out)")
        failure = log_failure(
            _log,
            exc,
            operation="bot.update",
            attempt=update.attempts,
            outcome=Outcome.DEGRADED if trouble is not None else Outcome.FAILED,
        )
        payment = _is_payment(update)
        if trouble is not None:
            return HandlerFailed(failure, Next.WAIT_FOR_TELEGRAM, payment, telegram=trouble)
        pre_checkout = "pre_checkout_query" in update.payload
        step = next_step(failure, payment=payment, pre_checkout=pre_checkout)
        return HandlerFailed(failure, step, payment)

    async def _settle_failed(self, update: InboxUpdate, result: HandlerFailed) -> None:
        db = self._db()
        failure = result.failure
        error = f"{failure.exception_type}: {failure.message}"
        if result.next is Next.WAIT_FOR_TELEGRAM and result.telegram is not None:
            await self._wait_for_telegram(update, result.telegram, error)
            return
        if result.next is Next.GIVE_UP:
            if await inbox.give_up(db, update, owner=self.owner, error=error):
                self._given_up(update, failure)
            return
        delay = _retry_delay(self.retry_backoff, update.attempts, failure)
        again = await inbox.retry_later(
            db,
            update,
            owner=self.owner,
            error=error,
            delay_seconds=delay,
            max_attempts=self.max_attempts,
        )
        if again is False:
            self._given_up(update, failure)
        elif again and update.attempts == 1 and _money_moved(update):
            self._alert_payment_delayed(update, failure)

    async def _wait_for_telegram(
        self, update: InboxUpdate, trouble: TelegramTrouble, error: str
    ) -> None:
        if trouble.kind is Trouble.FLOOD_CONTROL:
            delay = trouble.retry_after if trouble.retry_after is not None else 1.0
        else:
            delay = self._telegram_delay()
        await inbox.wait_for_telegram(
            self._db(),
            update,
            owner=self.owner,
            error=error,
            delay_seconds=delay,
            until_telegram_answers=trouble.kind is Trouble.UNREACHABLE,
        )

    def _telegram_delay(self) -> float:
        """As long as Telegram has been down so far (it is woken earlier when Telegram
        answers). If it answers already, it did since this update failed: soon."""
        policy = self.telegram_backoff
        if not self.link.down:
            return policy.min
        capped = min(policy.max, max(policy.min, self.link.down_for()))
        return capped * (1.0 - policy.jitter * random.random())

    # -- given up ------------------------------------------------------------------------

    def _died_running(self, dead: inbox.DeadUpdate) -> None:
        """An update ``claim`` gave up: processes kept dying while its handler ran."""
        update = InboxUpdate(
            update_id=dead.update_id,
            payload=dead.payload,
            attempts=dead.attempts,
            claimed_by=self.owner,
            received_at=dead.received_at,
        )
        failure = Failure(
            type=FailureType.BUG,
            transient=False,
            message=(dead.last_error or "").removeprefix(inbox.GAVE_UP),
            exception_type="ProcessDied",
        )
        self._given_up(update, failure)

    def _given_up(self, update: InboxUpdate, failure: Failure) -> None:
        self.processed += 1
        money = _money_moved(update)
        kind = _kind(update)
        _log.error(
            "update given up; an operator can replay it",
            operation="bot.update",
            outcome=Outcome.FAILED,
            failure_type=failure.type.value,
            attempts=update.attempts,
            update_type=kind,
            payment=money,
        )
        uid = update.update_id
        replay = f"/replay {uid} in the bot, or `vpnbot updates --replay {uid}`"
        if money:
            alert = Alert(
                severity=Severity.CRITICAL,
                key=f"bot_payment_given_up:{update.update_id}",
                component="bot",
                title="a payment update was given up",
                text=(
                    f"update {update.update_id} failed {update.attempts} times "
                    f"({failure.type.value}: {failure.message[:300]}). The payment "
                    "reconciliation should still credit it; check the payment by hand. "
                    f"Once fixed, replay it: {replay}."
                ),
            )
        else:
            alert = Alert(
                severity=Severity.WARNING,
                key=f"bot_update_given_up:{kind}",
                component="bot",
                title="an update was given up",
                text=(
                    f"update {update.update_id} ({kind}) failed: {failure.type.value}: "
                    f"{failure.message[:300]}. Once the cause is fixed, replay it: {replay}."
                ),
            )
        self._submit(alert)

    def _alert_payment_delayed(self, update: InboxUpdate, failure: Failure) -> None:
        # A dependency's passing outage (the database cut off, say) is alerted once for all
        # under its own key and the update is tried again: a warning. Anything else is ours
        # to look at now.
        passing = failure.transient and failure.dependency is not None
        self._submit(
            Alert(
                severity=Severity.WARNING if passing else Severity.CRITICAL,
                key=f"bot_payment_update:{update.update_id}",
                component="bot",
                title="a payment update failed in the bot",
                text=(
                    f"update {update.update_id} (successful_payment): {failure.type.value}: "
                    f"{failure.message[:300]}. It is tried again; the user was told the "
                    "crediting takes longer than usual."
                ),
            )
        )

    def _submit(self, alert: Alert) -> None:
        try:
            self._alerts().submit(alert)
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


def _chat_key(update: InboxUpdate) -> object:
    key = update.chat_key
    return key if key is not None else ("update", update.update_id)


def _retry_delay(backoff: Backoff, attempts: int, failure: Failure) -> float:
    """The peer's hint when it gave one (a VPN panel's ``Retry-After``), else backoff."""
    if failure.retry_after is not None and math.isfinite(failure.retry_after):
        return max(0.0, failure.retry_after)
    return backoff_delay(backoff, max(0, attempts - 1), random.random())


def _kind(update: InboxUpdate) -> str:
    kind = next((key for key in update.payload if key != "update_id"), "other")
    return kind if kind in UPDATE_KINDS else "other"


def _money_moved(update: InboxUpdate) -> bool:
    message = update.payload.get("message")
    return isinstance(message, dict) and "successful_payment" in message


def _is_payment(update: InboxUpdate) -> bool:
    return "pre_checkout_query" in update.payload or _money_moved(update)
