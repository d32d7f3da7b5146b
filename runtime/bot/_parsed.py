"""Updates the long poller parsed, kept for this process's inbox processor.

aiogram parses every update ``getUpdates`` returns; the poller stores their JSON in the
inbox, and the processor, when it claims one of them in the same process, feeds the
dispatcher the object already parsed instead of validating the JSON again. Another
process, a retry, or an update pushed out of this bounded keep validates the stored JSON.
Used from trio only.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiogram import Bot
from aiogram.types import Update

KEEP = 10_000
"""Updates kept at most (a few pages of 100 are waiting at a time, usually)."""


class ParsedUpdates:
    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._updates: dict[int, Update] = {}

    def __len__(self) -> int:
        return len(self._updates)

    def keep(self, updates: Iterable[Update]) -> None:
        for update in updates:
            self._updates[update.update_id] = update
        while len(self._updates) > self._keep:
            del self._updates[next(iter(self._updates))]

    def take(self, update_id: int, bot: Bot) -> Update | None:
        """The parsed update, once, if it was parsed for ``bot``."""
        update = self._updates.pop(update_id, None)
        return update if update is not None and update.bot is bot else None
