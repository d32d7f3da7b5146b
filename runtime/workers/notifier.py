"""``notifier``: the only sender of outbox notifications to Telegram.

It claims ``telegram.notify`` jobs (users' own messages first: a payment confirmation
does not wait behind a broadcast's thousands), renders each job's template in the
user's language (``notify.<template>``; ``broadcast`` jobs carry their text) and sends it;
a message that hands over a link (``access_ready``, an extension whose link changed)
comes with it as a QR code (one photo, the text its caption).

Limits, as Telegram asks:

- a global rate, ``[notifier] rate_per_second`` (default 25): sends start evenly spaced;
  one process sends at a time (a lease), so the rate holds for the whole deployment;
- at most one message per ``per_chat_interval_seconds`` per chat; a user's messages go
  out in the order they were queued;
- a 429 pauses *all* sending for its ``retry_after``, then the same message is sent
  again; a message is never dropped for a 429;
- ``allow_paid_broadcast``: broadcasts (and, when the configured rate is above the free
  limit of about 30 per second, every message) are sent with ``allow_paid_broadcast``,
  paid from the bot's Stars balance.

Outcomes: a 403 (the user blocked the bot) marks the user blocked and drops their
messages (the jobs are completed as skipped, with the reason); a user already marked
blocked is skipped the same way. A message that fails for its own reasons is retried
with the outbox's backoff and dead-lettered after ``max_attempts`` (a permanent answer,
such as 400 "message is too long", at once); admins hear of dead messages (not of a
broadcast's). When Telegram itself is failing (five transient failures in a row, or the
token is rejected), the batch stops, the unsent jobs go back untried, and the iteration
fails: logged with its failure type, followed by the minimum sleep. The actor is
degraded from the first send that fails for Telegram's reasons (a 429 pause included)
until a send goes through again, so ``/status`` never says healthy while messages do
not go out.

Broadcasts (see ``runtime.storage.broadcasts``): a broadcast message is Telegram HTML,
with its file (by ``file_id``) and buttons, ``buy``/``renew`` labelled in the user's
language; the id of the message sent is kept in the job's ``result`` by the statement
that completes it. A ``broadcast_delete`` job deletes one such message at the same pace:
"message to delete not found" counts as deleted, and Telegram's refusal ("message can't
be deleted": older than 48 hours) dead-letters it at once, without an alert.

Crashes: each job is settled the moment its last message is sent, and the progress of a
job of several messages after each one (``Ledger``: the marks of concurrent sends share a
statement), so a process killed mid-batch sends again at most the messages that were in
flight, not the batch. A job is marked started just before it is rendered and sent, within
the concurrency limit, so a notifier that dies counts a lost claim only for the few jobs
in progress (see ``outbox.claim``), the one that killed it among them; the restarted
instance takes its lease and its claims back at once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from runtime.alerts import Alert, Severity
from runtime.failures import TELEGRAM, DependencyError, Outcome, classify
from runtime.i18n import Translator, load_translator
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, outbox, scans, users
from runtime.storage.outbox import FailOutcome, Job, Mark
from runtime.storage.scans import Recipient
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted
from runtime.telegram import BotApi, BotTokenRejected, ChatBlocked, TooManyRequests

from ._common import SoleRunner, effective_interval, holder_id, items, owner_id, worker_spec
from ._ledger import Ledger
from ._pacing import ChatSpacing, Pacer
from ._render import (
    BROADCAST,
    BROADCAST_DELETE,
    BadNotification,
    Delete,
    Media,
    Part,
    Photo,
    Text,
    render,
)
from ._wakeups import wakeups_of

NAME = "notifier"
INTERVAL = 1.0
MIN_SLEEP_ON_FAILURE = 5.0
BUDGET = Budget(max_failures=60, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=120.0)
FREE_RATE = 30.0
"""About this many messages per second Telegram allows a bot without paying."""
OUTAGE_STREAK = 5
"""Transient failures in a row that mean Telegram (or the way to it) is down."""
MAX_RATE_LIMITED = 10
"""429 answers one message may get before it is failed (and retried later)."""
CLAIM_MARGIN = 10.0
BLOCKED = "skipped: the user blocked the bot"
BANNED = "skipped: the user is banned"
TO_THE_BANNED = frozenset(
    {"account_banned", "payment_received", "topup_credited", "payment_refunded"}
)
"""What still reaches a banned user: their ban, and receipts for their money."""
STANDBY_TRIES = 4
"""A standby instance tries to take the lease this many times per ttl: a dead sender is
replaced within 1.25 ttl (75 s with the default claim time)."""


def default_concurrency(rate: float) -> int:
    """Sends in progress at once at ``rate`` per second: enough to keep the rate while each
    send waits for Telegram, few enough that a killed notifier repeats only these."""
    return max(4, min(100, math.ceil(rate / 4)))


class Notifier:
    def __init__(
        self,
        services: Services,
        api: BotApi,
        owner: str,
        *,
        holder: str | None = None,
        rate_per_second: float | None = None,
        per_chat_interval: float | None = None,
        allow_paid_broadcast: bool | None = None,
        max_attempts: int | None = None,
        batch: int | None = None,
        concurrency: int | None = None,
        claim_seconds: float | None = None,
        max_per_chat: int = 3,
        translator: Translator | None = None,
        interval: float = INTERVAL,
    ) -> None:
        config = services.settings.notifier
        self.services = services
        self.api = api
        self.owner = owner
        self.rate = rate_per_second or config.rate_per_second
        self.allow_paid_broadcast = (
            config.allow_paid_broadcast if allow_paid_broadcast is None else allow_paid_broadcast
        )
        self.max_attempts = max_attempts or config.max_attempts
        self.batch = batch or max(10, min(500, round(self.rate * 2)))
        self.concurrency = concurrency or default_concurrency(self.rate)
        self.claim_seconds = claim_seconds or max(60.0, self.batch / self.rate * 3 + CLAIM_MARGIN)
        self.max_per_chat = max_per_chat
        self.translator = translator or load_translator()
        self.pacer = Pacer(self.rate)
        self.spacing = ChatSpacing(
            config.per_chat_interval_seconds if per_chat_interval is None else per_chat_interval
        )
        self.limiter = trio.CapacityLimiter(self.concurrency)
        self.runner = SoleRunner(
            f"worker:{NAME}", holder or owner, ttl_seconds=max(30.0, self.claim_seconds)
        )
        self.interval = interval
        self.wakeups = wakeups_of(services)
        self.wakeup = self.wakeups.subscribe([job_kinds.NOTIFY])
        self._prefetched: _Claimed | None = None
        self.log = get_logger(NAME)
        self.items = items(services.metrics)
        self.degraded: str | None = None
        """Why sends to Telegram fail: the actor is degraded until one goes through."""

    def sending_fails(self, ctx: ActorContext, reason: str) -> None:
        if reason != self.degraded:
            self.degraded = reason
            ctx.set_degraded(reason, cause=TELEGRAM)

    def sending_works(self, ctx: ActorContext) -> None:
        if self.degraded is not None:
            self.degraded = None
            ctx.set_degraded(None)

    def paid_broadcast(self, template: object) -> bool:
        return self.allow_paid_broadcast and (template == BROADCAST or self.rate > FREE_RATE)

    async def iteration(self, ctx: ActorContext) -> float | None:
        db = self.services.db
        claimed, self._prefetched = self._prefetched, None
        if claimed is None:
            if self.wakeups.listening and not self.wakeup.called() and not self.pacer.paused:
                # the fallback pause ended, no wake-up: an idle sender holds no lease
                due_in = await scans.next_job_due(db, [job_kinds.NOTIFY])
                if due_in is None or due_in > 0:
                    return self.wakeups.idle_pause(
                        self.interval, due_in=due_in, at_most=self._standby_pause()
                    )
            holder = await self.runner.acquire(db)
            self.wakeup.muted = not holder
            if not holder:  # another instance is the sender: try now and then, unwoken
                return self.wakeups.idle_pause(self.interval, at_most=self._standby_pause())
            if self.pacer.paused:  # a 429: nothing is claimed until it is over
                return self.pacer.paused_until - trio.current_time()
            claimed = await self._claim(db)
            if not claimed.jobs:
                return await self._pause()
        jobs = claimed.jobs
        run = _Batch(self, jobs, claimed.deadline, ctx)
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                if len(jobs) >= self.batch:  # more is due: claim it while this batch goes out
                    nursery.start_soon(self._prefetch, db)
                try:
                    await run.send()
                except Exception as exc:  # raised as it is, not wrapped in a group
                    failure = exc
                    nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(10.0, shield=True):
                await run.settle()
                if run.outage is not None or ctx.stop_requested.is_set():
                    await self._give_back_prefetched()
        if failure is not None:
            raise failure
        if run.outage is not None:
            raise run.outage
        return 0.0 if len(jobs) >= self.batch else await self._pause()

    async def _claim(self, db: Database) -> _Claimed:
        """A batch: users' own messages first, then a broadcast's."""
        self.spacing.forget_old()
        deadline = trio.current_time() + self.claim_seconds - CLAIM_MARGIN
        jobs: list[Job] = await scans.claim_direct_notifications(
            db,
            owner=self.owner,
            limit=self.batch,
            claim_seconds=self.claim_seconds,
            started=False,
        )
        if len(jobs) < self.batch:
            jobs.extend(
                await outbox.claim(
                    db,
                    kinds=[job_kinds.NOTIFY],
                    owner=self.owner,
                    limit=self.batch - len(jobs),
                    claim_seconds=self.claim_seconds,
                    started=False,
                )
            )
        return _Claimed(jobs, deadline)

    async def _prefetch(self, db: Database) -> None:
        """Renew the lease and claim the next batch while the current one is sent, so no
        sending slot waits for the round trips between batches. The next iteration sends
        it after this batch (a chat's messages stay in order)."""
        try:
            if not await self.runner.acquire(db) or self.pacer.paused:
                return
            claimed = await self._claim(db)
        except Exception as exc:  # the next iteration claims as usual
            log_failure(self.log, exc, operation="notify.prefetch", outcome=Outcome.DEGRADED)
            return
        if claimed.jobs:
            self._prefetched = claimed

    async def _give_back_prefetched(self) -> None:
        claimed, self._prefetched = self._prefetched, None
        if claimed is not None:
            await outbox.release(self.services.db, claimed.jobs, owner=self.owner)

    def _standby_pause(self) -> float:
        return self.runner.ttl_seconds / STANDBY_TRIES

    async def _pause(self) -> float:
        """Until woken, or the next message is due (a retry, a chat's spacing), within a
        third of the lease's ttl (each iteration renews it)."""
        due_in = None
        if self.wakeups.listening:  # else the pause is short: no need to ask
            due_in = await scans.next_job_due(self.services.db, [job_kinds.NOTIFY])
        return self.wakeups.idle_pause(
            self.interval, due_in=due_in, at_most=self.runner.ttl_seconds / 3
        )

    async def close(self) -> None:
        try:
            await self._give_back_prefetched()
            await self.runner.release(self.services.db)
        finally:
            await self.api.aclose()


@dataclass(frozen=True, slots=True)
class _Claimed:
    jobs: list[Job]
    deadline: float
    """When the batch stops starting sends: its claims' expiry less a margin."""


class _Result(enum.Enum):
    SENT = "sent"
    BLOCKED = "blocked"
    FAILED = "failed"
    RELEASED = "released"
    LOST = "lost"


class _Batch:
    """One claimed batch, sent chat by chat. Each job is settled as soon as its messages
    are out; what is left (skipped, handed back) is settled after the batch."""

    def __init__(self, notifier: Notifier, jobs: Sequence[Job], deadline: float, ctx: ActorContext):
        self.n = notifier
        self.jobs = list(jobs)
        self.deadline = deadline
        self.ctx = ctx
        self.sent = 0
        self.unrecorded: list[Job] = []
        """Jobs sent whose settling failed: ``settle`` tries again."""
        self.ledger = Ledger(notifier.services.db, notifier.owner)
        self.skipped: dict[str, list[Job]] = {}
        self.released: list[Job] = []
        self.failed = 0
        self.blocked: set[int | str] = set()
        self.outage: BaseException | None = None
        self.streak = 0
        self.recipients: dict[int, Recipient] = {}

    async def send(self) -> None:
        by_chat: dict[int | str, list[Job]] = {}
        for job in self.jobs:
            chat = job.payload.get("chat_id")
            if not isinstance(chat, int | str) or isinstance(chat, bool) or chat == "":
                await self._fail(job, BadNotification("a notification without a chat_id"))
                continue
            queue = by_chat.setdefault(chat, [])
            if len(queue) < self.n.max_per_chat:
                queue.append(job)
            else:  # their spacing would hold the batch up: next batch
                self.released.append(job)
        self.recipients = await scans.recipients(
            self.n.services.db, [c for c in by_chat if isinstance(c, int)]
        )
        async with trio.open_nursery() as ledger:
            ledger.start_soon(self.ledger.run)
            async with trio.open_nursery() as nursery:
                for chat, queue in by_chat.items():
                    nursery.start_soon(self._chat, chat, queue)
            ledger.cancel_scope.cancel()

    def _stopping(self) -> bool:
        return self.outage is not None or self.ctx.stop_requested.is_set()

    async def _chat(self, chat: int | str, queue: list[Job]) -> None:
        """The chat's jobs in the order they were queued."""
        recipient = self.recipients.get(chat) if isinstance(chat, int) else None
        language = self.n.translator.language_for(recipient.language if recipient else None)
        for index, job in enumerate(queue):
            if self._stopping():
                self.released.extend(queue[index:])
                return
            if (recipient is not None and recipient.blocked) or chat in self.blocked:
                self.skipped.setdefault(BLOCKED, []).append(job)
                continue
            if (
                recipient is not None
                and recipient.banned
                and job.payload.get("template") not in TO_THE_BANNED
            ):
                self.skipped.setdefault(BANNED, []).append(job)
                continue
            if await self._deliver(chat, job, language) is _Result.RELEASED:
                self.released.extend(queue[index + 1 :])  # keep the chat's order
                return

    async def _deliver(self, chat: int | str, job: Job, language: str) -> _Result:
        """Send the messages of ``job`` an earlier claim did not send, settling as it goes.

        Everything from the start mark to the send happens inside the concurrency limit:
        at most ``concurrency`` jobs are ever in progress (a crash counts a lost claim for
        those only), and a send follows its pacing slot at once.
        """
        parts: list[Part] | None = None
        index = job.steps_done
        rate_limited = 0
        kept: dict[str, Any] | None = None
        while parts is None or index < len(parts):
            if self._stopping() or self.n.spacing.ready_at(chat) > self.deadline:
                self.released.append(job)
                return _Result.RELEASED
            await trio.sleep_until(self.n.spacing.ready_at(chat))
            async with self.n.limiter:
                if self._stopping():  # decided while this one waited its turn
                    self.released.append(job)
                    return _Result.RELEASED
                if parts is None:
                    if (result := await self._start(job)) is not None:
                        return result
                    try:
                        parts = render(self.n.translator, language, job.payload)
                    except Exception as exc:
                        await self._fail(job, exc)
                        return _Result.FAILED
                    if index >= len(parts):  # sent in full before; only settling was missing
                        break
                if not await self.n.pacer.slot(self.deadline):
                    self.released.append(job)
                    return _Result.RELEASED
                try:
                    kept = await self._send(chat, job, parts[index])
                except TooManyRequests as exc:
                    self.n.pacer.pause(exc.retry_after or 1.0)
                    self.n.sending_fails(
                        self.ctx,
                        f"rate limited by Telegram: sending paused {exc.retry_after or 1.0:g} s",
                    )
                    rate_limited += 1
                    self.n.items.labels(NAME, "rate_limited").inc()
                    self.n.log.warning(
                        "rate limited by Telegram: all sending paused",
                        operation="notify",
                        retry_after=exc.retry_after,
                        job_id=job.id,
                        outcome=Outcome.DEGRADED,
                    )
                    if rate_limited > MAX_RATE_LIMITED:
                        await self._fail(job, exc)
                        return _Result.FAILED
                    continue
                except ChatBlocked as exc:
                    await self._blocked(chat, job, exc)
                    return _Result.BLOCKED
                except BotTokenRejected as exc:
                    self.outage = exc
                    self.released.append(job)
                    return _Result.RELEASED
                except Exception as exc:
                    await self._fail(job, exc)
                    return _Result.FAILED
            self.n.spacing.sent(chat)
            self.n.sending_works(self.ctx)
            self.streak = 0
            rate_limited = 0
            index += 1
            if index < len(parts):
                await self._settle_sent(job, index, done=False)
        await self._settle_sent(job, index, result=kept)
        return _Result.SENT

    async def _start(self, job: Job) -> _Result | None:
        """Mark ``job`` started before its first message; None to go on sending."""
        try:
            if await self.ledger.write(Mark(job, started=True)):
                return None
        except Exception as exc:  # the database: no send without the mark
            if self.outage is None:
                self.outage = exc
            self.released.append(job)
            return _Result.RELEASED
        self.n.log.warning(
            "claim lost before sending: left to its new claimer",
            operation="notify",
            job_id=job.id,
            outcome=Outcome.SKIPPED,
        )
        return _Result.LOST

    async def _settle_sent(
        self, job: Job, steps: int, *, done: bool = True, result: dict[str, Any] | None = None
    ) -> None:
        """Record that the first ``steps`` messages of ``job`` are out (all of them when
        ``done``), before anything else is sent to its chat; a broadcast's with the id of
        its message (``result``), which deleting it needs."""
        if done:
            self.sent += 1
        try:
            await self.ledger.write(Mark(job, steps_done=steps, done=done, result=result))
        except Exception as exc:
            if done:
                self.unrecorded.append(job)
            log_failure(
                self.n.log, exc, operation="notify.settle", job_id=job.id, outcome=Outcome.DEGRADED
            )

    async def _send(self, chat: int | str, job: Job, part: Part) -> dict[str, Any] | None:
        """Send ``part``; for a broadcast message, what to keep of it (its id)."""
        paid = self.n.paid_broadcast(job.payload.get("template"))
        sent: dict[str, Any] | None = None
        if isinstance(part, Photo):
            await self.n.api.send_photo(chat, part.png, part.caption, allow_paid_broadcast=paid)
        elif isinstance(part, Text):
            sent = await self.n.api.send_message(
                chat,
                part.text,
                dict(part.reply_markup) if part.reply_markup else None,
                paid,
                parse_mode=part.parse_mode,
            )
        elif isinstance(part, Media):
            sent = await self.n.api.send_media(
                chat,
                part.kind,
                part.file_id,
                part.caption,
                reply_markup=part.reply_markup,
                parse_mode=part.parse_mode,
                allow_paid_broadcast=paid,
            )
        elif isinstance(part, Delete):
            await self._delete(chat, part)
        if job.payload.get("template") == BROADCAST and isinstance(sent, dict):
            message_id = sent.get("message_id")
            if isinstance(message_id, int):
                return {"message_id": message_id}
        return None

    async def _delete(self, chat: int | str, part: Delete) -> None:
        """A message already gone (deleted by its user, or by an earlier claim of this
        job that died before recording it) counts as deleted."""
        try:
            await self.n.api.delete_message(chat, part.message_id)
        except DependencyError as exc:
            if exc.transient or "message to delete not found" not in str(exc):
                raise

    async def _blocked(self, chat: int | str, job: Job, exc: ChatBlocked) -> None:
        self.blocked.add(chat)
        if isinstance(chat, int):
            await users.mark_blocked(self.n.services.db, chat)
        self.skipped.setdefault(f"blocked: {exc}", []).append(job)
        self.n.log.info(
            "user blocked the bot: their messages are dropped",
            operation="notify",
            chat_id=chat,
            job_id=job.id,
            outcome=Outcome.SKIPPED,
        )

    async def _fail(self, job: Job, exc: BaseException) -> None:
        failure = classify(exc)
        if failure.transient and not isinstance(exc, TooManyRequests):
            self.n.sending_fails(
                self.ctx,
                f"sends to Telegram fail: {failure.exception_type}: {failure.message}"[:300],
            )
            self.streak += 1
            if self.streak >= OUTAGE_STREAK and self.outage is None:
                self.outage = DependencyError(
                    f"telegram: {self.streak} sends failed in a row; last: {failure.message}",
                    transient=True,
                )
        self.failed += 1
        template = job.payload.get("template")
        permanent = not failure.transient or job.attempts >= self.n.max_attempts
        log_failure(
            self.n.log,
            exc,
            operation="notify",
            job_id=job.id,
            template=template,
            attempt=job.attempts,
            outcome=Outcome.FAILED,
        )
        result = await outbox.fail(
            self.n.services.db,
            job,
            owner=self.n.owner,
            error=f"{failure.exception_type}: {failure.message}",
            retry_after=failure.retry_after,
            permanent=permanent,
        )
        self.n.items.labels(NAME, f"failed_{result.value}").inc()
        if result is FailOutcome.DEAD and template not in (BROADCAST, BROADCAST_DELETE):
            self.n.services.alerts.submit(
                Alert(
                    severity=Severity.WARNING,
                    key=f"notify_dead:{template}",
                    component=NAME,
                    title="a message to a user was given up",
                    text=(
                        f"notification {template!r} (job {job.id}) to chat "
                        f"{job.payload.get('chat_id')} failed {job.attempts} time(s): "
                        f"{failure.exception_type}: {failure.message}"
                    ),
                )
            )

    async def settle(self) -> None:
        """Record the rest of the batch's outcomes: skipped, handed back, and the sent
        jobs whose own settling failed."""
        db = self.n.services.db
        owner = self.n.owner
        if self.unrecorded:
            await outbox.complete(db, self.unrecorded, owner=owner)
        for reason, jobs in self.skipped.items():
            await scans.complete_skipped(db, jobs, owner=owner, reason=reason)
        if self.released:
            await outbox.release(db, self.released, owner=owner)
        skipped = sum(len(j) for j in self.skipped.values())
        counts: dict[str, Any] = {
            "sent": self.sent,
            "skipped": skipped,
            "failed": self.failed,
            "released": len(self.released),
        }
        for outcome, count in counts.items():
            if count:
                self.n.items.labels(NAME, outcome).inc(count)
        self.n.log.info(
            "batch sent",
            operation="notify",
            claimed=len(self.jobs),
            outcome=Outcome.SUCCESS if self.outage is None else Outcome.DEGRADED,
            **counts,
        )


def spec(services: Services, **options: Any) -> ActorSpec:
    """The ``notifier`` actor; needs ``[telegram] token``."""
    telegram = services.settings.telegram
    if telegram.token is None:
        raise ValueError("the notifier needs [telegram] token")
    token = telegram.token.get_secret_value()

    def make(ctx: ActorContext) -> Notifier:
        api = BotApi(token, api_base=telegram.api_base)
        return Notifier(
            services,
            api,
            owner_id(services, NAME),
            holder=holder_id(services, NAME),
            **{"interval": effective_interval(ctx, INTERVAL), **options},
        )

    return worker_spec(
        NAME,
        make,
        interval=INTERVAL,
        min_sleep_on_failure=MIN_SLEEP_ON_FAILURE,
        budget=BUDGET,
        shutdown_timeout=15.0,
    )
