"""The HTTP client of a Marzban panel (0.8.x): token login, users by name.

The admin token is fetched lazily and kept; a 401 on a call means it expired (its lifetime
is ``JWT_ACCESS_TOKEN_EXPIRE_MINUTES``) or the panel was reinstalled (new signing secret),
so the client logs in again and repeats the call once.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import quote

import httpx
import trio

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.peer import PeerClient

_log = get_logger("marzban")

USER_NOT_FOUND = "User not found"
USER_EXISTS = "User already exists"


def detail(response: httpx.Response) -> Any:
    """The ``detail`` of a FastAPI error body, or None."""
    body = _json(response)
    return body.get("detail") if isinstance(body, dict) else None


class MarzbanClient(PeerClient):
    peer = "marzban"

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        super().__init__(
            base_url, timeout=timeout, secrets=[password], transport=transport, verify=verify
        )
        self._username = username
        self._password = password
        self._token: str | None = None
        self._login_lock = trio.Lock()

    def scrub(self, text: str) -> str:
        text = super().scrub(text)
        return text.replace(self._token, "***") if self._token else text

    # -- authentication ------------------------------------------------------------------

    async def _fresh_token(self, stale: str | None) -> str:
        """A token other than ``stale``: the one another task just got, or a new login."""
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return self._token
            response = await self.request(
                "POST",
                "/api/admin/token",
                data={"username": self._username, "password": self._password},
            )
            body = _json(response)
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise DependencyError("marzban: the token answer has no access_token")
            self._token = token
            _log.info("logged in", operation="login", outcome="success")
            return token

    async def call(
        self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """An authenticated request; on 401, log in again and repeat it once."""
        token = self._token or await self._fresh_token(None)
        response = await self._authorized(method, path, token, accept, kwargs)
        if response.status_code == 401 and 401 not in accept:
            _log.info(
                "token rejected, logging in again",
                operation="login",
                reason=str(detail(response))[:80],
            )
            token = await self._fresh_token(token)
            response = await self._authorized(method, path, token, accept, kwargs)
            if response.status_code == 401 and 401 not in accept:
                raise self.status_error(response)
        return response

    async def _authorized(
        self,
        method: str,
        path: str,
        token: str,
        accept: Collection[int],
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        return await self.request(
            method,
            path,
            accept=(*accept, 401),
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )

    # -- users ---------------------------------------------------------------------------

    @staticmethod
    def _user_path(username: str) -> str:
        return f"/api/user/{quote(username, safe='')}"

    def _missing(self, response: httpx.Response) -> bool:
        """A 404 about the user, not about the route (a wrong ``base_url`` also gives 404)."""
        if response.status_code != 404:
            return False
        if detail(response) == USER_NOT_FOUND:
            return True
        raise self.status_error(response)

    async def create_user(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The new user, or None when a user of that name exists (409)."""
        response = await self.call("POST", "/api/user", json=body, accept=(409,))
        if response.status_code == 409:
            if detail(response) == USER_EXISTS:
                return None
            raise self.status_error(response)
        return _user(response)

    async def modify_user(self, username: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The modified user, or None when there is no such user."""
        response = await self.call("PUT", self._user_path(username), json=body, accept=(404,))
        return None if self._missing(response) else _user(response)

    async def get_user(self, username: str) -> dict[str, Any] | None:
        response = await self.call("GET", self._user_path(username), accept=(404,))
        return None if self._missing(response) else _user(response)

    async def reset_usage(self, username: str) -> dict[str, Any] | None:
        """``POST /api/user/{name}/reset``: used traffic back to 0; None when there is no
        such user."""
        response = await self.call("POST", f"{self._user_path(username)}/reset", accept=(404,))
        return None if self._missing(response) else _user(response)

    async def server_inbounds(self) -> dict[str, list[str]]:
        """The server's inbound tags by proxy type (``GET /api/inbounds``)."""
        response = await self.call("GET", "/api/inbounds")
        body = _json(response)
        if not isinstance(body, dict):
            raise DependencyError("marzban: unexpected answer from /api/inbounds")
        return {
            str(kind): [str(i["tag"]) for i in inbounds if isinstance(i, dict) and "tag" in i]
            for kind, inbounds in body.items()
            if isinstance(inbounds, list)
        }

    async def delete_user(self, username: str) -> bool:
        """False when there was no such user."""
        response = await self.call("DELETE", self._user_path(username), accept=(404,))
        return not self._missing(response)

    async def current_admin(self) -> dict[str, Any]:
        response = await self.call("GET", "/api/admin")
        body = _json(response)
        if not isinstance(body, dict):
            raise DependencyError("marzban: unexpected answer from /api/admin")
        return body


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _user(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str):
        raise DependencyError(
            f"marzban: unexpected user answer to {response.request.method} "
            f"(HTTP {response.status_code})"
        )
    return body
