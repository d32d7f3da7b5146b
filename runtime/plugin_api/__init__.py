"""The plugin API: hooks (pluggy, project ``vpnbot``), the interfaces plugins implement,
and the loader that keeps one broken plugin from stopping the others.

A plugin is a module (or object) with ``@hookimpl`` functions named after the hooks in
``runtime.plugin_api.hookspecs``, registered through a ``vpnbot.plugins`` entry point or
listed in ``settings.plugins.paths``.
"""

from runtime.lazy import lazy_exports

from ._manager import (
    BUILTIN_PLUGINS,
    DISABLE_ENV_VAR,
    ENTRY_POINT_GROUP,
    LoadedPlugins,
    PluginInfo,
    PluginProblem,
    load_plugins,
)
from .hookspecs import hookimpl, hookspec
from .limits import BackendCapabilities, Device, DeviceManager, capabilities_of
from .offers import Offer, OfferKind, SettingsTable, settings_tables
from .payments import (
    AuthenticatedDelivery,
    ChargeState,
    ConfirmedPayment,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    PaymentIntent,
    RecurringPaymentProvider,
    RefundNotSupported,
    SavedCharge,
    SavedMethod,
    TelegramPayment,
    TelegramPaymentProvider,
    WebhookReceiver,
    WebhookRejected,
)
from .protocols import AlertSink, PaymentProvider, VpnBackend
from .services import ServiceNotReady, Services

__all__ = [
    "BUILTIN_PLUGINS",
    "DISABLE_ENV_VAR",
    "ENTRY_POINT_GROUP",
    "AlertSink",
    "AuthenticatedDelivery",
    "BackendCapabilities",
    "ChargeState",
    "ConfirmedPayment",
    "Device",
    "DeviceManager",
    "Invoice",
    "InvoiceState",
    "InvoiceStatus",
    "LoadedPlugins",
    "Offer",
    "OfferKind",
    "PaymentIntent",
    "PaymentProvider",
    "PluginInfo",
    "PluginProblem",
    "RecurringPaymentProvider",
    "RefundNotSupported",
    "SavedCharge",
    "SavedMethod",
    "ServiceNotReady",
    "Services",
    "SettingsTable",
    "TelegramPayment",
    "TelegramPaymentProvider",
    "VpnBackend",
    "WebhookReceiver",
    "WebhookRejected",
    "capabilities_of",
    "hookimpl",
    "hookspec",
    "lazy_exports",
    "load_plugins",
    "settings_tables",
]
