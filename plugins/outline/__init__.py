"""Outline VPN servers: the ``outline`` VPN backend.

Configured by ``[plugins.settings.outline]`` (see ``settings.OutlineSettings``); without
that table the plugin offers nothing::

    [plugins.settings.outline]
    api_url = "https://203.0.113.7:37518/XjY3ZkTbq0Lw"   # the installer's apiUrl: a secret
    cert_sha256 = "A1B2...64 hex digits"                 # the installer's certSha256
    timeout_seconds = 10
    # method = "chacha20-ietf-poly1305"

``api_url`` can come from a credential file (``plugins.settings.outline.api_url``) rather
than the TOML file. Outline keeps no expiry: see ``backend`` for how subscriptions map onto
access keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from runtime.config import validate_section
from runtime.logs import add_secrets
from runtime.plugin_api import Offer, OfferKind, VpnBackend, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .backend import OutlineBackend
    from .settings import OutlineSettings

__all__ = [
    "OutlineBackend",
    "OutlineSettings",
    "build_backend",
    "vpnbot_offers",
    "vpnbot_vpn_backends",
]

PLUGIN = "outline"

_LAZY = {
    "OutlineBackend": ".backend",
    "OutlineSettings": ".settings",
}
"""The backend and its settings: imported when the plugin is configured."""


__getattr__ = lazy_exports(__name__, _LAZY)


def build_backend(config: OutlineSettings) -> OutlineBackend:
    """The backend for these settings; its secret URL is masked in every log line from now."""
    from .backend import OutlineBackend

    api_url = config.api_url_value()
    add_secrets([api_url, urlsplit(api_url).path.strip("/")])
    return OutlineBackend(
        api_url, config.cert_sha256, timeout=config.timeout_seconds, method=config.method
    )


@hookimpl
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    from .settings import OutlineSettings

    config = validate_section(OutlineSettings, table, path=f"plugins.settings.{PLUGIN}")
    return [build_backend(config)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.VPN_BACKEND,
            PLUGIN,
            f"plugins.settings.{PLUGIN}",
            settings_model=f"{__name__}.settings:OutlineSettings",
        )
    ]
