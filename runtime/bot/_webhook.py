"""Webhook mode: Telegram POSTs updates to the public listener; each is stored, then 200.

The route sits at the path of ``bot.webhook_url`` and checks the
``X-Telegram-Bot-Api-Secret-Token`` header against ``bot.webhook_secret`` in constant time
before it reads the body (wrong or missing: 401, nothing stored). Its body may be up to
``MAX_BODY`` (the listener's limit layer cuts it off there, 413). An update is answered
200 only once it is in the inbox; one the inbox cannot keep (no integer ``update_id``, or
one beyond a bigint) is 400, which delivering it again cannot change; when storing fails
the answer is 503 and Telegram delivers it again. Any number of processes can serve the
route: the inbox dedupes by ``update_id``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.config import Settings
from runtime.logs import correlation, get_logger, log_failure
from runtime.storage import Database, inbox
from runtime.web import LimitedRoute

from ._renumbered import AlertSubmitter, report_went_back

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1 << 20
"""Telegram does not bound an update's size; 1 MiB holds the largest we have seen many times
over (a message is at most 4096 characters, plus entities and a replied-to message)."""

_log = get_logger("bot.webhook")


def webhook_path(settings: Settings) -> str | None:
    url = settings.bot.webhook_url
    if settings.bot.mode != "webhook" or url is None or settings.bot.webhook_secret is None:
        return None
    return urlsplit(url).path or "/"


def webhook_routes(
    settings: Settings,
    db: Callable[[], Database],
    on_stored: Callable[[], None],
    alerts: Callable[[], AlertSubmitter] | None = None,
) -> list[Route]:
    """The webhook route, or none unless ``bot.mode`` is ``webhook``."""
    path = webhook_path(settings)
    if path is None or settings.bot.webhook_secret is None:
        return []
    expected = settings.bot.webhook_secret.get_secret_value().encode()

    async def receive(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            _log.warning(
                "webhook call with a wrong secret token refused",
                operation="webhook",
                outcome="failed",
                failure_type="domain_error",
                client=request.client.host if request.client else None,
            )
            return Response(status_code=401)
        body = await request.body()
        try:
            update = json.loads(body)
            update_id = inbox.check_update(update)
        except (ValueError, RecursionError) as exc:  # InvalidUpdate is a ValueError
            _log.warning(
                "webhook update refused",
                operation="webhook",
                outcome="failed",
                failure_type="domain_error",
                reason=str(exc) if isinstance(exc, inbox.InvalidUpdate) else "not JSON",
            )
            return Response(status_code=400)
        with correlation(None, update_id=update_id):
            try:
                stored = await inbox.store(db(), [update])
            except Exception as exc:
                log_failure(_log, exc, operation="webhook")
                return Response(status_code=503)
            report_went_back(stored, alerts)
        on_stored()
        return Response(status_code=200)

    return [LimitedRoute(path, receive, methods=["POST"], max_body_bytes=MAX_BODY)]
