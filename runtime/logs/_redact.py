"""Secrets never reach a log line: a processor that masks them everywhere in an event.

Masked, with ``***``:

- every configured secret value (bot token, API keys, passwords), as an exact substring;
- anything shaped like a Telegram bot token (digits, a colon, 30 or more of
  ``[A-Za-z0-9_-]``), configured or not, inside URLs (``.../bot<token>/getMe``) too.

Strings are searched in every value of the event, in nested dicts, lists, tuples and sets,
in dict keys, and in the rendered traceback (the ``exception`` field that
``format_exc_info`` writes, so it must run before this processor). Other objects are
checked through their ``repr`` (what the renderers print) and replaced by the masked
``repr`` when it holds a secret. An ``exc_info`` still unrendered is left alone.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

REDACTED = "***"

TELEGRAM_TOKEN_PATTERN = r"\d+:[A-Za-z0-9_-]{30,}"

_MAX_DEPTH = 8
"""Containers nested deeper are checked through their ``repr``."""


class _Secrets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self.pattern = self._compile(self._values)

    @staticmethod
    def _compile(values: frozenset[str]) -> re.Pattern[str]:
        # Longest first, so a secret that contains another is masked whole.
        alternatives = [re.escape(v) for v in sorted(values, key=len, reverse=True)]
        alternatives.append(TELEGRAM_TOKEN_PATTERN)
        return re.compile("|".join(alternatives))

    def replace(self, values: Iterable[str]) -> None:
        with self._lock:
            self._values = frozenset(v for v in values if v)
            self.pattern = self._compile(self._values)

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._values = self._values | {v for v in values if v}
            self.pattern = self._compile(self._values)


_SECRETS = _Secrets()


def set_secrets(values: Iterable[str]) -> None:
    """Replace the configured secret values (empty strings are ignored)."""
    _SECRETS.replace(values)


def add_secrets(values: Iterable[str]) -> None:
    """Add secret values to mask from now on (empty strings are ignored)."""
    _SECRETS.add(values)


def redact_text(text: str) -> str:
    """``text`` with every secret and token-shaped string replaced by ``***``."""
    return _SECRETS.pattern.sub(REDACTED, text)


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: masks secrets in every value of ``event_dict``."""
    pattern = _SECRETS.pattern
    return {
        _redact(key, pattern, 0): value if key == "exc_info" else _redact(value, pattern, 0)
        for key, value in event_dict.items()
    }


def _redact(value: Any, pattern: re.Pattern[str], depth: int) -> Any:
    if isinstance(value, str):
        masked = pattern.sub(REDACTED, value)
        return value if masked == value else masked  # keeps str subclasses (enums) as they are
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                _redact(k, pattern, depth + 1): _redact(v, pattern, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [_redact(v, pattern, depth + 1) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return tuple(_redact(v, pattern, depth + 1) for v in value)
        if isinstance(value, set | frozenset):
            return [_redact(v, pattern, depth + 1) for v in value]
    try:
        text = repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    masked = pattern.sub(REDACTED, text)
    return value if masked == text else masked
