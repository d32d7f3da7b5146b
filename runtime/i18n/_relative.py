"""Time left as users read it, never less than the truth."""

from __future__ import annotations

from datetime import timedelta

from ._translator import Translator


def remaining_parts(left: timedelta) -> tuple[int, int, int]:
    """``(days, hours, minutes)`` left, rounded up: to the minute up to an hour, to the
    hour beyond. Just after a 72 h trial starts, 71 h 59 min left reads as 3 days; 25 h
    as 1 day 1 hour; nothing left as ``(0, 0, 0)``."""
    seconds = max(0, -int(-left.total_seconds() // 1))
    minutes = -(-seconds // 60)
    if minutes < 60:
        return (0, 0, minutes)
    hours = -(-seconds // 3600)
    return (hours // 24, hours % 24, 0)


def format_days(translator: Translator, language: str, days: int) -> str:
    """``30`` -> ``30 days``, ``1`` -> ``1 day``, ``21`` -> ``21 день``."""
    return translator.t(language, "time.days", count=days)


def format_time_left(translator: Translator, language: str, left: timedelta) -> str:
    """``2 days 23 hours left``, ``1 hour left``, ``ended``."""
    days, hours, minutes = remaining_parts(left)
    parts = [
        translator.t(language, f"time.{unit}", count=value)
        for unit, value in (("days", days), ("hours", hours), ("minutes", minutes))
        if value
    ]
    if not parts:
        return translator.t(language, "time.ended")
    return translator.t(language, "time.left", duration=" ".join(parts))
