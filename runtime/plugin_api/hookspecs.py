"""Every hook a plugin can implement, in one module (project name ``vpnbot``).

Hooks are synchronous: pluggy cannot await. Each returns a list of objects with async
methods, except ``vpnbot_offers``, which declares what the others can return. An ``async
def`` implementation is rejected when the plugin is loaded. An implementation takes any
subset of the arguments: ``settings`` (the validated config) and ``services`` (database,
alerts, metrics; the database is usable once actors run).

A plugin module looks like::

    from runtime.plugin_api import hookimpl

    @hookimpl
    def vpnbot_alert_sinks(settings):
        return [MySink(settings.plugins.settings.get("my_plugin", {}))]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from runtime.config import Settings
    from runtime.supervision import ActorSpec

    from .offers import Offer
    from .protocols import AlertSink, PaymentProvider, VpnBackend
    from .services import Services

PROJECT_NAME = "vpnbot"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def vpnbot_payment_providers(settings: Settings, services: Services) -> list[PaymentProvider]:  # type: ignore[empty-body]
    """Return the payment providers this plugin offers (may be empty)."""


@hookspec
def vpnbot_vpn_backends(settings: Settings, services: Services) -> list[VpnBackend]:  # type: ignore[empty-body]
    """Return the VPN backends this plugin offers (may be empty)."""


@hookspec
def vpnbot_alert_sinks(settings: Settings, services: Services) -> list[AlertSink]:  # type: ignore[empty-body]
    """Return the alert sinks this plugin offers (may be empty)."""


@hookspec
def vpnbot_actors(settings: Settings, services: Services) -> list[ActorSpec]:  # type: ignore[empty-body]
    """Return extra actors for the supervisor to run (may be empty)."""


@hookspec
def vpnbot_offers() -> list[Offer]:  # type: ignore[empty-body]
    """Return what this plugin can provide, whatever the config says (``offers.Offer``).

    Takes no arguments and must be cheap: ``vpnbot plugins`` lists these for plugins that
    are not configured. Every object the other hooks return should be declared here.
    """
