"""Outline access keys as a ``VpnBackend``.

How the contract maps onto an Outline server:

- **The key id is the account name.** Outline lets the caller choose a key's id
  (``PUT /access-keys/{id}``, any non-empty string); account names are ``[a-z0-9_]``, safe
  in a URL path, and always hold a letter in practice, so they cannot meet the decimal ids
  Outline gives keys created by its Manager app. Creating answers 409 when the id exists:
  a retry after a crash adopts that key (GET it, then set its name and limit). The key's
  ``name`` is the account name too; a key renamed by hand is renamed back.
- **No expiry.** Outline has no notion of it: ``Account.expires_at`` is always None and
  the core revokes access itself when a subscription lapses (``disable`` or ``delete``).
- **Traffic limits** are the key's own data limit, counted by Outline over the last 30 days
  (not per subscription); no limit removes the key's own one, so a server-wide default
  limit, if the operator set one, applies to it. Device limits do not exist: ignored.
- **Disable** is a data limit of 0 bytes (Outline cannot disable a key); a key whose own
  limit is 0 is reported ``enabled=False``. ``ensure_account`` sets the configured limit
  (or removes it) and so enables the key again. Outline enforces limits asynchronously,
  within moments.
- **Delete** removes the key; a missing key is fine (only Outline's own "no such key"
  404 counts as missing, see ``client``).
- The management URL's path is the API's only credential: it is pinned behind the
  server's certificate (``pinning``) and never appears in a message or a log line.
"""

from __future__ import annotations

from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.vpn import Account, AccountSpec

from .client import OutlineClient
from .pinning import parse_fingerprint

DISABLED_LIMIT = 0

_log = get_logger("outline")


def _own_limit(key: dict[str, Any]) -> int | None:
    limit = key.get("dataLimit")
    if isinstance(limit, dict):
        value = limit.get("bytes")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class OutlineBackend:
    """Access keys on one Outline server (``name = "outline"``)."""

    name = "outline"

    def __init__(
        self,
        api_url: str,
        cert_sha256: str,
        *,
        timeout: float = 10.0,
        method: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = OutlineClient(
            api_url, parse_fingerprint(cert_sha256), timeout=timeout, transport=transport
        )
        self._method = method

    def __repr__(self) -> str:
        return f"OutlineBackend(method={self._method!r})"

    async def ensure_account(self, spec: AccountSpec) -> Account:
        key_id = spec.name
        body: dict[str, Any] = {"name": spec.name}
        if self._method:
            body["method"] = self._method
        if spec.traffic_limit_bytes is not None:
            body["limit"] = {"bytes": spec.traffic_limit_bytes}
        key = await self._client.create_key(key_id, body)
        if key is not None:
            _log.info(
                "access key created",
                operation="ensure_account",
                account=spec.name,
                outcome="success",
            )
            return self._account(spec.name, key)

        key = await self._client.get_key(key_id)
        if key is None:
            raise DependencyError(f"outline: access key {key_id} conflicted, then was not found")
        if key.get("name") != spec.name:
            if not await self._client.rename_key(key_id, spec.name):
                raise DependencyError(f"outline: access key {key_id} vanished while adopted")
            key["name"] = spec.name
        if _own_limit(key) != spec.traffic_limit_bytes:
            if not await self._client.set_data_limit(key_id, spec.traffic_limit_bytes):
                raise DependencyError(f"outline: access key {key_id} vanished while adopted")
            if spec.traffic_limit_bytes is None:
                key.pop("dataLimit", None)
            else:
                key["dataLimit"] = {"bytes": spec.traffic_limit_bytes}
        _log.info(
            "access key adopted", operation="ensure_account", account=spec.name, outcome="success"
        )
        return self._account(spec.name, key)

    async def disable(self, name: str) -> None:
        if not await self._client.set_data_limit(name, DISABLED_LIMIT):
            _log.info(
                "no access key to disable", operation="disable", account=name, outcome="skipped"
            )

    async def delete(self, name: str) -> None:
        if not await self._client.delete_key(name):
            _log.info(
                "no access key to delete", operation="delete", account=name, outcome="skipped"
            )

    async def get_account(self, name: str) -> Account | None:
        key = await self._client.get_key(name)
        return None if key is None else self._account(name, key)

    async def health(self) -> None:
        await self._client.server()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _account(self, name: str, key: dict[str, Any]) -> Account:
        key_id = key.get("id")
        access_url = key.get("accessUrl")
        if not isinstance(key_id, str) or not isinstance(access_url, str) or not access_url:
            raise DependencyError("outline: an access key came back without id or accessUrl")
        return Account(
            name=name,
            reference=key_id,
            access_url=access_url,
            expires_at=None,
            enabled=_own_limit(key) != DISABLED_LIMIT,
        )
