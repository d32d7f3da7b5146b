"""Marzban as a ``VpnBackend``: one panel user per account, named by the core.

- Create first; a 409 "User already exists" means an earlier attempt (or a renewal) got
  there: adopt it. Adopting reads the user, then PUTs the absolute values. It never sends
  ``proxies`` the user has (that would hand it new credentials and break its configured
  clients), only the proxy types it lacks.
- New users get ``"inbounds": {}`` (every inbound of each proxy type) or the configured
  tags: without ``inbounds`` Marzban gives a user no inbound at all. Adoption repairs a
  user left without the configured inbounds (by hand, or by a creation that left
  ``inbounds`` out): on a PUT an empty list would *remove* every inbound of a type, so
  the tags are named, read from ``GET /api/inbounds`` when "all of them" is configured.
- Traffic per period: a PUT keeps ``used_traffic``, so a new period (``spec.period_start``)
  needs ``POST /api/user/{name}/reset``. Which period was reset for is kept as a
  ``PeriodMark`` in the user's ``note`` (the panel keeps no reset time we could read);
  the usage figure of an open mark is compared with ``used_traffic`` after a crash. The
  reset also turns a ``limited`` user ``active`` again.
- ``subscription_url`` is relative unless the panel has XRAY_SUBSCRIPTION_URL_PREFIX; a
  relative one is appended to ``subscription_base_url`` (or ``base_url``) keeping its path,
  so a panel behind a path prefix gets working links. The URL embeds the current second
  and changes from one second to the next (old ones keep working): never compare it.
- Marzban has no device limit: ``AccountSpec.device_limit`` is ignored, and the backend
  does not declare it (``capabilities``), so a plan that limits devices is refused on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.limits import BackendCapabilities
from runtime.plugin_api.vpn import Account, AccountSpec, PeriodMark, enter_period

from .client import MarzbanClient
from .settings import MarzbanSettings

_log = get_logger("marzban")

_ENABLED_STATUSES = {"active", "on_hold"}
NOTE_MAX_LENGTH = 500
"""Marzban refuses longer notes (422)."""


class MarzbanBackend:
    capabilities = BackendCapabilities(traffic_limit=True, usage=True)

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
        self._subscription_base = (settings.subscription_base_url or settings.base_url).rstrip("/")

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
                "note": PeriodMark.closed(spec).written_into(f"telegram_id {spec.telegram_id}"),
                **absolute,
            }
        )
        if user is None:
            _log.info(
                "account exists, adopting it",
                operation="ensure_account",
                account=spec.name,
            )
            user = await self._adopt(spec, absolute)
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

    # -- adoption ------------------------------------------------------------------------

    async def _adopt(self, spec: AccountSpec, absolute: dict[str, Any]) -> dict[str, Any]:
        current = await self._client.get_user(spec.name)
        if current is None:  # deleted between the two calls: the retry creates it
            raise _vanished(spec.name)
        body = {**absolute, **await self._repair(current)}
        note = current.get("note")

        async def write(new_note: str | None) -> dict[str, Any]:
            return await self._modify(
                spec.name, body if new_note is None else {**body, "note": new_note}
            )

        async def reset() -> None:
            if await self._client.reset_usage(spec.name) is None:
                raise _vanished(spec.name)

        return await enter_period(
            spec,
            note if isinstance(note, str) else None,
            _used(current),
            write=write,
            reset=reset,
            max_length=NOTE_MAX_LENGTH,
        )

    async def _modify(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        user = await self._client.modify_user(name, body)
        if user is None:
            raise _vanished(name)
        return user

    async def _repair(self, user: dict[str, Any]) -> dict[str, Any]:
        """What to PUT so that ``user`` has every configured proxy type and inbound; empty
        when it has them. Credentials it has are sent back unchanged."""
        proxies = _mapping(user.get("proxies"))
        has = _mapping(user.get("inbounds"))
        lacking = [kind for kind in self._settings.inbounds if kind not in proxies]
        wanted: dict[str, list[str]] = {}
        every: list[str] = []
        for kind, tags in self._settings.inbounds.items():
            current = [str(t) for t in has.get(kind) or []]
            if tags and not set(tags) <= set(current):
                wanted[kind] = [*current, *(t for t in tags if t not in current)]
            elif not tags and not current:
                every.append(kind)
        if every:
            server = await self._client.server_inbounds()
            wanted.update({kind: server.get(kind, []) for kind in every})
        if not wanted and not lacking:
            return {}
        _log.warning(
            "adopted account lacks inbounds, repairing it",
            operation="ensure_account",
            account=user.get("username"),
            proxy_types=sorted(set(wanted) | set(lacking)),
        )
        repair: dict[str, Any] = {"inbounds": wanted}
        if lacking:
            repair["proxies"] = {
                **proxies,
                **{kind: dict(self._settings.proxy_settings.get(kind, {})) for kind in lacking},
            }
        return repair

    # -- mapping -------------------------------------------------------------------------

    def _link(self, url: str) -> str:
        if not url or urlsplit(url).scheme:
            return url
        return f"{self._subscription_base}/{url.lstrip('/')}"

    def _account(self, user: dict[str, Any]) -> Account:
        expire = user.get("expire")
        status = user.get("status")
        return Account(
            name=user["username"],
            reference=user["username"],
            access_url=self._link(str(user.get("subscription_url") or "")),
            expires_at=datetime.fromtimestamp(expire, UTC) if expire else None,
            enabled=status in _ENABLED_STATUSES,
            limited=status == "limited",
            used_bytes=_used(user),
            traffic_limit_bytes=_limit(user),
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _used(user: dict[str, Any]) -> int:
    used = user.get("used_traffic")
    return used if isinstance(used, int) and not isinstance(used, bool) and used > 0 else 0


def _limit(user: dict[str, Any]) -> int | None:
    limit = user.get("data_limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def _vanished(name: str) -> DependencyError:
    return DependencyError(f"marzban: user {name} vanished while being adopted", transient=True)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())
