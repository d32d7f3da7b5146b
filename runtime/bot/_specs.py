"""The bot's actors as the supervisor sees them: names and policies, without aiogram.

``TelegramBot.actors()`` binds them to its run functions. Checking a configuration
(``[actors.bot]`` against the bot's own defaults) needs the same specs without building the
bot, whose import of aiogram alone takes seconds: ``declared_bot_actors`` gives them with
bodies that refuse to run.
"""

from __future__ import annotations

import trio

from runtime.config import Settings
from runtime.supervision import ActorContext, ActorSpec, Backoff, Budget, RunFunction

BOT_ACTOR = "bot"
POLLER_ACTOR = "bot-poller"
ACTOR_NAMES = (BOT_ACTOR, POLLER_ACTOR)
"""Every actor the bot may run; which ones run depends on the configuration."""


BACKOFF = Backoff(min=1.0, max=60.0)
BUDGET = Budget(max_failures=10, window=60.0, park_cooldown=300.0)


def bot_specs(
    settings: Settings, *, run_bot: RunFunction, run_poller: RunFunction
) -> list[ActorSpec]:
    """``bot`` (the inbox) and, in polling mode, ``bot-poller``, with their policies."""
    specs = [ActorSpec(BOT_ACTOR, run_bot, backoff=BACKOFF, budget=BUDGET, shutdown_timeout=10.0)]
    if settings.bot.mode == "polling":
        specs.append(
            ActorSpec(
                POLLER_ACTOR, run_poller, backoff=BACKOFF, budget=BUDGET, shutdown_timeout=5.0
            )
        )
    return specs


async def _declared_only(
    ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    raise RuntimeError(f"{ctx.name}: declared to check a configuration, not to run")


def declared_bot_actors(settings: Settings) -> list[ActorSpec]:
    """The specs ``bot_actors`` returns for ``settings``, without building the bot."""
    if settings.telegram.token is None:
        return []
    return bot_specs(settings, run_bot=_declared_only, run_poller=_declared_only)
