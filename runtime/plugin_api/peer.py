"""The base of every plugin's HTTP client to its peer (a panel, a payment API).

httpx used natively on trio, with explicit timeouts, and one mapping of failures:
network errors, timeouts, 5xx (but 501) and 429 are transient ``DependencyError``s (429
and 503 carry the peer's Retry-After) that name the peer as the failing dependency; other
4xx are permanent and name none (the peer works; it refused this request). Secrets (tokens, secret
URL paths) never reach an exception message: they are scrubbed, and httpx's own errors,
which quote the URL, are never chained.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from runtime.failures import DependencyError

_NOT_TRANSIENT_5XX = {501, 505}


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The one client TLS context of the process, as httpx builds its default (certifi's
    roots, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured). Building one loads the whole CA
    bundle: about 1 MB and 20 ms each, for every client that verifies the default way.
    A context is only read once built, so clients on any thread can share it."""
    return httpx.create_ssl_context()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class PeerClient:
    """Subclass per peer; call ``request`` and let it raise ``DependencyError``."""

    peer = "peer"
    """The peer's name in messages: ``marzban``, ``cryptobot``..."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        secrets: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self._secrets = [s for s in secrets if s]
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers=headers,
            transport=transport,
            verify=shared_tls_context() if verify is True else verify,
            follow_redirects=False,
        )

    def add_secret(self, value: str) -> None:
        if value:
            self._secrets.append(value)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def request(
        self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """Send a request; 2xx and the statuses in ``accept`` return, the rest raise."""
        failure: DependencyError | None = None
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            failure = DependencyError(
                f"{self.peer}: timed out ({type(exc).__name__})", dependency=self.peer
            )
        except httpx.TransportError as exc:
            failure = DependencyError(
                f"{self.peer}: unreachable ({type(exc).__name__})", dependency=self.peer
            )
        if failure is not None:
            raise failure  # outside the except block: httpx's message quotes the URL
        if response.is_success or response.status_code in accept:
            return response
        raise self.status_error(response)

    def status_error(self, response: httpx.Response) -> DependencyError:
        status = response.status_code
        transient = status == 429 or (status >= 500 and status not in _NOT_TRANSIENT_5XX)
        snippet = self.scrub(response.text[:200]).replace("\n", " ")
        return DependencyError(
            f"{self.peer}: HTTP {status} on {response.request.method} "
            f"{self.scrub(response.request.url.path)}: {snippet}",
            transient=transient,
            retry_after=retry_after_seconds(response) if status in (429, 503) else None,
            dependency=self.peer if transient else None,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
