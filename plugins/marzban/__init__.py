"""The Marzban VPN panel (0.8.x), configured by ``[plugins.settings.marzban]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, VpnBackend, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .backend import MarzbanBackend
    from .client import MarzbanClient
    from .settings import MarzbanSettings

__all__ = [
    "MarzbanBackend",
    "MarzbanClient",
    "MarzbanSettings",
    "vpnbot_offers",
    "vpnbot_vpn_backends",
]

PLUGIN_NAME = "marzban"

_LAZY = {
    "MarzbanBackend": ".backend",
    "MarzbanClient": ".client",
    "MarzbanSettings": ".settings",
}
"""The backend, its client and settings: imported when the plugin is configured."""


__getattr__ = lazy_exports(__name__, _LAZY)


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    """One backend when ``[plugins.settings.marzban]`` exists; ``ConfigError`` when it is wrong."""
    table = settings.plugins.settings.get(PLUGIN_NAME)
    if table is None:
        return []
    from .backend import MarzbanBackend
    from .settings import MarzbanSettings

    config = validate_section(MarzbanSettings, table, path=f"plugins.settings.{PLUGIN_NAME}")
    return [MarzbanBackend(config, name=PLUGIN_NAME)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.VPN_BACKEND,
            PLUGIN_NAME,
            f"plugins.settings.{PLUGIN_NAME}",
            settings_model=f"{__name__}.settings:MarzbanSettings",
        )
    ]
