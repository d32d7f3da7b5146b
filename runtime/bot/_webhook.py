"""Webhook mode: Telegram POSTs updates to the HTTP endpoint; each is stored, then 200.

The route sits at the path of ``bot.webhook_url`` and checks the
``X-Telegram-Bot-Api-Secret-Token`` header against ``bot.webhook_secret`` in constant time
(wrong or missing: 401, nothing stored). An update is answered 200 only once it is in the
inbox; when storing fails the answer is 503 and Telegram delivers it again. Any number of
processes can serve the route: the inbox dedupes by ``update_id``.
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

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1 << 20

_log = get_logger("bot.webhook")


def webhook_path(settings: Settings) -> str | None:
    url = settings.bot.webhook_url
    if settings.bot.mode != "webhook" or url is None or settings.bot.webhook_secret is None:
        return None
    return urlsplit(url).path or "/"


def webhook_routes(
    settings: Settings, db: Callable[[], Database], on_stored: Callable[[], None]
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
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            return Response(status_code=413)
        body = await request.body()
        try:
            update = json.loads(body)
        except ValueError:
            update = None
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            return Response(status_code=400)
        assert isinstance(update, dict)
        with correlation(None, update_id=update_id):
            try:
                await inbox.store(db(), [update])
            except Exception as exc:
                log_failure(_log, exc, operation="webhook")
                return Response(status_code=503)
        on_stored()
        return Response(status_code=200)

    return [Route(path, receive, methods=["POST"])]
