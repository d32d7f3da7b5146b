"""Flood limits like Telegram's, scripted faults and outages.

Telegram does not publish exact numbers; its FAQ says about one message per second in a
chat (short bursts tolerated), about 30 messages per second in total, and 20 per minute in
a group. The emulator models each as a token bucket: ``burst`` messages at once, refilled at
``rate`` per second. A send that finds a bucket empty is answered 429 with ``retry_after``
(whole seconds, at least 1, as Telegram sends it) and has no effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

SEND_METHODS = frozenset(
    name.lower()
    for name in (
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendInvoice",
        "sendAudio",
        "sendVideo",
        "sendAnimation",
        "sendVoice",
        "sendSticker",
        "sendMediaGroup",
        "sendLocation",
        "sendContact",
        "sendPoll",
        "sendDice",
        "copyMessage",
        "forwardMessage",
    )
)
"""The methods the flood limits count (per bot)."""


@dataclass(frozen=True)
class Limits:
    """Flood limits for the ``send*`` methods of one bot.

    ``Limits()`` is roughly Telegram's; ``Limits.off()`` disables them; change one field
    with ``dataclasses.replace`` or ``Limits(per_chat_rate=5)``.
    """

    enabled: bool = True
    per_chat_rate: float = 1.0
    """Messages per second in one private chat."""
    per_chat_burst: int = 5
    group_rate: float = 20 / 60
    """Messages per second in one group (20 per minute)."""
    group_burst: int = 20
    global_rate: float = 30.0
    """Messages per second over all chats of one bot."""
    global_burst: int = 30

    @classmethod
    def off(cls) -> Limits:
        return cls(enabled=False)

    def with_changes(self, **changes: object) -> Limits:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    stamp: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)
            self.stamp = now
            return
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass
class RateLimiter:
    """The buckets of one bot."""

    limits: Limits = field(default_factory=Limits)
    chats: dict[int, TokenBucket] = field(default_factory=dict)
    overall: TokenBucket | None = None

    def reset(self, limits: Limits) -> None:
        self.limits = limits
        self.chats.clear()
        self.overall = None

    def check(self, chat_id: int, *, group: bool, now: float) -> int | None:
        """Take a token for one message to ``chat_id``; the ``retry_after`` when there is none."""
        limits = self.limits
        if not limits.enabled:
            return None
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = (
                TokenBucket(limits.group_rate, limits.group_burst)
                if group
                else TokenBucket(limits.per_chat_rate, limits.per_chat_burst)
            )
        if self.overall is None:
            self.overall = TokenBucket(limits.global_rate, limits.global_burst)
        wait = max(chat.wait_time(now), self.overall.wait_time(now))
        if wait > 0:
            return max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
        chat.take(now)
        self.overall.take(now)
        return None


@dataclass
class ScriptedFault:
    """What the next matching call gets.

    ``method`` is a Bot API method name (any case); ``None`` matches every method except
    ``getUpdates`` (so a polling bot does not swallow a fault meant for its sends).
    ``status`` ``None`` answers normally (after ``delay``); ``delay`` ``inf`` hangs until the
    client gives up. With ``applied`` the call takes effect first and only its answer is
    delayed or replaced: the message is sent, the bot is told it failed.
    """

    method: str | None = None
    status: int | None = None
    times: int = 1
    retry_after: int | None = None
    description: str | None = None
    body: str | None = None
    delay: float = 0.0
    applied: bool = False

    def matches(self, method: str) -> bool:
        if self.method is None:
            return method != "getupdates"
        return self.method.lower() == method


@dataclass
class Outage:
    """Telegram unreachable until the outage ends: every call (of ``methods`` only, when
    given; ``getUpdates`` included; none of ``spared``) is answered ``status`` with
    ``description`` (or the raw ``body``, a proxy's page), or with ``hang`` not answered
    at all (the client's timeout ends it). Calls have no effect."""

    status: int = 502
    description: str | None = None
    body: str | None = None
    hang: bool = False
    methods: frozenset[str] | None = None
    spared: frozenset[str] = frozenset()

    def matches(self, method: str) -> bool:
        if method in self.spared:
            return False
        return self.methods is None or method in self.methods
