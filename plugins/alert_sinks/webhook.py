"""An alert sink that POSTs each alert as JSON to a URL, optionally signed."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx

from runtime.alerts import Alert, AlertDeliveryError
from runtime.plugin_api.peer import shared_tls_context

SIGNATURE_HEADER = "X-Vpnbot-Signature"


def sign(body: bytes, secret: str) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``.

    A receiver recomputes it over the raw request body and compares with
    ``hmac.compare_digest``.
    """
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class WebhookSink:
    """POSTs ``alert.to_json()`` to ``url``; any answer but 2xx is a failure.

    Webhook URLs often embed a credential (chat services put one in the path), so errors
    name the host only.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        secret: str | None = None,
        name: str = "webhook",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._timeout = timeout
        self._secret = secret or None
        self._transport = transport
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.hostname or '?'}"

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, host={self._where!r})"

    async def send(self, alert: Alert) -> None:
        body = json.dumps(alert.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        secrets = [self._url, urlsplit(self._url).path, self._secret or ""]
        secrets = [s for s in secrets if len(s) > 1]
        failure: str | None = None
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, verify=shared_tls_context()
            ) as client:
                response = await client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            message = _redact(str(exc), secrets) or "no detail"
            failure = f"webhook to {self._where} failed: {type(exc).__name__}: {message}"
        # Raised outside the except block, so the original error (whose text may hold the
        # URL) is not chained to it.
        if failure is not None:
            raise AlertDeliveryError(failure)
        if not response.is_success:
            raise AlertDeliveryError(f"webhook to {self._where} answered {response.status_code}")
