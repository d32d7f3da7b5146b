"""An example vpnbot plugin, configured by ``[plugins.settings.example]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, hookimpl

from .backend import TinyPanelBackend
from .settings import ExampleSettings
from .sink import ChatSink

if TYPE_CHECKING:
    from runtime.config import Settings
    from runtime.plugin_api import AlertSink, VpnBackend

__all__ = [
    "ChatSink",
    "ExampleSettings",
    "TinyPanelBackend",
    "vpnbot_alert_sinks",
    "vpnbot_offers",
    "vpnbot_vpn_backends",
]

NAME = "example"


def _settings(settings: Settings) -> ExampleSettings | None:
    table = settings.plugins.settings.get(NAME)
    if table is None:
        return None
    return validate_section(ExampleSettings, table, path=f"plugins.settings.{NAME}")


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    config = _settings(settings)
    return [TinyPanelBackend(config)] if config else []


@hookimpl
def vpnbot_alert_sinks(settings: Settings) -> list[AlertSink]:
    config = _settings(settings)
    if config is None or config.chat_webhook_url is None:
        return []
    return [ChatSink(config.chat_webhook_url)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    table = f"plugins.settings.{NAME}"
    return [
        Offer(
            OfferKind.VPN_BACKEND,
            NAME,
            table,
            settings_model=f"{__name__}.settings:ExampleSettings",
        ),
        Offer(OfferKind.ALERT_SINK, ChatSink.name, f"{table}.chat_webhook_url"),
    ]
