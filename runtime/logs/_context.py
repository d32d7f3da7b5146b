"""Correlation ids: one per unit of work, carried by every line logged inside it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import structlog


def new_correlation_id() -> str:
    """A fresh id: 16 hex characters."""
    return secrets.token_hex(8)


@contextlib.contextmanager
def correlation(correlation_id: str | None = None, **more: Any) -> Iterator[str]:
    """Bind ``correlation_id`` (a new one when ``None``) and ``more`` for the enclosed code.

    The values live in ``structlog.contextvars``: trio copies them into tasks started inside,
    and the previous values come back on exit. Yields the id in use.
    """
    correlation_id = correlation_id or new_correlation_id()
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **more):
        yield correlation_id


def current_correlation_id() -> str:
    """The bound correlation id, or ``"-"`` outside any ``correlation`` block."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else "-"
