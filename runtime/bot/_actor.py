"""The Telegram bot as supervised actors.

- ``bot``: processes the update inbox through the aiogram dispatcher (in the bridge's
  asyncio loop), keeps broadcast progress up to date, and prunes old updates. In webhook
  mode it registers the webhook when it starts. Every process runs one.
- ``bot-poller`` (polling mode only): holds the polling lease and long-polls into the
  inbox. Every process runs one; one of them polls at a time.

Neither uses aiogram's own polling loop, so nothing of aiogram's handles signals or
outlives a cancellation; each actor closes its Bot's HTTP session when it stops.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import trio
from aiogram import Bot, Dispatcher
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand, Update
from starlette.routing import Route

from runtime.bridge import run_asyncio
from runtime.catalog import Catalog
from runtime.failures import Outcome
from runtime.i18n import Translator, load_translator
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import Services
from runtime.storage import Database, broadcasts, gates, inbox, job_kinds, users
from runtime.storage.inbox import InboxUpdate
from runtime.supervision import ActorContext, ActorSpec
from runtime.workers import wakeups_of

from . import keyboards
from ._context import BotContext
from ._dispatch import JsonBodySession, await_plain_callables
from ._gate import AccessGate
from ._inbox import InboxProcessor, OnAsyncio
from ._middleware import HandlerBoundary
from ._polling import ALLOWED_UPDATES, Poller
from ._services import ActorTable, BotServices
from ._specs import BOT_ACTOR, POLLER_ACTOR, bot_specs
from ._telegram_link import TelegramLink
from ._webhook import webhook_routes
from .handlers import routers
from .handlers._broadcast_progress import progress_markup, progress_text
from .handlers._common import edit_quietly

COMMANDS = ("start", "subscription", "buy", "balance", "settings", "promo", "help")

_log = get_logger("bot")


def build_dispatcher(ctx: BotContext, alerts: Callable[[], Any]) -> Dispatcher:
    """A dispatcher with the handler boundary and every router; handlers get ``ctx``."""
    dispatcher = Dispatcher(disable_fsm=True, ctx=ctx)
    dispatcher.update.outer_middleware(HandlerBoundary(ctx, alerts))
    if AccessGate.needed(ctx.settings.access_rules):
        dispatcher.update.outer_middleware(AccessGate(ctx))
    dispatcher.include_routers(*routers())
    await_plain_callables(dispatcher)
    return dispatcher


class TelegramBot:
    """Everything of the bot in one process: the dispatcher, its actors and its webhook.

    ``actor_table`` returns the supervisor's status document (``/status``): the admin
    ``/status`` command shows it. ``None`` until the runtime sets it.
    """

    def __init__(
        self,
        services: Services,
        *,
        actor_table: ActorTable | None = None,
        translator: Translator | None = None,
        idle_seconds: float = 10.0,
        claim_seconds: float = 120.0,
        handler_timeout: float = 60.0,
        broadcast_every: float = 3.0,
        lease_ttl: float = 60.0,
    ) -> None:
        """The keyword arguments tune timings (tests shorten them): how long an idle inbox
        processor waits before looking again, how long an update's claim lasts (a killed
        process's updates run again after it) and how long a handler may take, how often
        broadcast progress is reported, and the polling lease's ttl."""
        settings = services.settings
        if settings.telegram.token is None:
            raise ValueError("the bot needs telegram.token")
        self.services = services
        self.settings = settings
        self._token = settings.telegram.token.get_secret_value()
        self.catalog = Catalog.from_settings(settings)
        self.svc = BotServices(services, self.catalog, actor_table=actor_table)
        self.ctx = BotContext(
            svc=self.svc,
            translator=translator or load_translator(),
            catalog=self.catalog,
            settings=settings,
            admin_ids=frozenset(settings.telegram.admin_chat_ids),
        )
        self.dispatcher = build_dispatcher(self.ctx, lambda: services.alerts)
        self.link = TelegramLink()
        """Telegram's availability as this process's Bot API calls find it."""
        self.processor = InboxProcessor(
            self._db,
            owner=services.claim_owner(BOT_ACTOR),
            alerts=lambda: services.alerts,
            link=self.link,
            idle_seconds=idle_seconds,
            claim_seconds=claim_seconds,
            handler_timeout=handler_timeout,
        )
        self.poller = Poller(
            self._db,
            holder=services.lease_holder(POLLER_ACTOR),
            on_stored=self.processor.wakeup.set,
            alerts=lambda: services.alerts,
            link=self.link,
            timeout=settings.bot.polling_timeout_seconds,
            lease_ttl=lease_ttl,
        )
        self.broadcast_every = broadcast_every
        self._reported: dict[int, tuple[int, ...]] = {}

    @property
    def actor_table(self) -> ActorTable | None:
        return self.svc.actor_table

    @actor_table.setter
    def actor_table(self, table: ActorTable | None) -> None:
        self.svc.actor_table = table

    def _db(self) -> Database:
        return self.services.db

    # -- the pieces the runtime wires in -------------------------------------------------

    def actors(self) -> list[ActorSpec]:
        return bot_specs(self.settings, run_bot=self.run_bot, run_poller=self.run_poller)

    def webhook_routes(self) -> list[Route]:
        return webhook_routes(
            self.settings, self._db, self.processor.wakeup.set, lambda: self.services.alerts
        )

    # -- Bot sessions --------------------------------------------------------------------

    def new_bot(self) -> Bot:
        """A Bot whose calls report to ``link``, and time out well inside a handler's
        time (a Telegram that does not answer is then seen as unreachable)."""
        session = JsonBodySession(
            api=TelegramAPIServer.from_base(self.settings.telegram.api_base),
            timeout=self.processor.handler_timeout / 2,
        )
        session.middleware(self.link)
        return Bot(self._token, session=session)

    @contextlib.asynccontextmanager
    async def open_bot(self) -> AsyncIterator[Bot]:
        bot = self.new_bot()
        try:
            yield bot
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                try:
                    await run_asyncio(bot.session.close)
                except Exception as exc:
                    _log.warning("closing the bot session failed", error=repr(exc))

    # -- actors --------------------------------------------------------------------------

    async def run_bot(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.open_bot() as bot:
            if self.settings.bot.mode == "webhook":
                await self._set_webhook(bot)
            await self._set_commands(bot)
            await self._announce_reopened()
            task_status.started()
            async with trio.open_nursery() as nursery:

                async def on_stop() -> None:
                    await ctx.stop_requested.wait()
                    self.processor.wakeup.set()

                nursery.start_soon(on_stop)
                nursery.start_soon(self.link.probe_while_down, lambda: self._probe(bot))
                nursery.start_soon(self._watch_broadcasts, bot)
                nursery.start_soon(self._prune)
                await self.processor.run(ctx, self.on_asyncio(bot))
                nursery.cancel_scope.cancel()

    async def run_poller(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.open_bot() as bot:
            task_status.started()
            await self.poller.run(ctx, bot)

    async def _probe(self, bot: Bot) -> None:
        await run_asyncio(bot.get_me, request_timeout=max(1, int(self.link.probe_timeout)))

    def on_asyncio(self, bot: Bot) -> OnAsyncio:
        """The feed the inbox runs: claimed batches cross into asyncio once each, and
        their updates go through the dispatcher there (``_feed_aio``)."""
        return OnAsyncio(functools.partial(self._feed_aio, bot))

    async def feed(self, bot: Bot, update: InboxUpdate, correlation_id: str) -> Any:
        """Run one stored update through the dispatcher: one crossing into asyncio.
        Handlers get ``inbox_attempt`` and ``received_at`` (when the update was stored:
        a pre-checkout query carries no date of its own); the handler boundary gets
        ``inbox_sender``."""
        return await run_asyncio(self._feed_aio, bot, update, correlation_id)

    async def _feed_aio(self, bot: Bot, stored: InboxUpdate, correlation_id: str) -> Any:
        update = Update.model_validate(stored.payload, context={"bot": bot})
        return await self.dispatcher.feed_update(
            bot,
            update,
            inbox_attempt=stored.attempts,
            received_at=stored.received_at,
            correlation_id=correlation_id,
            inbox_sender=stored.sender,
        )

    async def _set_webhook(self, bot: Bot) -> None:
        secret = self.settings.bot.webhook_secret
        url = self.settings.bot.webhook_url
        assert secret is not None and url is not None
        await run_asyncio(
            bot.set_webhook,
            url=url,
            secret_token=secret.get_secret_value(),
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
        )
        _log.info("webhook registered", operation="webhook.register", outcome="success")

    async def _set_commands(self, bot: Bot) -> None:
        """The command menu in every language; a failure here only costs the menu."""
        translator = self.ctx.translator

        async def register() -> None:
            for language in translator.languages:
                commands = [
                    BotCommand(command=name, description=translator.t(language, f"commands.{name}"))
                    for name in COMMANDS
                ]
                code = None if language == "en" else language
                await bot.set_my_commands(commands, language_code=code)

        try:
            with trio.fail_after(10):
                await run_asyncio(register)
        except Exception as exc:
            log_failure(_log, exc, operation="bot.commands", outcome=Outcome.DEGRADED)

    async def _announce_reopened(self) -> None:
        """With purchases open, tell the users who asked while they were paused (once
        each, whichever instance starts first); a failure only delays it to the next start."""
        if self.settings.access_rules.purchases_paused:
            return
        try:
            told = await gates.announce_reopened(
                self._db(), max_attempts=self.settings.notifier.max_attempts
            )
        except Exception as exc:
            log_failure(_log, exc, operation="bot.purchases_reopened", outcome=Outcome.DEGRADED)
            return
        if told:
            _log.info(
                "purchases reopened: waiting users told",
                operation="bot.purchases_reopened",
                users=told,
            )

    # -- broadcasts and housekeeping ----------------------------------------------------

    async def _watch_broadcasts(self, bot: Bot) -> None:
        """Every ``broadcast_every`` seconds while a broadcast runs; otherwise when one
        starts (its messages are queued: a notification) or at the wake-ups' fallback. The
        first look comes at once: a broadcast the last run left sending goes on without any
        new notification to wake this one."""
        wakeups = wakeups_of(self.services)
        queued = wakeups.subscribe([job_kinds.NOTIFY])
        running = 1
        while True:
            await trio.sleep(self.broadcast_every)
            if not running:
                idle = wakeups.idle_pause(self.broadcast_every) - self.broadcast_every
                with trio.move_on_after(max(0.0, idle)):
                    await queued.wait()
            queued.clear()
            try:
                running = await self.report_broadcasts(bot)
            except Exception as exc:
                running = 1  # look again soon
                log_failure(_log, exc, operation="bot.broadcast_report", outcome=Outcome.DEGRADED)

    async def report_broadcasts(self, bot: Bot) -> int:
        """Edit each running broadcast's progress message; finish those with nothing left
        to send (one process wins) and tell their admin the final count. Returns how many
        were running."""
        db = self._db()
        sending = await broadcasts.sending_broadcasts(db)
        for broadcast in sending:
            progress = await broadcasts.broadcast_progress(db, broadcast.id)
            seen = (progress.delivered, progress.blocked, progress.failed, progress.pending)
            if not progress.done and self._reported.get(broadcast.id) == seen:
                continue
            self._reported[broadcast.id] = seen
            creator = await users.get_user(db, broadcast.created_by)
            lang = creator.language if creator is not None else "en"
            chat_id = broadcast.report_chat_id
            text = progress_text(self.ctx, lang, broadcast, progress)
            if not progress.done:
                if chat_id is not None and broadcast.report_message_id is not None:
                    markup = progress_markup(self.ctx, lang, broadcast.id)
                    await run_asyncio(
                        edit_quietly, bot, chat_id, broadcast.report_message_id, text, markup
                    )
                continue
            if not await broadcasts.finish_broadcast(db, broadcast.id, progress):
                continue
            self._reported.pop(broadcast.id, None)
            _log.info(
                "broadcast finished",
                operation="broadcast",
                outcome="success",
                broadcast_id=broadcast.id,
                delivered=progress.delivered,
                blocked=progress.blocked,
                failed=progress.failed,
            )
            if chat_id is not None:
                await self._final_report(bot, broadcast, chat_id, text, lang)
        return len(sending)

    async def _final_report(
        self, bot: Bot, broadcast: broadcasts.Broadcast, chat_id: int, text: str, lang: str
    ) -> None:
        """The final count, once: in place of the progress message, or as a new message
        when there is none or it cannot be edited any more (deleted, too old)."""
        markup = keyboards.admin_back(self.ctx, lang)
        message_id = broadcast.report_message_id
        if message_id is not None and await run_asyncio(
            edit_quietly, bot, chat_id, message_id, text, markup
        ):
            return
        await run_asyncio(bot.send_message, chat_id, text, reply_markup=markup)

    async def _prune(self) -> None:
        while True:
            try:
                removed = await inbox.prune(self._db(), older_than=timedelta(days=7))
                if removed:
                    _log.info("old updates pruned", operation="bot.inbox.prune", removed=removed)
            except Exception as exc:
                log_failure(_log, exc, operation="bot.inbox.prune", outcome=Outcome.DEGRADED)
            await trio.sleep(3600)
