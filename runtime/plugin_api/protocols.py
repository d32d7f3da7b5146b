"""The interfaces of the objects plugins hand to the core.

Hooks are synchronous registration points; what they return are objects with async
methods, described here as ``typing.Protocol``s (runtime-checkable, so the plugin manager
can check what a plugin returns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .payments import PaymentProvider
from .vpn import VpnBackend

if TYPE_CHECKING:
    from runtime.alerts._model import Alert

__all__ = ["AlertSink", "PaymentProvider", "VpnBackend"]


@runtime_checkable
class AlertSink(Protocol):
    """Somewhere alerts go (a log line, a webhook, Telegram chats).

    ``send`` raises when the alert was not delivered; the pipeline catches, logs and counts
    it, and bounds every call with a timeout, so a sink need not guard itself.
    """

    name: str

    async def send(self, alert: Alert) -> None: ...
