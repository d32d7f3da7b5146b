"""The Remnawave 3.x VPN panel, configured by ``[plugins.settings.remnawave]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, VpnBackend, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .backend import RemnawaveBackend
    from .client import RemnawaveClient
    from .settings import RemnawaveSettings

__all__ = [
    "RemnawaveBackend",
    "RemnawaveClient",
    "RemnawaveSettings",
    "vpnbot_offers",
    "vpnbot_vpn_backends",
]

PLUGIN_NAME = "remnawave"

_LAZY = {
    "RemnawaveBackend": ".backend",
    "RemnawaveClient": ".client",
    "RemnawaveSettings": ".settings",
}
"""The backend, its client and settings: imported when the plugin is configured."""


__getattr__ = lazy_exports(__name__, _LAZY)


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    """One backend when ``[plugins.settings.remnawave]`` exists; ``ConfigError`` when it is
    wrong."""
    table = settings.plugins.settings.get(PLUGIN_NAME)
    if table is None:
        return []
    from .backend import RemnawaveBackend
    from .settings import RemnawaveSettings

    config = validate_section(RemnawaveSettings, table, path=f"plugins.settings.{PLUGIN_NAME}")
    return [RemnawaveBackend(config, name=PLUGIN_NAME)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.VPN_BACKEND,
            PLUGIN_NAME,
            f"plugins.settings.{PLUGIN_NAME}",
            settings_model=f"{__name__}.settings:RemnawaveSettings",
        )
    ]
