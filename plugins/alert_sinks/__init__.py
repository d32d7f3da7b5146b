"""Built-in alert sinks (webhook, Telegram, Apprise), registered like any third-party plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.logs import get_logger
from runtime.plugin_api import AlertSink, Offer, OfferKind, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .apprise_sink import AppriseSink
    from .telegram import TelegramSink
    from .webhook import WebhookSink

__all__ = ["AppriseSink", "TelegramSink", "WebhookSink", "vpnbot_alert_sinks", "vpnbot_offers"]

_LAZY = {
    "AppriseSink": ".apprise_sink",
    "TelegramSink": ".telegram",
    "WebhookSink": ".webhook",
}
"""Each sink is imported when its settings configure it."""

__getattr__ = lazy_exports(__name__, _LAZY)

_log = get_logger("alerts")

WEBHOOK = "webhook"
TELEGRAM = "telegram"
APPRISE = "apprise"


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    text = getter() if callable(getter) else value
    return str(text) if text else None


@hookimpl
def vpnbot_alert_sinks(settings: Settings) -> list[AlertSink]:
    """A webhook sink when ``alerts.webhook.url`` is set; a Telegram sink when enabled; one
    Apprise sink per URL in ``alerts.apprise.urls``.

    A Telegram sink without a bot token or any chat id, or an Apprise URL that Apprise
    cannot use, is left out with an error log rather than failing the hook, so the other
    sinks still work.
    """
    sinks: list[AlertSink] = []
    webhook = settings.alerts.webhook
    if webhook.url:
        from .webhook import WebhookSink

        sinks.append(
            WebhookSink(
                str(webhook.url),
                timeout=webhook.timeout_seconds,
                secret=_secret(webhook.secret),
                name=WEBHOOK,
            )
        )
    telegram = settings.alerts.telegram
    if telegram.enabled:
        token = _secret(settings.telegram.token)
        chat_ids = list(telegram.chat_ids) or list(settings.telegram.admin_chat_ids)
        if not token:
            _log.error("telegram alerts enabled but no bot token is set", outcome="skipped")
        elif not chat_ids:
            _log.error("telegram alerts enabled but no chat ids are set", outcome="skipped")
        else:
            from .telegram import TelegramSink

            sinks.append(
                TelegramSink(
                    token,
                    chat_ids,
                    api_base=settings.telegram.api_base,
                    timeout=telegram.timeout_seconds,
                    name=TELEGRAM,
                )
            )
    if settings.alerts.apprise.url_list():
        from .apprise_sinks import apprise_sinks

        sinks.extend(apprise_sinks(settings.alerts.apprise, prefix=APPRISE))
    return sinks


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(OfferKind.ALERT_SINK, WEBHOOK, "alerts.webhook.url"),
        Offer(OfferKind.ALERT_SINK, TELEGRAM, "alerts.telegram.enabled"),
        Offer(OfferKind.ALERT_SINK, APPRISE, "alerts.apprise.urls"),
    ]
