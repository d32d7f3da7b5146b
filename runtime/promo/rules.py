"""What a promo code may be: its name and the value each kind takes.

Free of the rest of the runtime, so that the configuration, the admin commands and the
storage check codes by the same rules (the database's checks say the same again).
"""

from __future__ import annotations

import re

KINDS = ("days", "balance", "plan", "discount", "next_discount")
MIN_LENGTH = 3
MAX_LENGTH = 32
CODE = re.compile(r"[A-Z0-9_-]{3,32}")
"""A code as stored: upper case; users may type it in any case."""
MAX_DAYS = 3660
MAX_BALANCE_MINOR = 10**12
MAX_PERCENT = 99
MAX_ACTIVATIONS = 10**9


def normalize(text: str) -> str | None:
    """The code a user or admin typed, in its stored form; None when it cannot be one.
    Bounded before it is matched, so a long text costs nothing."""
    candidate = text.strip()
    if not MIN_LENGTH <= len(candidate) <= MAX_LENGTH:
        return None
    candidate = candidate.upper()
    return candidate if CODE.fullmatch(candidate) else None


def value_problem(kind: str, value: int | str) -> str | None:
    """Why ``value`` is not one a code of ``kind`` takes, or None. A plan code's value is
    the plan's id; the others' a whole number: days, minor units of the balance currency,
    or a percent."""
    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    if kind == "plan":
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", value):
            return "a plan code's value is a plan id (1-32 of a-z, 0-9, _)"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"a {kind} code's value is a whole number"
    limit = {"days": MAX_DAYS, "balance": MAX_BALANCE_MINOR}.get(kind, MAX_PERCENT)
    if not 1 <= value <= limit:
        return f"a {kind} code's value is 1 to {limit}"
    return None
