"""The Telegram bot: aiogram 3 inside the bridge's asyncio loop, fed from a durable inbox.

Updates arrive by long polling (one process at a time, under a lease) or by webhook (any
number of processes), are stored in the inbox before Telegram is told they arrived, and
are then processed from there by the ``bot`` actor of every process. Handlers are thin:
they parse, make one trio call through ``call_trio``, and reply.

Wiring, in the composition root::

    bot = telegram_bot(services, actor_table=lambda: status_document(supervisor))
    specs += bot_actors(services)                    # [] without telegram.token
    routes += telegram_webhook_routes(services)      # [] unless bot.mode = "webhook"

``bot_actors`` and ``telegram_webhook_routes`` share one ``TelegramBot`` per ``Services``
(the webhook wakes the inbox processor of its own process).
"""

from __future__ import annotations

import importlib
import weakref
from typing import TYPE_CHECKING

import trio

from runtime.lazy import lazy_exports
from runtime.plugin_api import Services
from runtime.supervision import ActorContext, ActorSpec

from ._specs import ACTOR_NAMES, BOT_ACTOR, POLLER_ACTOR, bot_specs, declared_bot_actors

if TYPE_CHECKING:
    from starlette.routing import Route

    from ._actor import TelegramBot, build_dispatcher
    from ._context import BotContext
    from ._middleware import HandlerBoundary, HandlerFailed
    from ._seam import call_trio
    from ._services import ActorTable, BotServices

__all__ = [
    "ACTOR_NAMES",
    "BOT_ACTOR",
    "BOT_LIBRARIES",
    "POLLER_ACTOR",
    "ActorTable",
    "BotContext",
    "BotServices",
    "HandlerBoundary",
    "HandlerFailed",
    "TelegramBot",
    "bot_actors",
    "build_dispatcher",
    "call_trio",
    "declared_bot_actors",
    "telegram_bot",
    "telegram_webhook_routes",
]

_LAZY = {
    "TelegramBot": "._actor",
    "build_dispatcher": "._actor",
    "BotContext": "._context",
    "HandlerBoundary": "._middleware",
    "HandlerFailed": "._middleware",
    "call_trio": "._seam",
    "ActorTable": "._services",
    "BotServices": "._services",
}
"""Imported on first use: the bot's machinery imports aiogram (seconds), which commands that
never run the bot, and the configuration check (it needs only ``_specs``), should not pay."""


__getattr__ = lazy_exports(__name__, _LAZY)


BOT_LIBRARIES = (
    "aiogram",
    "aiogram.types",
    "aiogram.methods",
    "aiogram.exceptions",
    "aiogram.filters",
    "aiogram.utils.keyboard",
    "aiogram.client.session.aiohttp",
)
"""What the bot's modules import from aiogram: a start imports them in a thread, early."""

_bots: weakref.WeakKeyDictionary[Services, TelegramBot] = weakref.WeakKeyDictionary()


def telegram_bot(
    services: Services, *, actor_table: ActorTable | None = None
) -> TelegramBot | None:
    """The bot of this runtime (made on first use, and again after a reload replaced the
    settings), or None without ``telegram.token``.

    ``actor_table`` returns the supervisor's status document, as served at ``/status``
    (``{"state": ..., "ready": ..., "actors": [ActorStatus.to_json(), ...]}``); the admin
    ``/status`` command shows it. It may be given on any call; the last one given wins.
    """
    if services.settings.telegram.token is None:
        return None
    from ._actor import TelegramBot

    bot = _bots.get(services)
    if bot is None or bot.settings is not services.settings:  # new, or a reload
        table = actor_table if actor_table is not None or bot is None else bot.actor_table
        bot = _bots[services] = TelegramBot(services, actor_table=table)
    elif actor_table is not None:
        bot.actor_table = actor_table
    return bot


def bot_actors(services: Services, *, actor_table: ActorTable | None = None) -> list[ActorSpec]:
    """The bot's actors: ``bot`` (the inbox) and, in polling mode, ``bot-poller``.

    The bot is built when the first of them starts, its modules imported in a thread: the
    import takes seconds of CPU (aiogram), and nothing started before the bot (the
    database, the HTTP listeners, the workers) waits for it.
    """
    if services.settings.telegram.token is None:
        return []

    async def built() -> TelegramBot:
        await trio.to_thread.run_sync(importlib.import_module, f"{__name__}._actor")
        bot = telegram_bot(services, actor_table=actor_table)
        if bot is None:  # pragma: no cover - the token was checked above
            raise RuntimeError("the bot needs telegram.token")
        return bot

    async def run_bot(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await (await built()).run_bot(ctx, task_status=task_status)

    async def run_poller(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await (await built()).run_poller(ctx, task_status=task_status)

    return bot_specs(services.settings, run_bot=run_bot, run_poller=run_poller)


def telegram_webhook_routes(services: Services) -> list[Route]:
    """The webhook route at the path of ``bot.webhook_url`` in webhook mode, else none.

    It needs no bot (no aiogram): an update is stored in the inbox, and the bot's inbox
    processor, once built, is woken to take it (until then, it finds it when it starts).
    """
    if services.settings.telegram.token is None or services.settings.bot.mode != "webhook":
        return []
    from ._webhook import webhook_routes

    def wake() -> None:
        bot = _bots.get(services)
        if bot is not None:
            bot.processor.wakeup.set()

    return webhook_routes(services.settings, lambda: services.db, wake, lambda: services.alerts)
