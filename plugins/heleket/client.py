"""The Heleket payment API over HTTP: signed JSON POSTs, one envelope, one failure mapping.

Every call is ``POST https://api.heleket.com/v1/...`` with the headers ``merchant`` (the
merchant's uuid) and ``sign`` (see ``signing``). Answers are ``{"state": 0, "result":
...}``; a refusal has a non-zero ``state`` and a ``message`` (or ``errors``), with a 4xx
status (422 for invalid parameters). ``PeerClient`` maps statuses: 5xx and 429 transient,
other 4xx permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.plugin_api.peer import PeerClient

from .signing import request_body, sign_bytes


class HeleketClient(PeerClient):
    peer = "heleket"

    def __init__(
        self,
        base_url: str,
        merchant: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        if not merchant or not api_key:
            raise ValueError("a Heleket client needs the merchant uuid and the payment API key")
        super().__init__(
            base_url,
            timeout=timeout,
            secrets=[api_key],
            headers={"merchant": merchant},
            transport=transport,
            verify=verify,
        )
        self._api_key = api_key

    async def call(self, path: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """POST ``params`` to ``path`` (``v1/payment``...); the ``result``, or
        ``DependencyError``."""
        body = request_body(params)
        headers = {"sign": sign_bytes(body, self._api_key), "content-type": "application/json"}
        response = await self.request("POST", path, content=body, headers=headers)
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            raise DependencyError(f"{self.peer}: {path} answered with something not JSON")
        result = envelope.get("result")
        if envelope.get("state") == 0 and isinstance(result, Mapping):
            return result
        message = envelope.get("message") or envelope.get("errors") or "no error given"
        raise DependencyError(
            self.scrub(f"{self.peer}: {path} refused: {str(message)[:200]}"), transient=False
        )
