"""Configuration: one TOML file, credential files and environment overrides, validated up front.

``load_settings()`` returns a ``Settings`` or raises ``ConfigError`` listing every problem with
its dotted key path. Precedence, later wins: embedded defaults, the TOML file, secrets from
``$CREDENTIALS_DIRECTORY`` (a file named by the key path, e.g. ``telegram.token``), then
``VPNBOT_<SECTION>__<KEY>`` environment variables (e.g. ``VPNBOT_HTTP__PORT=9000``).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from ._load import load_settings, suggest, validate_section
from ._model import (
    BOT_TOKEN_SHAPE,
    AccessRulesSettings,
    AccessSettings,
    ActorPolicyOverride,
    AlertsSettings,
    AppriseAlertSettings,
    BillingSettings,
    BotSettings,
    ConfigError,
    ConfigProblem,
    DatabaseSettings,
    HttpLimitsSettings,
    HttpSettings,
    NotifierSettings,
    PlanSettings,
    PluginsSettings,
    PublicListenerSettings,
    ReferralLevelSettings,
    ReferralsSettings,
    RemindersSettings,
    ServiceSettings,
    Settings,
    TelegramAlertSettings,
    TelegramSettings,
    TrafficPackageSettings,
    TrafficSettings,
    TrialSettings,
    WakeupsSettings,
    WebhookAlertSettings,
    priced_items,
    production_problems,
)

if TYPE_CHECKING:
    from ._reference import reference_markdown

__all__ = [
    "BOT_TOKEN_SHAPE",
    "AccessRulesSettings",
    "AccessSettings",
    "ActorPolicyOverride",
    "AlertsSettings",
    "AppriseAlertSettings",
    "BillingSettings",
    "BotSettings",
    "ConfigError",
    "ConfigProblem",
    "DatabaseSettings",
    "HttpLimitsSettings",
    "HttpSettings",
    "NotifierSettings",
    "PlanSettings",
    "PluginsSettings",
    "PublicListenerSettings",
    "ReferralLevelSettings",
    "ReferralsSettings",
    "RemindersSettings",
    "ServiceSettings",
    "Settings",
    "TelegramAlertSettings",
    "TelegramSettings",
    "TrafficPackageSettings",
    "TrafficSettings",
    "TrialSettings",
    "WakeupsSettings",
    "WebhookAlertSettings",
    "load_settings",
    "priced_items",
    "production_problems",
    "reference_markdown",
    "suggest",
    "validate_section",
]

_LAZY = {"reference_markdown": "._reference"}
"""The reference (and the parsing of the models' sources it does) is for ``config-reference``
only: the service does not import it."""

__getattr__ = lazy_exports(__name__, _LAZY)
