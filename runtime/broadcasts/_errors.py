from __future__ import annotations

from typing import Any

from runtime.failures import DomainError


class ContentRefused(DomainError):
    """A broadcast the admin asked for that cannot be sent as it is. ``reason`` names the
    text that tells the admin why (``broadcasts.refused_<reason>``), with ``params``."""

    def __init__(self, reason: str, **params: Any) -> None:
        details = ", ".join(f"{k}={v!r}" for k, v in params.items())
        super().__init__(f"{reason}: {details}" if details else reason)
        self.reason = reason
        self.params = params
