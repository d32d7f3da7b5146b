"""The Crypto Pay API over HTTP: one method call, one envelope, one failure mapping.

Every answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code": ...,
"name": ...}}``. Crypto Pay sends errors with a matching HTTP status (400 bad parameters,
401 ``UNAUTHORIZED``, 403 ``METHOD_DISABLED``, 405 ``METHOD_NOT_FOUND``), which
``PeerClient`` maps: 5xx and 429 transient, other 4xx permanent. An ``ok: false`` inside a
2xx answer is mapped by its ``code`` the same way (permanent unless 429 or 5xx).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.plugin_api.peer import PeerClient

TOKEN_HEADER = "Crypto-Pay-API-Token"


class CryptoPayClient(PeerClient):
    peer = "cryptobot"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        if not token:
            raise ValueError("a Crypto Pay client needs the app's API token")
        super().__init__(
            base_url,
            timeout=timeout,
            secrets=[token],
            headers={TOKEN_HEADER: token},
            transport=transport,
            verify=verify,
        )

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` with JSON parameters; its ``result``, or ``DependencyError``."""
        response = await self.request("POST", method, json=dict(params or {}))
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            # A 2xx that is not an envelope: a proxy or a maintenance page in between.
            raise DependencyError(f"{self.peer}: {method} answered with something not JSON")
        if envelope["ok"] is True and "result" in envelope:
            return envelope["result"]
        code, name = _error_of(envelope)
        transient = code == 429 or (code is not None and code >= 500)
        raise DependencyError(
            self.scrub(f"{self.peer}: {method} refused: {name} (code {code})"),
            transient=transient,
        )


def _error_of(envelope: Mapping[str, Any]) -> tuple[int | None, str]:
    error = envelope.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        name = error.get("name") or error.get("message") or "no error name"
        return (code if isinstance(code, int) and not isinstance(code, bool) else None), str(name)[
            :200
        ]
    if isinstance(error, str):
        return None, error[:200]
    return None, "no error given"
