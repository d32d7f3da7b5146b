"""The 3x-ui VPN panel (v2 inbounds API and v3.1+ clients API): the ``xui`` backend.

Configured by ``[plugins.settings.xui]`` (see ``settings.XuiSettings``); without that table
the plugin offers nothing::

    [plugins.settings.xui]
    base_url = "https://panel.example.com:2053/AbCdEf/"
    username = "admin"
    password = "..."                 # or: api_token = "..." (v3.0+)
    inbound_ids = [1]
    subscription_base_url = "https://sub.example.com:2096/sub/"
    flow = "xtls-rprx-vision"        # optional, VLESS Reality
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, VpnBackend, hookimpl

from .backend import XuiBackend
from .client import RouteNotFound, XuiClient
from .identity import Identity
from .settings import XuiSettings

if TYPE_CHECKING:
    from runtime.config import Settings

__all__ = [
    "Identity",
    "RouteNotFound",
    "XuiBackend",
    "XuiClient",
    "XuiSettings",
    "vpnbot_offers",
    "vpnbot_vpn_backends",
]

PLUGIN = "xui"


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    config = validate_section(XuiSettings, table, path=f"plugins.settings.{PLUGIN}")
    return [XuiBackend.from_settings(config, name=PLUGIN)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [Offer(OfferKind.VPN_BACKEND, PLUGIN, f"plugins.settings.{PLUGIN}")]
