"""The settings schema: one small pydantic model per TOML table, and the problem types.

Every model forbids unknown keys and validates strictly (TOML is typed, so ``port = "80"``
is a mistake worth reporting). Every section has defaults, so ``Settings()`` is a valid
configuration on its own.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

from runtime.promo import rules as promo_rules

from ._dsn import check_dsn

# --- problems -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration: where (a dotted key path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(Exception):
    """The configuration is unusable. ``problems`` lists everything found, not just the first."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(self.format())

    def format(self) -> str:
        """One line per problem, ready for stderr."""
        return "\n".join(f"config error: {problem}" for problem in self.problems)

    def __str__(self) -> str:
        return self.format()

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        return (type(self), (self.problems,))


class CrossFieldError(ValueError):
    """Raised by model validators for checks that span fields; paths are relative to the model.

    The loader turns each entry into a ``ConfigProblem`` at the right dotted path.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


# --- reusable field types -------------------------------------------------------------------


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _module_path(value: str) -> str:
    if not _MODULE_PATH.fullmatch(value):
        raise ValueError("must be a dotted module path such as mypackage.plugin")
    return value


Secret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]
"""A secret; an empty string counts as not set."""


def _postgres_dsn(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        check_dsn(value.get_secret_value())
    return value


PostgresDsn = Annotated[Secret, AfterValidator(_postgres_dsn)]

_BOT_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]{35}")
BOT_TOKEN_SHAPE = "<bot id>:<35 characters of A-Z, a-z, 0-9, _ and ->"
"""How @BotFather's tokens look (``123456789:AAH...``), said without showing one."""


def _bot_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not _BOT_TOKEN.fullmatch(value.get_secret_value()):
        raise ValueError(f"must be a bot token as @BotFather issues it: {BOT_TOKEN_SHAPE}")
    return value


BotToken = Annotated[Secret, AfterValidator(_bot_token)]
"""A Telegram bot token, checked for its shape so a wrong one stops the start, not the bot."""
HttpUrl = Annotated[str, AfterValidator(_http_url)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Seconds = Annotated[float, Field(ge=0)]

Restart = Literal["permanent", "transient", "temporary"]
OnExhausted = Literal["park", "escalate"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
AsyncioLoop = Literal["auto", "uvloop", "asyncio", "trio-asyncio"]
"""The kinds ``runtime.bridge.asyncio_loop`` opens (``runtime.bridge.LoopKind``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --- sections -------------------------------------------------------------------------------


_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/-]{0,99}")


def _instance_id(value: str) -> str:
    if not _INSTANCE_ID.fullmatch(value):
        raise ValueError(
            "must be 1-100 characters of A-Z a-z 0-9 . _ @ / - (starting with a letter or digit)"
        )
    return value


def _asyncio_loop(value: str) -> str:
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError('uvloop is not installed: install it, or use "auto" or "asyncio"')
    return value


class ServiceSettings(_Section):
    """``[service]``: identity, logging and event loops of the process."""

    name: NonEmptyStr = "vpnbot"
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    instance_id: Annotated[str, AfterValidator(_instance_id)] | None = None
    asyncio_loop: Annotated[AsyncioLoop, AfterValidator(_asyncio_loop)] = "auto"


Port = Annotated[int, Field(ge=0, le=65535)]
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class PublicListenerSettings(_Section):
    """``[http.public]``: the listener for webhooks (Telegram's, payment providers')."""

    enabled: bool = True
    host: NonEmptyStr = "127.0.0.1"
    port: Port = 8088


class HttpLimitsSettings(_Section):
    """``[http.limits]``: how much one request may send, and how slowly, on both listeners."""

    max_body_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 64 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    header_timeout_seconds: PositiveSeconds = 10.0
    body_timeout_seconds: PositiveSeconds = 30.0


class HttpSettings(_Section):
    """``[http]``: the operator listener; ``[http.public]`` and ``[http.limits]`` below it."""

    enabled: bool = True
    host: NonEmptyStr = "127.0.0.1"
    port: Port = 8080
    public: PublicListenerSettings = Field(default_factory=PublicListenerSettings)
    limits: HttpLimitsSettings = Field(default_factory=HttpLimitsSettings)

    @model_validator(mode="after")
    def _separate_sockets(self) -> HttpSettings:
        public = self.public
        if not (self.enabled and public.enabled) or self.port == 0 or self.port != public.port:
            return self
        hosts = {self.host, public.host}
        if len(hosts) == 1 or hosts & set(_WILDCARD_HOSTS):
            raise CrossFieldError(
                [("public.port", f"must differ from http.port ({self.port}): one socket each")]
            )
        return self


class TelegramSettings(_Section):
    """``[telegram]``: the bot's access to the Bot API."""

    enabled: bool = True
    """False runs the instance without Telegram on purpose: no bot, no notifier, no token."""
    token: BotToken = None
    api_base: HttpUrl = "https://api.telegram.org"
    admin_chat_ids: list[int] = Field(default_factory=list)


class WebhookAlertSettings(_Section):
    """``[alerts.webhook]``: POST alerts to a URL (off while ``url`` is unset)."""

    url: HttpUrl | None = None
    timeout_seconds: PositiveSeconds = 5.0
    secret: Secret = None


class TelegramAlertSettings(_Section):
    """``[alerts.telegram]``: send alerts as Telegram messages."""

    enabled: bool = False
    chat_ids: list[int] = Field(default_factory=list)
    timeout_seconds: PositiveSeconds = 5.0


_APPRISE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def apprise_urls(value: str) -> list[str]:
    """The URLs in an ``alerts.apprise.urls`` value: separated by spaces or new lines."""
    return value.split()


def _apprise_urls(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    urls = apprise_urls(value.get_secret_value())
    if not urls:
        return None
    for number, url in enumerate(urls, start=1):
        if not _APPRISE_URL.fullmatch(url):
            raise ValueError(
                f"URL {number} of {len(urls)} is not shaped like service://...; "
                "separate URLs with spaces or new lines"
            )
    return value


AppriseUrls = Annotated[Secret, AfterValidator(_apprise_urls)]
AlertSeverity = Literal["info", "warning", "critical"]


class AppriseAlertSettings(_Section):
    """``[alerts.apprise]``: send alerts to any service Apprise reaches (off while unset)."""

    urls: AppriseUrls = None
    min_severity: AlertSeverity = "warning"
    timeout_seconds: PositiveSeconds = 8.0

    def url_list(self) -> list[str]:
        return apprise_urls(self.urls.get_secret_value()) if self.urls is not None else []


class AlertsSettings(_Section):
    """``[alerts]``: how alerts are throttled and where they go."""

    throttle_seconds: PositiveSeconds = 300.0
    queue_size: Annotated[int, Field(ge=1)] = 1000
    unavailable_after_seconds: PositiveSeconds = 60.0
    degraded_after_seconds: PositiveSeconds = 300.0
    webhook: WebhookAlertSettings = Field(default_factory=WebhookAlertSettings)
    telegram: TelegramAlertSettings = Field(default_factory=TelegramAlertSettings)
    apprise: AppriseAlertSettings = Field(default_factory=AppriseAlertSettings)


class DatabaseSettings(_Section):
    """``[database]``: PostgreSQL. Without ``dsn`` an embedded server runs under ``data_dir``."""

    dsn: PostgresDsn = None
    data_dir: NonEmptyStr = "var/pgdata"
    pool_min_size: Annotated[int, Field(ge=0)] = 1
    pool_max_size: Annotated[int, Field(ge=1)] = 10
    connect_timeout_seconds: PositiveSeconds = 10.0
    command_timeout_seconds: PositiveSeconds = 30.0
    auto_migrate: bool = False

    @model_validator(mode="after")
    def _pool_order(self) -> DatabaseSettings:
        if self.pool_min_size > self.pool_max_size:
            raise CrossFieldError(
                [("pool_min_size", f"must be <= pool_max_size ({self.pool_max_size})")]
            )
        return self


_PLAN_ID = re.compile(r"[a-z0-9_]{1,32}")
_CURRENCY = re.compile(r"[A-Z]{3,5}")


def _plan_id(value: str) -> str:
    if not _PLAN_ID.fullmatch(value):
        raise ValueError("must be 1-32 characters of a-z, 0-9 and _")
    return value


def _prices(value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    for provider, by_currency in value.items():
        for currency, amount in by_currency.items():
            if not _CURRENCY.fullmatch(currency):
                raise ValueError(f"{provider}: currency {currency!r} must be an upper-case code")
            if amount <= 0:
                raise ValueError(f"{provider}.{currency}: price must be a positive integer")
    return value


PlanId = Annotated[str, AfterValidator(_plan_id)]
PlanAudience = Literal["everyone", "new", "invited"]
"""The user groups a plan can be limited to (``runtime.catalog.AUDIENCES``)."""


def _everyone() -> list[PlanAudience]:
    return ["everyone"]


Titles = Annotated[dict[str, NonEmptyStr], Field(min_length=1)]


class PlanSettings(_Section):
    """``[plans.<id>]``: one thing a user can buy.

    Prices are integers in minor units per provider and currency (kopecks, cents; whole
    Stars for XTR): ``prices = { stars = { XTR = 150 }, card = { RUB = 19900 } }``.
    """

    title: Titles
    duration_days: Annotated[int, Field(ge=1, le=3660)]
    backend: NonEmptyStr
    prices: Annotated[dict[str, dict[str, int]], AfterValidator(_prices)]
    traffic_limit_gb: Annotated[int, Field(ge=0)] = 0
    """Traffic per paid period; 0: unlimited. The plan's backend must enforce it."""
    device_limit: Annotated[int, Field(ge=0)] = 0
    """Devices (connections, hardware ids) at once; 0: unlimited. The plan's backend must
    enforce it."""
    order: int | None = None
    """Where the plan is listed: lower first; plans without ``order`` follow in config
    order. Several durations of one offer are several plans with the same title."""
    audience: Annotated[list[PlanAudience], Field(min_length=1)] = Field(default_factory=_everyone)
    """Who may see and buy it (any of): ``everyone``, ``new`` (no paid payment yet)."""


class TrialSettings(_Section):
    """``[trial]``: one free trial per Telegram user."""

    enabled: bool = False
    duration_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 72
    backend: NonEmptyStr | None = None
    traffic_limit_gb: Annotated[int, Field(ge=0)] = 0
    device_limit: Annotated[int, Field(ge=0)] = 1


class BillingSettings(_Section):
    """``[billing]``: the balance, top-ups and activation retries."""

    balance_currency: Annotated[str, Field(pattern=r"^[A-Z]{3,5}$")] = "RUB"
    topup_amounts: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [10000, 30000, 50000]
    )
    invoice_ttl_minutes: Annotated[int, Field(ge=1)] = 60
    activation_max_attempts: Annotated[int, Field(ge=1)] = 8


class ReferralLevelSettings(_Section):
    """One entry of ``[referrals] levels``: what a user earns when someone they brought
    pays (the first entry: the inviter; the second: the inviter's inviter).

    ``reward`` is ``days`` (``amount`` days added to their subscription, or a new one),
    ``percent`` (``amount`` % of the payment, 1-100, to their balance) or ``fixed``
    (``amount`` minor units of ``billing.balance_currency`` to their balance). A percentage
    is paid only for payments in ``billing.balance_currency``: a payment in another currency
    (Telegram Stars, ``XTR``) earns nothing at a ``percent`` level (use ``days`` or
    ``fixed`` to reward those). ``payments``: ``first`` rewards only the invited user's
    first payment, ``every`` each of their payments. Payments from the balance earn
    nothing (the money was counted when it was topped up); a refunded payment's reward is
    taken back."""

    reward: Literal["days", "percent", "fixed"]
    amount: Annotated[int, Field(ge=1, le=10**9)]
    payments: Literal["first", "every"] = "first"

    @model_validator(mode="after")
    def _amount_range(self) -> ReferralLevelSettings:
        if self.reward == "percent" and self.amount > 100:
            raise CrossFieldError([("amount", "a percentage must be 1-100")])
        if self.reward == "days" and self.amount > 3660:
            raise CrossFieldError([("amount", "days must be 1-3660")])
        return self


class ReferralsSettings(_Section):
    """``[referrals]``: referral links (``/start ref_<code>``) and their rewards.

    Who invited whom is recorded once, at the invited user's first ``/start``. ``levels``
    (at most two) says what inviters earn; ``invited_trial_hours`` gives invited users a
    longer trial than ``[trial] duration_hours`` (unset: the same trial). Acquisition
    links (``/start ad_<code>``, made by admins with ``/adlink``) are counted whether
    referrals are enabled or not."""

    enabled: bool = False
    levels: Annotated[list[ReferralLevelSettings], Field(max_length=2)] = Field(
        default_factory=list
    )
    invited_trial_hours: Annotated[int, Field(ge=1, le=24 * 90)] | None = None


def _promo_code(value: str) -> str:
    if promo_rules.normalize(value) != value.upper() or value != value.strip():
        raise ValueError(
            f"must be {promo_rules.MIN_LENGTH}-{promo_rules.MAX_LENGTH} characters of"
            " A-Z, a-z, 0-9, _ and - (codes are case-insensitive)"
        )
    return value.upper()


def _min_prices(value: dict[str, int]) -> dict[str, int]:
    for currency, amount in value.items():
        if not _CURRENCY.fullmatch(currency):
            raise ValueError(f"currency {currency!r} must be an upper-case code")
        if amount <= 0:
            raise ValueError(f"{currency}: the least price must be a positive integer")
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("must carry a time zone, e.g. 2027-01-31T00:00:00Z")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class PromoCodeSettings(_Section):
    """``[promo.codes.<CODE>]``: a code created at start when no code of that name exists;
    what an admin changed since (disabling it included) is kept."""

    kind: Literal["days", "balance", "plan", "discount", "next_discount"]
    value: int | str
    max_activations: Annotated[int, Field(ge=1, le=promo_rules.MAX_ACTIVATIONS)] | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    new_users_only: bool = False
    without_subscription: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> PromoCodeSettings:
        problems = []
        why = promo_rules.value_problem(self.kind, self.value)
        if why is not None:
            problems.append(("value", why))
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            problems.append(("valid_until", "must be later than valid_from"))
        if problems:
            raise CrossFieldError(problems)
        return self


class PromoSettings(_Section):
    """``[promo]``: promo codes and discounts."""

    enabled: bool = True
    min_price: Annotated[dict[str, int], AfterValidator(_min_prices)] = Field(default_factory=dict)
    """The least a discount may bring a price to, in minor units per currency."""
    codes: dict[Annotated[str, AfterValidator(_promo_code)], PromoCodeSettings] = Field(
        default_factory=dict
    )


class AccessSettings(_Section):
    """``[access]``: the VPN accounts of subscriptions that ended."""

    revoked_retention_days: Annotated[int, Field(ge=0, le=3650)] = 30
    """Days a revoked account (disabled on its panel when its subscription ended) is kept
    before it is deleted from the panel; 0 deletes it right after."""


_CHANNEL = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}|-100\d{5,16}")


def _channel(value: str) -> str:
    if not _CHANNEL.fullmatch(value):
        raise ValueError("must be a channel's @username or its numeric id (-100...)")
    return value


class AccessRulesSettings(_Section):
    """``[access_rules]``: who may use the bot, and what they must do first.

    Admins are never held by these rules, and a payment Telegram took is always credited.
    """

    registration: Literal["open", "invite_only", "closed"] = "open"
    """``invite_only``: a user the bot has not admitted before is admitted only when their
    first start came through a referral link (while ``[referrals]`` is enabled) or an
    acquisition link; ``closed``: such users
    are told registration is closed. Either way nothing else happens for them, and known
    users go on as before."""
    purchases_paused: bool = False
    """Users who try to buy are told purchases are paused, and get one message when a
    start with purchases open follows."""
    rules: dict[str, Annotated[NonEmptyStr, Field(max_length=4096)]] = Field(default_factory=dict)
    """The rules a user must accept (a button) before anything else, per language (plain
    text); empty: no rules to accept."""
    rules_version: Annotated[int, Field(ge=1)] = 1
    """Raise it when the rules change: everyone accepts the new version once."""
    channel: Annotated[str, AfterValidator(_channel)] | None = None
    """A channel users must be members of (checked with getChatMember: the bot must be an
    administrator there)."""
    channel_url: HttpUrl | None = None
    """The link on the "join" button; ``https://t.me/<username>`` when ``channel`` is a
    username. Required for a channel given by its numeric id."""
    channel_recheck_minutes: Annotated[int, Field(ge=1, le=10080)] = 60
    """How long a membership found is trusted before it is checked again."""

    @model_validator(mode="after")
    def _channel_link(self) -> AccessRulesSettings:
        if self.channel is not None and not self.channel.startswith("@") and not self.channel_url:
            raise CrossFieldError([("channel_url", "is required when channel is a numeric id")])
        return self

    def join_url(self) -> str | None:
        if self.channel is None:
            return None
        return self.channel_url or f"https://t.me/{self.channel[1:]}"


class BotSettings(_Section):
    """``[bot]``: how the bot receives updates and what it tells users."""

    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: HttpUrl | None = None
    """Public HTTPS URL Telegram posts updates to; its path is served on the public listener."""
    webhook_secret: Secret = None
    """Checked in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -)."""
    polling_timeout_seconds: Annotated[int, Field(ge=0, le=50)] = 25
    support_contact: str = ""
    """Shown in help: a @username or URL."""


class NotifierSettings(_Section):
    """``[notifier]``: the only sender of outbox messages to Telegram."""

    rate_per_second: Annotated[float, Field(gt=0, le=1000)] = 25.0
    per_chat_interval_seconds: Annotated[float, Field(ge=0)] = 1.0
    allow_paid_broadcast: bool = False
    max_attempts: Annotated[int, Field(ge=1)] = 8


class BroadcastsSettings(_Section):
    """``[broadcasts]``: admins' messages to a segment of users (``/broadcast``)."""

    max_buttons: Annotated[int, Field(ge=0, le=20)] = 8
    """The most buttons one broadcast may carry."""
    listed: Annotated[int, Field(ge=1, le=30)] = 10
    """Past broadcasts ``/broadcasts`` lists, newest first."""


class WakeupsSettings(_Section):
    """``[wakeups]``: workers woken by PostgreSQL notifications instead of polling."""

    enabled: bool = True
    fallback_interval_seconds: PositiveSeconds = 30.0


class TrafficPackageSettings(_Section):
    """``[[traffic.packages]]``: extra traffic for the current period, bought on its own.

    ``prices`` as a plan's: ``{ stars = { XTR = 50 }, cryptobot = { USDT = 100 } }``.
    """

    id: PlanId
    gb: Annotated[int, Field(ge=1, le=1_000_000)]
    prices: Annotated[dict[str, dict[str, int]], AfterValidator(_prices)]


class TrafficSettings(_Section):
    """``[traffic]``: used traffic shown to users, traffic reminders, top-ups and devices."""

    packages: list[TrafficPackageSettings] = Field(default_factory=list)
    usage_cache_seconds: PositiveSeconds = 60.0
    """How long a panel's usage figure is shown before the panel is asked again."""
    panel_timeout_seconds: PositiveSeconds = 3.0
    """How long the subscription screen waits for a panel before it shows the cached
    figure, or "unknown"."""
    reminder_percents: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(max_length=5)] = (
        Field(default_factory=lambda: [80, 100])
    )
    """Reminders once per period when this share of the traffic is used (100: used up)."""
    scan_interval_seconds: PositiveSeconds = 600.0
    """How often the traffic reminders read the panels' usage."""
    device_reset_cooldown_hours: Annotated[float, Field(ge=0, le=24 * 365)] = 24.0
    """How often a user may reset a subscription's devices."""

    @model_validator(mode="after")
    def _unique_packages(self) -> TrafficSettings:
        seen: set[str] = set()
        for index, package in enumerate(self.packages):
            if package.id in seen:
                raise CrossFieldError([(f"packages.{index}.id", f"{package.id!r} is repeated")])
            seen.add(package.id)
        return self


class RemindersSettings(_Section):
    """``[reminders]``: when users hear that access is about to end (hours before)."""

    trial_before_hours: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [6])
    expiry_before_hours: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [72, 24])
    auto_renew_lead_hours: Annotated[int, Field(ge=1)] = 24


class PluginsSettings(_Section):
    """``[plugins]``: extra plugins to load, plugins to leave out, and their own settings."""

    paths: list[Annotated[str, AfterValidator(_module_path)]] = Field(default_factory=list)
    disabled: list[NonEmptyStr] = Field(default_factory=list)
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ActorPolicyOverride(_Section):
    """``[actors.<name>]``: changes to one actor's supervision policy.

    Every field is optional; ``None`` keeps the actor's own default.
    """

    restart: Restart | None = None
    backoff_min_seconds: Seconds | None = None
    backoff_max_seconds: Seconds | None = None
    backoff_multiplier: Annotated[float, Field(ge=1)] | None = None
    backoff_jitter: Annotated[float, Field(ge=0, le=1)] | None = None
    backoff_reset_after_seconds: Seconds | None = None
    budget_max_failures: Annotated[int, Field(ge=1)] | None = None
    budget_window_seconds: PositiveSeconds | None = None
    on_exhausted: OnExhausted | None = None
    park_cooldown_seconds: PositiveSeconds | None = None
    shutdown_timeout_seconds: Seconds | None = None
    critical: bool | None = None
    min_sleep_on_failure_seconds: Seconds | None = None
    interval_seconds: PositiveSeconds | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _backoff_order(self) -> ActorPolicyOverride:
        low, high = self.backoff_min_seconds, self.backoff_max_seconds
        if low is not None and high is not None and low > high:
            raise CrossFieldError(
                [
                    (
                        "backoff_min_seconds",
                        f"must be <= backoff_max_seconds (got {_number(low)} > {_number(high)})",
                    )
                ]
            )
        return self


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def cross_section_problems(
    telegram: TelegramSettings, alerts: AlertsSettings
) -> list[tuple[str, str]]:
    """Checks that span sections: secrets and targets an enabled feature needs."""
    problems: list[tuple[str, str]] = []
    if not telegram.enabled:
        if telegram.token is not None:
            problems.append(("telegram.token", "must be unset when telegram.enabled is false"))
        if alerts.telegram.enabled:
            problems.append(
                ("alerts.telegram.enabled", "must be false when telegram.enabled is false")
            )
    elif alerts.telegram.enabled:
        if telegram.token is None:
            problems.append(("telegram.token", "required when alerts.telegram.enabled is true"))
        if not alerts.telegram.chat_ids and not telegram.admin_chat_ids:
            problems.append(
                (
                    "alerts.telegram.chat_ids",
                    "must not be empty when alerts.telegram.enabled is true"
                    " and telegram.admin_chat_ids is empty",
                )
            )
    return problems


_SECRET_KEY_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "private_key")


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS)


class Settings(_Section):
    """The whole configuration. ``Settings()`` is the embedded default."""

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    plans: dict[PlanId, PlanSettings] = Field(default_factory=dict)
    trial: TrialSettings = Field(default_factory=TrialSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    access_rules: AccessRulesSettings = Field(default_factory=AccessRulesSettings)

    promo: PromoSettings = Field(default_factory=PromoSettings)
    bot: BotSettings = Field(default_factory=BotSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    broadcasts: BroadcastsSettings = Field(default_factory=BroadcastsSettings)
    wakeups: WakeupsSettings = Field(default_factory=WakeupsSettings)
    reminders: RemindersSettings = Field(default_factory=RemindersSettings)
    referrals: ReferralsSettings = Field(default_factory=ReferralsSettings)

    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    actors: dict[str, ActorPolicyOverride] = Field(default_factory=dict)

    _credential_values: tuple[str, ...] = PrivateAttr(default=())
    """Plugin settings supplied by credential files: secret whatever their key is called."""

    @model_validator(mode="after")
    def _cross_sections(self) -> Settings:
        problems = cross_section_problems(self.telegram, self.alerts)
        if self.bot.mode == "webhook" and self.bot.webhook_url is None:
            problems.append(("bot.webhook_url", 'required when bot.mode is "webhook"'))
        if self.bot.mode == "webhook" and self.telegram.token and not self.http.public.enabled:
            problems.append(("http.public.enabled", 'must be true when bot.mode is "webhook"'))
        if self.bot.mode == "webhook" and self.bot.webhook_secret is None:
            problems.append(("bot.webhook_secret", 'required when bot.mode is "webhook"'))
        if self.trial.enabled and self.trial.backend is None:
            problems.append(("trial.backend", "required when trial.enabled is true"))
        for name, code in self.promo.codes.items():
            if code.kind == "plan" and code.value not in self.plans:
                problems.append((f"promo.codes.{name}.value", f"names no plan: {code.value!r}"))
        if problems:
            raise CrossFieldError(problems)
        return self

    def actor_override(self, name: str) -> ActorPolicyOverride:
        """The override for actor ``name``; an empty one (all ``None``) when there is none."""
        return self.actors.get(name) or ActorPolicyOverride()

    def secret_values(self) -> list[str]:
        """Every non-empty secret value, for log redaction.

        That is every ``SecretStr`` field, every plugin setting supplied by a credential file,
        and every string plugin setting whose key names a secret (token, password, api_key...);
        each Apprise URL is one too, on its own.
        """
        values = [*_model_secrets(self), *self._credential_values]
        values.extend(self.alerts.apprise.url_list())
        values.extend(_plugin_secrets(self.plugins.settings))
        return [value for value in dict.fromkeys(values) if value]


def priced_items(settings: Settings) -> Iterator[tuple[str, dict[str, dict[str, int]]]]:
    """Everything sold for a price: (its key path, its prices by provider and currency).
    Payment plugins check the currencies they take against all of them."""
    for plan_id, plan in settings.plans.items():
        yield f"plans.{plan_id}", plan.prices
    for index, package in enumerate(settings.traffic.packages):
        yield f"traffic.packages[{index}]", package.prices


def production_problems(settings: Settings) -> list[ConfigProblem]:
    """What a configuration must have to serve users, beyond being valid on its own.

    ``Settings()`` is valid: the sandbox supplies its own Telegram. A production instance
    without a bot token has no bot and no notifier: no user can reach it or hear from it,
    while it reports itself healthy. That takes ``telegram.enabled = false``, said on purpose.
    """
    if settings.telegram.enabled and settings.telegram.token is None:
        return [
            ConfigProblem(
                "telegram.token",
                "required: without it this instance runs no bot and no notifier, so no user"
                " can reach it or hear from it (set telegram.enabled = false to run it"
                " without Telegram on purpose)",
            )
        ]
    return []


def _model_secrets(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        yield from _secrets_in(getattr(model, name))


def _secrets_in(value: object) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        yield from _model_secrets(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)


def _plugin_secrets(table: dict[str, Any]) -> Iterator[str]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _plugin_secrets(value)
        elif isinstance(value, str) and _looks_secret(key):
            yield value
