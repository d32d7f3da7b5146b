"""Marzban as a ``VpnBackend``: one panel user per account, named by the core.

- Create first; a 409 "User already exists" means a earlier attempt (or a renewal) got
  there: adopt it with a PUT of the absolute values. The PUT never sends ``proxies``: that
  would give the user new credentials and break their configured clients.
- New users get ``"inbounds": {}`` (every inbound of each proxy type) or the configured
  tags: without ``inbounds`` Marzban gives a user no inbound at all.
- ``subscription_url`` changes on every answer (it embeds the time): never compare it.
- Marzban has no device limit: ``AccountSpec.device_limit`` is ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpx

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.vpn import Account, AccountSpec

from .client import MarzbanClient
from .settings import MarzbanSettings

_log = get_logger("marzban")

_ENABLED_STATUSES = {"active", "on_hold"}


class MarzbanBackend:
    def __init__(
        self,
        settings: MarzbanSettings,
        *,
        name: str = "marzban",
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self.name = name
        self._settings = settings
        self._client = MarzbanClient(
            settings.base_url,
            username=settings.username,
            password=settings.password.get_secret_value(),
            timeout=settings.timeout_seconds,
            transport=transport,
            verify=verify,
        )
        self._subscription_base = settings.subscription_base_url or settings.base_url

    def __repr__(self) -> str:
        return f"MarzbanBackend(name={self.name!r}, base_url={self._settings.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- VpnBackend ----------------------------------------------------------------------

    async def ensure_account(self, spec: AccountSpec) -> Account:
        absolute = {
            "expire": _unix(spec.expires_at),
            "data_limit": spec.traffic_limit_bytes or 0,
            "data_limit_reset_strategy": self._settings.data_limit_reset_strategy,
            "status": "active",
        }
        user = await self._client.create_user(
            {
                "username": spec.name,
                "proxies": {
                    kind: dict(self._settings.proxy_settings.get(kind, {}))
                    for kind in self._settings.inbounds
                },
                "inbounds": {kind: tags for kind, tags in self._settings.inbounds.items() if tags},
                "note": f"telegram_id {spec.telegram_id}",
                **absolute,
            }
        )
        if user is None:
            _log.info(
                "account exists, adopting it",
                operation="ensure_account",
                account=spec.name,
            )
            user = await self._client.modify_user(spec.name, absolute)
            if user is None:  # deleted between the two calls: the retry creates it
                raise DependencyError(
                    f"marzban: user {spec.name} vanished while being adopted", transient=True
                )
        return self._account(user)

    async def disable(self, name: str) -> None:
        await self._client.modify_user(name, {"status": "disabled"})

    async def delete(self, name: str) -> None:
        await self._client.delete_user(name)

    async def get_account(self, name: str) -> Account | None:
        user = await self._client.get_user(name)
        return None if user is None else self._account(user)

    async def health(self) -> None:
        """The current admin: proves the panel answers, its database works, and the
        credentials are good; cheaper than ``/api/system``, which counts every user."""
        await self._client.current_admin()

    # -- mapping -------------------------------------------------------------------------

    def _account(self, user: dict[str, Any]) -> Account:
        expire = user.get("expire")
        url = str(user.get("subscription_url") or "")
        return Account(
            name=user["username"],
            reference=user["username"],
            access_url=urljoin(self._subscription_base, url) if url else "",
            expires_at=datetime.fromtimestamp(expire, UTC) if expire else None,
            enabled=user.get("status") in _ENABLED_STATUSES,
        )


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())
