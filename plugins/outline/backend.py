"""Outline access keys as a ``VpnBackend``.

How the contract maps onto an Outline server:

- **One key per account and period.** Outline counts a key's data usage over the last 30
  days and has no call to reset it; the count is kept by key id. A new period
  (``spec.period_start``) therefore gets a new key, id ``<account name>-<period>``, made
  with the previous key's password, port and cipher, so its ``ss://`` access URL is the
  very same and the user's client keeps working: only the usage starts from zero. The
  previous key is deleted first (Outline refuses two keys with one password). The key
  id is also the mark of the period: a retry finds the key and adopts it, so a period
  never resets twice.
- **Passwords are derived.** A new account's password is keyed from the management URL
  (a secret) and the account name, so a crash between deleting the old key and making the
  new one loses nothing: the retry makes the same key. Keys made before this scheme
  (id = the account name, a random password) pass theirs on; only a crash in that short
  window would change such a user's access URL (the bot then shows the new one).
- **Account ids** are ``[a-z0-9_]`` names; ``-`` separates the period, so one account's
  keys are the key named exactly like it (made before periods) and those starting with
  ``<name>-``. They cannot meet the decimal ids of keys made in the Manager app.
  ``get_account``, ``disable`` and ``delete`` list the keys to find them.
- **No expiry.** Outline has no notion of it: ``Account.expires_at`` is always None and
  the core revokes access itself when a subscription lapses (``disable`` or ``delete``).
- **Traffic limits** are the key's own data limit; no limit removes the key's own one, so a
  server-wide default limit, if the operator set one, applies to it. Outline counts the
  last 30 days: in a period longer than that, usage older than 30 days stops counting.
  ``limited`` compares the key's usage (``GET /metrics/transfer``) with its limit; Outline
  itself enforces limits within an hour, or at once when a limit is set. Device limits do
  not exist: ignored.
- **Disable** is a data limit of 0 bytes (Outline cannot disable a key); a key whose own
  limit is 0 is reported ``enabled=False``. ``ensure_account`` sets the configured limit
  (or removes it) and so enables the key again.
- **Delete** removes the account's keys; a missing key is fine (only Outline's own "no such
  key" 404 counts as missing, see ``client``).
- The management URL's path is the API's only credential: it is pinned behind the
  server's certificate (``pinning``) and never appears in a message or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.limits import BackendCapabilities
from runtime.plugin_api.vpn import Account, AccountSpec

from .client import OutlineClient
from .pinning import parse_fingerprint

DISABLED_LIMIT = 0
PERIOD_SEPARATOR = "-"

_log = get_logger("outline")


def period_key_id(spec: AccountSpec) -> str:
    """The id of the account's key for the spec's period."""
    return f"{spec.name}{PERIOD_SEPARATOR}{spec.period}"


def belongs_to(name: str, key: dict[str, Any]) -> bool:
    key_id = key.get("id")
    return isinstance(key_id, str) and (
        key_id == name or key_id.startswith(name + PERIOD_SEPARATOR)
    )


def _period_of(key: dict[str, Any]) -> int:
    """The period a key is for (0 for a key made before periods)."""
    _, _, period = str(key.get("id")).rpartition(PERIOD_SEPARATOR)
    return int(period) if period.isascii() and period.isdigit() and len(period) <= 24 else 0


def _own_limit(key: dict[str, Any]) -> int | None:
    limit = key.get("dataLimit")
    if isinstance(limit, dict):
        value = limit.get("bytes")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class OutlineBackend:
    capabilities = BackendCapabilities(traffic_limit=True, usage=True)
    """Outline keys have a data limit and a transfer count; no device limit."""

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
        self._password_key = hashlib.sha256(b"vpnbot/outline/password\0" + api_url.encode())

    def __repr__(self) -> str:
        return f"OutlineBackend(method={self._method!r})"

    def password_for(self, name: str) -> str:
        """The derived password of a new account's keys."""
        digest = hmac.new(self._password_key.digest(), name.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")

    # -- VpnBackend ----------------------------------------------------------------------

    async def ensure_account(self, spec: AccountSpec) -> Account:
        key_id = period_key_id(spec)
        key = await self._client.get_key(key_id)
        if key is None:
            key = await self._new_key(spec, key_id)
        else:
            key = await self._adopt(spec, key)
        return await self._account(spec.name, key)

    async def disable(self, name: str) -> None:
        keys = await self._keys_of(name)
        for key in keys:
            await self._client.set_data_limit(str(key["id"]), DISABLED_LIMIT)
        if not keys:
            _log.info(
                "no access key to disable", operation="disable", account=name, outcome="skipped"
            )

    async def delete(self, name: str) -> None:
        keys = await self._keys_of(name)
        for key in keys:
            await self._client.delete_key(str(key["id"]))
        if not keys:
            _log.info(
                "no access key to delete", operation="delete", account=name, outcome="skipped"
            )

    async def get_account(self, name: str) -> Account | None:
        keys = await self._keys_of(name)
        if not keys:
            return None
        return await self._account(name, max(keys, key=_period_of))

    async def health(self) -> None:
        await self._client.server()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- keys ----------------------------------------------------------------------------

    async def _keys_of(self, name: str) -> list[dict[str, Any]]:
        return [key for key in await self._client.list_keys() if belongs_to(name, key)]

    async def _new_key(self, spec: AccountSpec, key_id: str) -> dict[str, Any]:
        """The key of a new period: the previous key's credentials, a fresh usage count."""
        older = [k for k in await self._keys_of(spec.name) if k.get("id") != key_id]
        body: dict[str, Any] = {"name": spec.name}
        if spec.traffic_limit_bytes is not None:
            body["limit"] = {"bytes": spec.traffic_limit_bytes}
        if older:
            previous = max(older, key=_period_of)
            body.update(
                password=previous.get("password"),
                port=previous.get("port"),
                method=previous.get("method"),
            )
        else:
            body["password"] = self.password_for(spec.name)
            if self._method:
                body["method"] = self._method
        for key in older:
            await self._client.delete_key(str(key["id"]))
        created = await self._client.create_key(key_id, body)
        if created is None:
            adopted = await self._client.get_key(key_id)
            if adopted is None:
                raise DependencyError(
                    f"outline: another access key holds the password of account {spec.name}",
                    transient=False,
                )
            return await self._adopt(spec, adopted)
        _log.info(
            "access key made for a new period" if older else "access key created",
            operation="ensure_account",
            account=spec.name,
            period=spec.period,
            replaced=len(older),
            outcome="success",
        )
        return created

    async def _adopt(self, spec: AccountSpec, key: dict[str, Any]) -> dict[str, Any]:
        key_id = str(key.get("id"))
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
        return key

    async def _limit_of(self, key: dict[str, Any]) -> int | None:
        """The limit Outline applies to ``key``: its own, else the server's default."""
        own = _own_limit(key)
        if own is not None:
            return own
        default = (await self._client.server()).get("accessKeyDataLimit")
        return _own_limit({"dataLimit": default})

    async def _account(self, name: str, key: dict[str, Any]) -> Account:
        key_id = key.get("id")
        access_url = key.get("accessUrl")
        if not isinstance(key_id, str) or not isinstance(access_url, str) or not access_url:
            raise DependencyError("outline: an access key came back without id or accessUrl")
        limit = await self._limit_of(key)
        used = (await self._client.transferred()).get(key_id, 0)
        limited = bool(limit) and used >= (limit or 0)
        return Account(
            name=name,
            reference=key_id,
            access_url=access_url,
            expires_at=None,
            enabled=_own_limit(key) != DISABLED_LIMIT and not limited,
            limited=limited,
            used_bytes=used,
            traffic_limit_bytes=limit or None,
        )
