"""Pacing for the notifier: a global rate with pauses, and spacing per chat (pure trio)."""

from __future__ import annotations

import math

import trio


class Pacer:
    """Starts sends at most ``rate`` per second, evenly spaced, across all tasks.

    ``slot(deadline)`` waits for the next free start time and returns True, or returns
    False at once when that time would fall after ``deadline``. ``pause(seconds)`` (a
    429) holds every send back until the pause ends: slots reserved before it are given
    up and taken again after it, so the rate holds right after a pause too. A slot whose
    task wakes late (the process stalled) is given up too: the sends that queued up behind
    the stall are spread out again instead of going out in one burst.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._next = -math.inf
        self._generation = 0
        self.paused_until = -math.inf

    def pause(self, seconds: float) -> None:
        until = trio.current_time() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self._next = until
            self._generation += 1

    @property
    def paused(self) -> bool:
        return self.paused_until > trio.current_time()

    async def slot(self, deadline: float = math.inf) -> bool:
        while True:
            now = trio.current_time()
            start = max(now, self._next, self.paused_until)
            if start > deadline:
                return False
            self._next = start + self.interval
            generation = self._generation
            await trio.sleep_until(start)
            if self._generation != generation:
                continue
            if trio.current_time() - start > max(3 * self.interval, 0.02):
                continue  # woke late (the process stalled): take a fresh slot, no burst
            return True


class ChatSpacing:
    """At most one message per ``interval`` seconds per chat, as seen by this process."""

    def __init__(self, interval: float) -> None:
        self.interval = max(0.0, interval)
        self._ready: dict[int | str, float] = {}

    def ready_at(self, chat_id: int | str) -> float:
        return self._ready.get(chat_id, -math.inf)

    def sent(self, chat_id: int | str) -> None:
        self._ready[chat_id] = trio.current_time() + self.interval

    def forget_old(self) -> None:
        """Drop chats whose spacing is over (keeps the map small between batches)."""
        now = trio.current_time()
        for chat_id in [c for c, ready in self._ready.items() if ready <= now]:
            del self._ready[chat_id]
