"""Every hook a plugin can implement, in one module (project name ``vpnbot``).

Hooks are synchronous: pluggy cannot await. Each returns a list of objects with async
methods. An ``async def`` implementation is rejected when the plugin is loaded.

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

    from .protocols import AlertSink, PaymentProvider, VpnBackend

PROJECT_NAME = "vpnbot"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def vpnbot_payment_providers(settings: Settings) -> list[PaymentProvider]:  # type: ignore[empty-body]
    """Return the payment providers this plugin offers (may be empty)."""


@hookspec
def vpnbot_vpn_backends(settings: Settings) -> list[VpnBackend]:  # type: ignore[empty-body]
    """Return the VPN backends this plugin offers (may be empty)."""


@hookspec
def vpnbot_alert_sinks(settings: Settings) -> list[AlertSink]:  # type: ignore[empty-body]
    """Return the alert sinks this plugin offers (may be empty)."""


@hookspec
def vpnbot_actors(settings: Settings) -> list[ActorSpec]:  # type: ignore[empty-body]
    """Return extra actors for the supervisor to run (may be empty)."""
