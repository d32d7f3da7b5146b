"""The 3x-ui panel over HTTP: logging in, the ``{success, msg, obj}`` envelope, 404s.

Awkward parts of the panel this handles:

- Unauthenticated API calls get **404**, not 401 (the panel hides its API), and so does a
  route this panel version lacks. With a login session, a 404 therefore means "log in
  again and retry once"; a second 404 raises ``RouteNotFound`` and the caller decides
  (the backend re-detects the API generation). With an API token there is nothing to
  renew: the first 404 raises.
- Login (``POST {base}login``, a form) sets the session cookie. From v3.0 the panel also
  wants a CSRF token (``GET {base}csrf-token``, then ``X-CSRF-Token`` on every unsafe
  request of the session, else 403); older panels answer 404 there and need none. A 403
  under a session also earns one fresh login: the session may predate an upgrade.
- Errors come as HTTP 200 with ``{"success": false, "msg": ...}``: ``call`` returns them
  as a ``Reply``; ``refused`` maps one to a ``DependencyError``, permanent unless the
  message says the panel is busy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.peer import PeerClient

_log = get_logger("xui")

_HIDDEN = (401, 404)
"""What the panel answers a caller it does not know (v3.1+ answers 401 to XHR callers)."""
_RENEW = (*_HIDDEN, 403)
"""Worth a fresh login with a session: 403 is a missing CSRF token (a panel upgraded to
v3.0+ under a session opened without one)."""

_TEMPORARY_MARKERS = (
    "database is locked",
    "database table is locked",
    "busy",
    "timeout",
    "timed out",
    "try again",
    "temporar",
    "connection refused",
    "connection reset",
)


class RouteNotFound(DependencyError):
    """The panel answered 404 (after a fresh login, with cookies): the route is missing in
    this panel version, or the credentials are not accepted."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, transient=False)
        self.path = path


@dataclass(frozen=True, slots=True)
class Reply:
    success: bool
    msg: str
    obj: Any


def is_temporary(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _TEMPORARY_MARKERS)


def is_not_found(message: str) -> bool:
    return "not found" in message.lower()


def is_duplicate(message: str) -> bool:
    lowered = message.lower()
    return "duplicate email" in lowered or "email already in use" in lowered


class XuiClient(PeerClient):
    """One panel, one login. Paths are relative to the base URL (``panel/api/...``)."""

    peer = "xui"

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        api_token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        if api_token is None and (not username or not password):
            raise ValueError("a 3x-ui client needs username and password, or an API token")
        headers = {"Accept": "application/json"}
        if api_token is not None:
            headers["Authorization"] = f"Bearer {api_token}"
        base_path = urlsplit(base_url).path.rstrip("/")
        super().__init__(
            base_url if base_url.endswith("/") else base_url + "/",
            timeout=timeout,
            secrets=[s for s in (password, api_token) if s],
            headers=headers,
            transport=transport,
            verify=verify,
        )
        if len(base_path) > 1:
            # The web base path hides the panel: as secret as a password.
            self.add_secret(base_path)
        self._username = username
        self._password = password
        self.uses_session = api_token is None
        self._logged_in = False
        self._session_generation = 0
        self._csrf: str | None = None
        self._login_lock = trio.Lock()
        self.logins = 0

    # -- calls -----------------------------------------------------------------------

    async def call(
        self, method: str, path: str, *, json: Any = None, relogin: bool = True
    ) -> Reply:
        """One API call; ``RouteNotFound`` on a 404 that a fresh login does not cure.

        ``relogin=False`` for a probe right after a call that proved the session good.
        """
        if self.uses_session and not self._logged_in:
            await self._login_once(self._session_generation)
        generation = self._session_generation
        response = await self._send(method, path, json)
        if self.uses_session and relogin and response.status_code in _RENEW:
            _log.info(
                "session not accepted, logging in again",
                operation="login",
                path=path,
                status=response.status_code,
            )
            await self._login_once(generation, force=True)
            response = await self._send(method, path, json)
        if response.status_code in _HIDDEN:
            raise RouteNotFound(
                f"{self.peer}: HTTP {response.status_code} on {method} {path}", path=path
            )
        if not response.is_success:
            raise self.status_error(response)
        return self._reply(response, method, path)

    def refused(self, reply: Reply, what: str) -> DependencyError:
        """The ``success: false`` in ``reply`` as a failure of ``what``."""
        message = self.scrub(reply.msg or "no message")
        return DependencyError(
            f"{self.peer}: panel refused to {what}: {message}", transient=is_temporary(reply.msg)
        )

    async def _send(self, method: str, path: str, json: Any) -> httpx.Response:
        headers = {}
        if self._csrf is not None and method not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = self._csrf
        kwargs: dict[str, Any] = {"headers": headers}
        if json is not None:
            kwargs["json"] = json
        accept = _RENEW if self.uses_session else _HIDDEN
        return await self.request(method, path, accept=accept, **kwargs)

    def _reply(self, response: httpx.Response, method: str, path: str) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise DependencyError(
                f"{self.peer}: {method} {path} answered with something that is not the "
                f"panel's JSON (HTTP {response.status_code})",
                transient=False,
            )
        msg = body.get("msg")
        return Reply(body["success"], str(msg)[:500] if msg else "", body.get("obj"))

    # -- login -----------------------------------------------------------------------

    async def _login_once(self, generation: int, *, force: bool = False) -> None:
        """Log in, unless another task did since ``generation`` was read."""
        async with self._login_lock:
            if self._session_generation != generation and self._logged_in:
                return
            if self._logged_in and not force:
                return
            await self._login()

    async def _login(self) -> None:
        self._logged_in = False
        self._csrf = None
        self._client.cookies.clear()
        token = await self.request("GET", "csrf-token", accept=(404,))
        if token.status_code != 404:
            try:
                body = token.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("obj"), str) and body["obj"]:
                self._csrf = body["obj"]
        headers = {"X-CSRF-Token": self._csrf} if self._csrf else {}
        response = await self.request(
            "POST",
            "login",
            data={"username": self._username or "", "password": self._password or ""},
            headers=headers,
            accept=(404,),
        )
        if response.status_code == 404:
            raise DependencyError(
                f"{self.peer}: the login page answered 404: base_url must be the panel's "
                "address including its web base path",
                transient=False,
            )
        reply = self._reply(response, "POST", "login")
        if not reply.success:
            raise self.refused(reply, "log in (check username and password)")
        self._logged_in = True
        self._session_generation += 1
        self.logins += 1
        _log.debug("logged in", operation="login", csrf=self._csrf is not None)
