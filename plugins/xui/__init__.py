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
from runtime.plugin_api import Offer, OfferKind, VpnBackend, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .backend import XuiBackend
    from .client import RouteNotFound, XuiClient
    from .identity import Identity
    from .settings import XuiSettings

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

_LAZY = {
    "Identity": ".identity",
    "RouteNotFound": ".client",
    "XuiBackend": ".backend",
    "XuiClient": ".client",
    "XuiSettings": ".settings",
}
"""The backend, its client and models: imported when the plugin is configured (their
pydantic models cost about 1 MB of memory that a service without 3x-ui need not hold)."""


__getattr__ = lazy_exports(__name__, _LAZY)


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    from .backend import XuiBackend
    from .settings import XuiSettings

    config = validate_section(XuiSettings, table, path=f"plugins.settings.{PLUGIN}")
    return [XuiBackend.from_settings(config, name=PLUGIN)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.VPN_BACKEND,
            PLUGIN,
            f"plugins.settings.{PLUGIN}",
            settings_model=f"{__name__}.settings:XuiSettings",
        )
    ]
