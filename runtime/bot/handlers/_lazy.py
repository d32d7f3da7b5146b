"""Routers whose handlers are imported on the first update that needs them.

The admins' handlers (their commands, broadcasts, moderation, reports) are most of the
bot's handler code and are used by a few people now and then: an idle service need not hold
them. A ``LazyRouter`` carries the filters that let an update in (an admin's message or
button); the first update to pass them builds its routers, importing their modules, and
every update then goes on to them as to any router's children. They get the cheaper
dispatch (``await_plain_callables``) the dispatcher's other routers got when it was built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiogram import Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.types import TelegramObject

from .._dispatch import await_plain_callables


class LazyRouter(Router):
    """A router whose children ``build`` returns, built on the first update of one of
    ``update_types`` that passes the router's own filters (set them after construction,
    like any router's)."""

    def __init__(
        self,
        *,
        name: str,
        build: Callable[[], Sequence[Router]],
        update_types: Sequence[str] = ("message", "callback_query"),
    ) -> None:
        super().__init__(name=name)
        self._build: Callable[[], Sequence[Router]] | None = build
        for update_type in update_types:
            self.observers[update_type].register(self._load)

    @property
    def built(self) -> bool:
        return self._build is None

    async def _load(self, event: TelegramObject) -> None:
        """The router's first handler, tried once its filters have passed: it builds the
        children, then steps aside (``SkipHandler``) for them to take the update."""
        if self._build is not None:
            build, self._build = self._build, None
            for child in build():
                self.include_router(child)
                await_plain_callables(child)
        raise SkipHandler
