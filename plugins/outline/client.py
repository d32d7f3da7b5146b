"""The Outline management API over HTTPS, pinned to the server's certificate.

Routes (Outline server 1.10 and later; ``PUT`` and ``GET /access-keys/{id}`` are newer
than that and answer 405 on older servers): ``GET server``, ``GET access-keys``,
``PUT access-keys/{id}`` (create with our id: 201, or 409 when the id exists or another
key has the password asked for), ``GET|DELETE access-keys/{id}``,
``PUT access-keys/{id}/name``, ``PUT|DELETE access-keys/{id}/data-limit``,
``GET metrics/transfer`` (bytes per key id over the last 30 days).

Two kinds of 404 come back, and they mean very different things:

- ``{"code": "NotFound", "message": "Access key \\"x\\" not found"}`` (restify's
  ``NotFoundError``; the API document shows the code as ``NotFoundError``): the key is
  missing. Only this one is read as "no such key".
- ``{"code": "ResourceNotFound", "message": "<path> does not exist"}``: the path is not a
  route, which is what every request gets when the secret path is wrong. Treating it as a
  missing key would make a misconfigured bot report deleted and disabled keys that still
  work, so it is a permanent error, and its message (which echoes the path) is not quoted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from runtime.failures import DependencyError, DomainError
from runtime.plugin_api.peer import PeerClient

from .pinning import PinnedTransport

KEY_MISSING_CODES = frozenset({"NotFound", "NotFoundError"})


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


class OutlineClient(PeerClient):
    peer = "outline"

    def __init__(
        self,
        api_url: str,
        fingerprint: bytes,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the pinned one (a test double); it skips the pinning."""
        parts = urlsplit(api_url)
        secret_path = parts.path.strip("/")
        if parts.scheme != "https" or not parts.hostname or not secret_path:
            raise ValueError("an Outline API URL is https://host:port/<secret path>")
        host = parts.hostname
        port = parts.port or 443
        super().__init__(
            api_url.rstrip("/") + "/",
            timeout=timeout,
            secrets=[api_url, api_url.rstrip("/"), secret_path],
            transport=transport
            or PinnedTransport(host, port, fingerprint, timeout=timeout, peer=self.peer),
        )

    def __repr__(self) -> str:
        return "OutlineClient(api_url='***')"

    # -- server ------------------------------------------------------------------------

    async def server(self) -> dict[str, Any]:
        response = await self.request("GET", "server")
        return self._object(response, "GET server")

    # -- access keys -------------------------------------------------------------------

    async def create_key(self, key_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the key with our id; None when a key with that id exists already (409)."""
        response = await self.request("PUT", _key(key_id), json=body, accept=(409,))
        if response.status_code == 409:
            return None
        return self._object(response, "PUT access key")

    async def list_keys(self) -> list[dict[str, Any]]:
        response = await self.request("GET", "access-keys")
        keys = self._object(response, "GET access keys").get("accessKeys")
        if not isinstance(keys, list):
            raise DependencyError(f"{self.peer}: GET access keys answered without accessKeys")
        return [key for key in keys if isinstance(key, dict)]

    async def transferred(self) -> dict[str, int]:
        """Bytes each key moved in the last 30 days, by key id."""
        response = await self.request("GET", "metrics/transfer")
        counts = self._object(response, "GET metrics/transfer").get("bytesTransferredByUserId")
        if not isinstance(counts, dict):
            return {}
        return {
            str(key): value
            for key, value in counts.items()
            if isinstance(value, int) and not isinstance(value, bool)
        }

    async def get_key(self, key_id: str) -> dict[str, Any] | None:
        response = await self.request("GET", _key(key_id), accept=(404,))
        if self._key_missing(response):
            return None
        return self._object(response, "GET access key")

    async def rename_key(self, key_id: str, name: str) -> bool:
        """False when the key is missing."""
        response = await self.request(
            "PUT", f"{_key(key_id)}/name", json={"name": name}, accept=(404,)
        )
        return not self._key_missing(response)

    async def set_data_limit(self, key_id: str, limit_bytes: int | None) -> bool:
        """Set the key's own limit (None removes it); False when the key is missing."""
        path = f"{_key(key_id)}/data-limit"
        if limit_bytes is None:
            response = await self.request("DELETE", path, accept=(404,))
        else:
            response = await self.request(
                "PUT", path, json={"limit": {"bytes": limit_bytes}}, accept=(404,)
            )
        return not self._key_missing(response)

    async def delete_key(self, key_id: str) -> bool:
        """False when the key was missing already."""
        response = await self.request("DELETE", _key(key_id), accept=(404,))
        return not self._key_missing(response)

    # -- answers -----------------------------------------------------------------------

    def _key_missing(self, response: httpx.Response) -> bool:
        if response.status_code != 404:
            return False
        code = _error_code(response)
        if code in KEY_MISSING_CODES:
            return True
        if code == "ResourceNotFound":
            raise DependencyError(
                f"{self.peer}: HTTP 404 ResourceNotFound on {response.request.method}: "
                "no such route here; check the secret path of api_url",
                transient=False,
            )
        raise self.status_error(response)

    def _object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise DependencyError(f"{self.peer}: {what} answered with something not a JSON object")
        return body


def _key(key_id: str) -> str:
    if not key_id:
        raise DomainError("outline: an access key id cannot be empty")
    return f"access-keys/{quote(key_id, safe='')}"
