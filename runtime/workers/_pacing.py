"""Pacing for the notifier: a global rate with pauses, and a rate per chat (pure trio)."""

from __future__ import annotations

import math

import trio

MARGIN = 0.05
"""Sends are paced this much below the configured rate."""
CATCH_UP_SECONDS = 0.03
"""How many seconds of sends a stall may save up and send at once (at least 2)."""


class Pacer:
    """Starts sends at most ``rate`` per second across all tasks: a token bucket.

    Tokens refill at ``rate`` less ``MARGIN`` and are taken when a send actually starts,
    on the clock as it is then, not when it was due. A process that stalls (starved of
    CPU) therefore sends slower, never faster: the sends it owes are caught up only as far
    as the bucket holds (``capacity``: ``CATCH_UP_SECONDS`` of sends, at least 2), never
    in one burst, and never given up. In any span of ``t`` seconds at most
    ``capacity + t * refill`` sends start.

    ``slot(deadline)`` waits for a token and returns True, or returns False at once when
    the tasks ahead of it would take it past ``deadline``. ``pause(seconds)`` (a 429)
    holds every send back until the pause ends, and the bucket starts empty after it.
    Waiting tasks get their tokens in the order they asked.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.refill = rate * (1.0 - MARGIN)
        self.capacity = max(2.0, math.ceil(rate * CATCH_UP_SECONDS))
        self.interval = 1.0 / self.refill
        self._tokens = 1.0
        self._stamp = -math.inf
        self._turn = trio.Lock()
        self._waiting = 0
        self.paused_until = -math.inf

    def pause(self, seconds: float) -> None:
        until = trio.current_time() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self._tokens = 0.0
            self._stamp = until

    @property
    def paused(self) -> bool:
        return self.paused_until > trio.current_time()

    def _refilled(self, now: float) -> float:
        if self._stamp == -math.inf:
            return self._tokens
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.refill)
            self._stamp = now
        return self._tokens

    def _ready_at(self, now: float, ahead: int) -> float:
        """When the token of a task with ``ahead`` tasks before it comes, at the earliest."""
        missing = ahead + 1 - self._refilled(now)
        start = max(now, self.paused_until, self._stamp if self._stamp != -math.inf else now)
        return start if missing <= 0 else start + missing / self.refill

    async def slot(self, deadline: float = math.inf) -> bool:
        if self._ready_at(trio.current_time(), self._waiting) > deadline:
            await trio.lowlevel.checkpoint()
            return False
        self._waiting += 1
        try:
            async with self._turn:
                while True:
                    now = trio.current_time()
                    if self._stamp == -math.inf:
                        self._stamp = now
                    ready = self._ready_at(now, 0)
                    if ready > deadline:
                        return False
                    if ready <= now:
                        self._tokens -= 1.0
                        return True
                    await trio.sleep_until(ready)
        finally:
            self._waiting -= 1


CHAT_BURST = 3
"""Messages a chat may get at once (Telegram tolerates short bursts above its rate of about
one a second per chat): a payment's confirmation and its access link go out together."""


class ChatSpacing:
    """At most ``burst`` messages at once per chat, then one per ``interval`` seconds: a
    token bucket per chat, as seen by this process. A send counts when it has finished,
    which is later than Telegram counts it, never earlier."""

    def __init__(self, interval: float, burst: int = CHAT_BURST) -> None:
        self.interval = max(0.0, interval)
        self.burst = max(1, burst)
        self._buckets: dict[int | str, tuple[float, float]] = {}

    def _tokens(self, chat_id: int | str, now: float) -> float:
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            return float(self.burst)
        tokens, stamp = bucket
        if self.interval == 0:
            return float(self.burst)
        return min(float(self.burst), tokens + (now - stamp) / self.interval)

    def ready_at(self, chat_id: int | str) -> float:
        now = trio.current_time()
        tokens = self._tokens(chat_id, now)
        if tokens >= 1.0:
            return -math.inf
        return now + (1.0 - tokens) * self.interval

    def sent(self, chat_id: int | str) -> None:
        now = trio.current_time()
        self._buckets[chat_id] = (self._tokens(chat_id, now) - 1.0, now)

    def forget_old(self) -> None:
        """Drop chats whose bucket is full again (keeps the map small between batches)."""
        now = trio.current_time()
        for chat_id in [c for c in self._buckets if self._tokens(c, now) >= self.burst]:
            del self._buckets[chat_id]
