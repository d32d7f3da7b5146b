"""A wake-up call for a periodic worker that is never lost."""

from __future__ import annotations

import trio


class Wakeup:
    """Tells a sleeping worker that work arrived.

    A call that comes while nobody waits is kept: the next ``wait`` returns at once.
    ``clear`` forgets the calls so far; a worker clears before it looks for work, so a call
    that arrives while it works cuts its next pause short. While ``muted`` (a worker with
    no part in the work just now, such as a standby), calls are ignored.
    """

    def __init__(self) -> None:
        self._event = trio.Event()
        self.calls = 0
        """Wake-up calls so far (for tests and figures)."""
        self.muted = False
        self._seen = -1

    def set(self) -> None:
        if self.muted:
            return
        self.calls += 1
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    def called(self) -> bool:
        """Whether it was called since this was last asked (True the first time): a worker
        tells a wake-up call from the end of its fallback pause."""
        seen, self._seen = self._seen, self.calls
        return self.calls != seen

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def wait_any(*events: trio.Event | Wakeup) -> None:
    """Return when any of ``events`` is set (at once if one is)."""
    if any(event.is_set() for event in events):
        await trio.lowlevel.checkpoint()
        return
    async with trio.open_nursery() as nursery:

        async def first(event: trio.Event | Wakeup) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(first, event)
