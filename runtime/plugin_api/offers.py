"""What a plugin can provide, declared without any configuration.

The other hooks build objects from the settings, so a plugin without its settings answers
them with nothing. ``vpnbot_offers`` takes no arguments and returns ``Offer`` records:
each thing the plugin can provide, and the setting that turns it on. ``vpnbot plugins``
lists them, configured or not::

    @hookimpl
    def vpnbot_offers() -> list[Offer]:
        return [Offer(OfferKind.VPN_BACKEND, "my_panel", "plugins.settings.my_panel")]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Offer", "OfferKind"]


class OfferKind(StrEnum):
    """The kinds of things a plugin provides, named like the plugin listing names them."""

    PAYMENT_PROVIDER = "payment_providers"
    VPN_BACKEND = "vpn_backends"
    ALERT_SINK = "alert_sinks"
    ACTOR = "actors"


@dataclass(frozen=True, slots=True)
class Offer:
    """One thing a plugin can provide.

    ``name`` is the name the object will have (a provider's, a backend's, a sink's, an
    actor's), or the family of names ``<name>:<anything>`` when the config makes one object
    per entry (one alert sink per Apprise URL); ``setting`` is the config key that turns it
    on (``plugins.settings.my_panel``), or None when it needs none.
    """

    kind: OfferKind
    name: str
    setting: str | None = None

    def covers(self, name: str) -> bool:
        """Whether an object named ``name`` is this offer (or one of its family)."""
        return name == self.name or name.startswith(f"{self.name}:")
