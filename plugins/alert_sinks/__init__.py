"""Built-in alert sinks (webhook, Telegram, Apprise), registered like any third-party plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.logs import get_logger
from runtime.plugin_api import AlertSink, Offer, OfferKind, hookimpl

from .apprise_sink import AppriseSink
from .apprise_sinks import apprise_sinks
from .telegram import TelegramSink
from .webhook import WebhookSink

if TYPE_CHECKING:
    from runtime.config import Settings

__all__ = ["AppriseSink", "TelegramSink", "WebhookSink", "vpnbot_alert_sinks", "vpnbot_offers"]

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
            sinks.append(
                TelegramSink(
                    token,
                    chat_ids,
                    api_base=settings.telegram.api_base,
                    timeout=telegram.timeout_seconds,
                    name=TELEGRAM,
                )
            )
    sinks.extend(apprise_sinks(settings.alerts.apprise, prefix=APPRISE))
    return sinks


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(OfferKind.ALERT_SINK, WEBHOOK, "alerts.webhook.url"),
        Offer(OfferKind.ALERT_SINK, TELEGRAM, "alerts.telegram.enabled"),
        Offer(OfferKind.ALERT_SINK, APPRISE, "alerts.apprise.urls"),
    ]
