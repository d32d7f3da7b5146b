"""``vpnbot updates``: the Telegram updates the bot gave up on, and replaying them.

An update is given up for a bug in its handling (never for Telegram's own failures); it
stays in the inbox. Replaying makes it pending again with a fresh count of attempts: a
running instance picks it up within seconds, as if it had just arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from runtime.bridge import asyncio_loop
from runtime.config import Settings
from runtime.storage import inbox
from runtime.storage.inbox import DeadUpdate

from ._database import connect
from .tables import table

ERROR_SHOWN = 80


async def given_up_updates(settings: Settings, *, limit: int) -> list[DeadUpdate]:
    """The updates given up, newest first."""
    async with asyncio_loop(kind=settings.service.asyncio_loop):
        opened = await connect(settings.database)
        try:
            return await inbox.dead_updates(opened.db, limit)
        finally:
            await opened.close()


async def replay_updates(settings: Settings, update_ids: Sequence[int] | None) -> list[int]:
    """Make given-up updates pending again (all of them with ``None``); their ids."""
    async with asyncio_loop(kind=settings.service.asyncio_loop):
        opened = await connect(settings.database)
        try:
            return await inbox.replay(opened.db, update_ids)
        finally:
            await opened.close()


def render_given_up(dead: Sequence[DeadUpdate]) -> str:
    if not dead:
        return "no updates were given up"
    rows = []
    for update in dead:
        error = " ".join(update.error.split())
        if len(error) > ERROR_SHOWN:
            error = error[: ERROR_SHOWN - 1] + "…"
        rows.append(
            [
                str(update.update_id),
                update.kind,
                update.given_up_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                str(update.attempts),
                error,
            ]
        )
    return table(["UPDATE", "TYPE", "GIVEN UP (UTC)", "ATTEMPTS", "ERROR"], rows)
