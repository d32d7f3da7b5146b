"""Remnawave 3.x as a ``VpnBackend``: one panel user per account, named by the core.

- Create first; "username already exists" (A019) means an earlier attempt or a renewal
  got there: ``PATCH /api/users`` the absolute values, naming the user by ``username``
  (exactly one of ``id`` / ``username`` goes in the body).
- Never the ``extend`` action: it adds days to whatever is there, so a retry would add
  them twice.
- The panel refuses a past ``expireAt`` in a PATCH. An expiry already (or about to be)
  past therefore disables the account instead: a new one is created disabled with that
  expiry; an existing one keeps its expiry, gets the other values and is disabled.
- ``hwidDeviceLimit`` 0 means no device limit on the panel; None would mean its default.
- Traffic per period: a PATCH keeps the used traffic, so a new period
  (``spec.period_start``) needs ``POST /api/users/{id}/actions/reset-traffic``. Which
  period was reset for is kept as a ``PeriodMark`` in the user's ``description``: written
  open (with the usage seen) in the PATCH of the values, closed after the reset. The
  panel's own ``lastTrafficResetAt`` is not used for this: it is the panel's clock, and a
  periodic ``trafficLimitStrategy`` moves it too.
- HWID devices (``GET /api/hwid/devices/{id}``, ``POST /api/hwid/devices/delete`` with
  ``userId`` and ``hwid``) are listed and deleted for users; the panel enforces
  ``hwidDeviceLimit`` only with its HWID device limit feature turned on.
- A PATCH that sets ACTIVE makes a LIMITED user ACTIVE until the panel's next traffic
  check: ``limited`` is therefore worked out from the used and allowed bytes, not the
  status alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.limits import BackendCapabilities, Device
from runtime.plugin_api.vpn import Account, AccountSpec, PeriodMark, enter_period

from .client import RemnawaveClient
from .settings import RemnawaveSettings

_log = get_logger("remnawave")

LAPSE_MARGIN = timedelta(seconds=60)
"""An expiry closer than this is treated as past: the panel compares with its own clock."""


class RemnawaveBackend:
    capabilities = BackendCapabilities(
        traffic_limit=True, device_limit=True, usage=True, devices=True
    )

    def __init__(
        self,
        settings: RemnawaveSettings,
        *,
        name: str = "remnawave",
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self.name = name
        self._settings = settings
        self._client = RemnawaveClient(
            settings.base_url,
            api_token=settings.api_token.get_secret_value(),
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=settings.timeout_seconds,
            transport=transport,
            verify=verify,
        )

    def __repr__(self) -> str:
        return f"RemnawaveBackend(name={self.name!r}, base_url={self._settings.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- VpnBackend ----------------------------------------------------------------------

    async def ensure_account(self, spec: AccountSpec) -> Account:
        lapsed = spec.expires_at <= datetime.now(UTC) + LAPSE_MARGIN
        values: dict[str, Any] = {
            "trafficLimitBytes": spec.traffic_limit_bytes or 0,
            "trafficLimitStrategy": self._settings.traffic_limit_strategy,
            "hwidDeviceLimit": spec.device_limit or 0,
            "telegramId": spec.telegram_id,
            "activeInternalSquads": list(self._settings.internal_squads),
        }
        user = await self._client.create_user(
            {
                "username": spec.name,
                "status": "DISABLED" if lapsed else "ACTIVE",
                "expireAt": _iso(spec.expires_at),
                "description": PeriodMark.closed(spec).render(),
                **values,
            }
        )
        if user is None:
            _log.info(
                "account exists, adopting it",
                operation="ensure_account",
                account=spec.name,
                lapsed=lapsed,
            )
            if not lapsed:
                values.update(expireAt=_iso(spec.expires_at), status="ACTIVE")
            user = await self._update({"username": spec.name, **values}, spec.name)
            if lapsed:
                if user.get("status") != "DISABLED":
                    await self._client.disable_user(user["id"])
                    user = {**user, "status": "DISABLED"}
            else:
                user = await self._new_period(user, spec)
        return _account(user)

    async def _new_period(self, user: dict[str, Any], spec: AccountSpec) -> dict[str, Any]:
        """Bring ``user`` (its values just set) into ``spec``'s period."""
        description = user.get("description")

        async def write(new_description: str | None) -> dict[str, Any]:
            if new_description is None:
                return user
            return await self._update({"id": user["id"], "description": new_description}, spec.name)

        async def reset() -> None:
            await self._client.reset_traffic(user["id"])

        return await enter_period(
            spec,
            description if isinstance(description, str) else None,
            _used(user),
            write=write,
            reset=reset,
        )

    async def _update(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        user = await self._client.update_user(body)
        if user is None:  # deleted between two calls: the retry creates it
            raise DependencyError(
                f"remnawave: user {name} vanished while being adopted", transient=True
            )
        return user

    async def disable(self, name: str) -> None:
        user = await self._client.get_user(name)
        if user is not None and user.get("status") != "DISABLED":
            await self._client.disable_user(user["id"])

    async def delete(self, name: str) -> None:
        user = await self._client.get_user(name)
        if user is not None:
            await self._client.delete_user(user["id"])

    async def get_account(self, name: str) -> Account | None:
        user = await self._client.get_user(name)
        return None if user is None else _account(user)

    async def health(self) -> None:
        await self._client.probe()

    # -- DeviceManager -------------------------------------------------------------------

    async def devices(self, name: str) -> list[Device]:
        user = await self._client.get_user(name)
        if user is None:
            return []
        return [d for d in map(_device, await self._client.hwid_devices(user["id"])) if d]

    async def delete_device(self, name: str, device_id: str) -> bool:
        user = await self._client.get_user(name)
        if user is None:
            return False
        return await self._client.delete_hwid_device(user["id"], device_id)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _used(user: dict[str, Any]) -> int:
    traffic = user.get("userTraffic")
    if isinstance(traffic, dict):
        return _count(traffic.get("usedTrafficBytes"))
    return _count(user.get("usedTrafficBytes"))  # 2.x kept it on the user


def _account(user: dict[str, Any]) -> Account:
    status = user.get("status")
    limit = _count(user.get("trafficLimitBytes"))
    limited = status == "LIMITED" or (status == "ACTIVE" and 0 < limit <= _used(user))
    return Account(
        name=str(user.get("username")),
        reference=str(user["id"]),
        access_url=str(user.get("subscriptionUrl") or ""),
        expires_at=_parse(user.get("expireAt")),
        enabled=status == "ACTIVE" and not limited,
        limited=limited,
        used_bytes=_used(user),
        traffic_limit_bytes=limit or None,
    )


def _device(raw: Any) -> Device | None:
    """One entry of the panel's HWID list; None for one without a usable id."""
    if not isinstance(raw, dict):
        return None
    hwid = raw.get("hwid")
    if not isinstance(hwid, str) or not hwid:
        return None
    words = [raw.get(k) for k in ("platform", "deviceModel", "osVersion")]
    label = " ".join(w for w in words if isinstance(w, str) and w) or hwid
    return Device(id=hwid, label=label, added_at=_parse(raw.get("createdAt")))
