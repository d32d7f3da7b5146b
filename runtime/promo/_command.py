"""``/promo_new``'s arguments, read into a new code: the admin's whole text is a door.

    /promo_new CODE kind=days value=7 max=100 from=2026-01-01 until=2027-01-31 new_only no_sub

``kind`` and ``value`` are required; ``max`` (activations), ``from`` and ``until`` (a date,
UTC, or an ISO moment with a time zone) are optional; ``until`` of a bare date lets the
code run to the end of that day. Flags: ``new_only`` (users who never paid),
``no_sub`` (users without a running paid subscription), ``once_per_user`` (what every code
is anyway: accepted, changes nothing).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from runtime.storage.promo import Kind, NewCode

from . import rules

MAX_TEXT = 300
MAX_WORDS = 10
_FLAGS = {"new_only", "no_sub", "once_per_user"}
_KEYS = {"kind", "value", "max", "from", "until"}


class BadCommand(ValueError):
    """What is wrong with the arguments, said to the admin."""


def _moment(text: str, *, end_of_day: bool) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadCommand(f"{text[:40]!r} is not a date (YYYY-MM-DD)") from None
    if parsed.tzinfo is None:
        raise BadCommand("a moment needs a time zone, e.g. 2027-01-31T12:00:00+00:00")
    return parsed


def parse_new_code(args: str) -> NewCode:
    """The code ``/promo_new``'s arguments describe; ``BadCommand`` says what is wrong."""
    if len(args) > MAX_TEXT:
        raise BadCommand(f"too long: at most {MAX_TEXT} characters")
    words = args.split()
    if not words or len(words) > MAX_WORDS:
        raise BadCommand("give the code, then kind=... value=...")
    code = rules.normalize(words[0])
    if code is None:
        raise BadCommand(
            f"a code is {rules.MIN_LENGTH}-{rules.MAX_LENGTH} characters of A-Z, 0-9, _ and -"
        )
    options: dict[str, str] = {}
    flags: set[str] = set()
    for word in words[1:]:
        key, sep, given = word.partition("=")
        key = key.lower()
        if not sep and key in _FLAGS:
            flags.add(key)
        elif sep and key in _KEYS and key not in options and given:
            options[key] = given
        else:
            raise BadCommand(f"{word[:40]!r} is not an option here")
    kind = options.get("kind", "").lower()
    if kind not in rules.KINDS:
        raise BadCommand(f"kind is one of {', '.join(rules.KINDS)}")
    raw = options.get("value", "")
    value: int | str = raw.lower() if kind == "plan" else _number(raw, "value")
    why = rules.value_problem(kind, value)
    if why is not None:
        raise BadCommand(why)
    most = _number(options["max"], "max") if "max" in options else None
    if most is not None and not 1 <= most <= rules.MAX_ACTIVATIONS:
        raise BadCommand(f"max is 1 to {rules.MAX_ACTIVATIONS}")
    start = _moment(options["from"], end_of_day=False) if "from" in options else None
    until = _moment(options["until"], end_of_day=True) if "until" in options else None
    if start is not None and until is not None and until <= start:
        raise BadCommand("until must be later than from")
    return NewCode(
        code=code,
        kind=Kind(kind),
        amount=None if kind == "plan" else int(value),
        plan_id=str(value) if kind == "plan" else None,
        max_activations=most,
        valid_from=start,
        valid_until=until,
        new_users_only="new_only" in flags,
        without_subscription="no_sub" in flags,
    )


def _number(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 13:
        raise BadCommand(f"{name} is a whole number")
    return int(text)
