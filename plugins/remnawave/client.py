"""The HTTP client of a Remnawave 3.x panel: users by numeric id, answers in ``response``.

Errors are ``{"message", "errorCode", ...}`` with the panel's own codes: A019 a taken
username, A025 / A063 no such user, A029 already disabled. Validation errors are 400
``{"statusCode", "message": "Validation failed", "errors": [...]}``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from runtime.failures import DependencyError
from runtime.plugin_api.peer import PeerClient

USERNAME_TAKEN = "A019"
USER_NOT_FOUND = frozenset({"A025", "A063"})
ALREADY_DISABLED = "A029"

HEALTH_PROBE = "vpnbot-health-probe"
"""A username looked up by ``health``; it need not exist."""


def error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("errorCode") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def forwarding_headers(base_url: str) -> dict[str, str]:
    """Without a reverse proxy in between (a plain http address), the panel drops every
    request that lacks these headers: it closes the connection without an answer."""
    if urlsplit(base_url).scheme != "http":
        return {}
    return {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"}


class RemnawaveClient(PeerClient):
    peer = "remnawave"

    def __init__(
        self,
        base_url: str,
        *,
        api_token: str,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_token}", **forwarding_headers(base_url)}
        if api_key:
            headers["X-Api-Key"] = api_key
        super().__init__(
            base_url,
            timeout=timeout,
            secrets=[api_token, api_key or ""],
            headers=headers,
            transport=transport,
            verify=verify,
        )

    async def _call(
        self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> tuple[httpx.Response, str | None]:
        response = await self.request(method, path, accept=accept, **kwargs)
        code = None if response.is_success else error_code(response)
        if response.status_code == 404 and code not in USER_NOT_FOUND:
            raise self.status_error(response)  # a wrong base_url, not a missing user
        return response, code

    async def create_user(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The new user, or None when the username is taken."""
        response, code = await self._call("POST", "/api/users", json=body, accept=(400,))
        if response.status_code == 400:
            if code == USERNAME_TAKEN:
                return None
            raise self.status_error(response)
        return self._user(response)

    async def update_user(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """``PATCH /api/users`` (the body names the user); None when there is no such user."""
        response, _ = await self._call("PATCH", "/api/users", json=body, accept=(404,))
        return None if response.status_code == 404 else self._user(response)

    async def get_user(self, username: str) -> dict[str, Any] | None:
        response, _ = await self._call(
            "GET", f"/api/users/by-username/{quote(username, safe='')}", accept=(404,)
        )
        return None if response.status_code == 404 else self._user(response)

    async def disable_user(self, user_id: int) -> None:
        """Disable; a user already disabled, or gone, is fine."""
        response, code = await self._call(
            "POST", f"/api/users/{user_id}/actions/disable", accept=(400, 404)
        )
        if response.status_code == 400 and code != ALREADY_DISABLED:
            raise self.status_error(response)

    async def reset_traffic(self, user_id: int) -> dict[str, Any]:
        """``POST /api/users/{id}/actions/reset-traffic``: used traffic back to 0."""
        response, _ = await self._call("POST", f"/api/users/{user_id}/actions/reset-traffic")
        return self._user(response)

    async def hwid_devices(self, user_id: int) -> list[Any]:
        """``GET /api/hwid/devices/{id}``: the user's devices (``{total, devices}``)."""
        response, _ = await self._call("GET", f"/api/hwid/devices/{user_id}")
        return _devices(self._response(response))

    async def delete_hwid_device(self, user_id: int, hwid: str) -> bool:
        """``POST /api/hwid/devices/delete``; False when the user had no such device."""
        before = await self.hwid_devices(user_id)
        if not any(isinstance(d, dict) and d.get("hwid") == hwid for d in before):
            return False
        response, _ = await self._call(
            "POST", "/api/hwid/devices/delete", json={"userId": user_id, "hwid": hwid}
        )
        self._response(response)
        return True

    async def delete_user(self, user_id: int) -> None:
        """Delete; a user already gone is fine."""
        await self._call("DELETE", f"/api/users/{user_id}", accept=(404,))

    async def probe(self) -> None:
        """Look a user up: the same scope and path as the real work, and the cheapest
        query the panel has (a unique index); a missing user is a healthy answer."""
        await self._call("GET", f"/api/users/by-username/{HEALTH_PROBE}", accept=(404,))

    def _response(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        return body.get("response") if isinstance(body, dict) else None

    def _user(self, response: httpx.Response) -> dict[str, Any]:
        user = self._response(response)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int):
            raise DependencyError(
                f"remnawave: unexpected answer to {response.request.method} "
                f"{self.scrub(response.request.url.path)} (HTTP {response.status_code}); "
                "is this a Remnawave 3.x panel?"
            )
        return user


def _devices(answer: Any) -> list[Any]:
    devices = answer.get("devices") if isinstance(answer, dict) else None
    return devices if isinstance(devices, list) else []
