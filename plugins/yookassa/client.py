"""The YooKassa API v3 over HTTP: Basic auth, idempotence keys, one failure mapping.

Every call carries ``Authorization: Basic base64(shopId:secretKey)``; every POST an
``Idempotence-Key``, so a retried request (a timeout, a crash between the call and its
answer) returns the object the first one made instead of making another. Errors are
``{"type": "error", "code": ..., "description": ...}`` with the HTTP status ``PeerClient``
maps (5xx and 429 transient, other 4xx permanent). A 202 means YooKassa is still
processing the request: transient, repeated later with the same key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.plugin_api.peer import PeerClient, retry_after_seconds

IDEMPOTENCE_HEADER = "Idempotence-Key"
IDEMPOTENCE_KEY_LIMIT = 64
"""YooKassa takes idempotence keys of at most 64 characters."""


def basic_auth(shop_id: str, secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{shop_id}:{secret_key}".encode()).decode()


class YooKassaClient(PeerClient):
    peer = "yookassa"

    def __init__(
        self,
        base_url: str,
        shop_id: str,
        secret_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        if not shop_id or not secret_key:
            raise ValueError("a YooKassa client needs the shop id and its secret key")
        authorization = basic_auth(shop_id, secret_key)
        super().__init__(
            base_url,
            timeout=timeout,
            secrets=[secret_key, authorization.removeprefix("Basic ")],
            headers={"Authorization": authorization},
            transport=transport,
            verify=verify,
        )

    async def post(
        self, path: str, body: Mapping[str, Any], *, idempotence_key: str
    ) -> Mapping[str, Any]:
        if not 0 < len(idempotence_key) <= IDEMPOTENCE_KEY_LIMIT:
            raise ValueError("an idempotence key is 1 to 64 characters")
        response = await self.request(
            "POST", path, json=dict(body), headers={IDEMPOTENCE_HEADER: idempotence_key}
        )
        return self._object(response, path)

    async def get(self, path: str) -> Mapping[str, Any]:
        return self._object(await self.request("GET", path), path)

    def _object(self, response: httpx.Response, path: str) -> Mapping[str, Any]:
        if response.status_code == 202:
            raise DependencyError(
                f"{self.peer}: {path} is still being processed",
                retry_after=retry_after_seconds(response),
                dependency=self.peer,
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping) or data.get("type") == "error":
            raise DependencyError(f"{self.peer}: {path} answered with something not an object")
        return data
