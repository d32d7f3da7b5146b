"""A fake Marzban 0.8.4 panel: admin tokens, the user API and subscriptions, awkward parts
included.

Modelled on the panel's source (``app/routers``, ``app/db/crud.py``, ``app/models/user.py``,
``app/utils/jwt.py``) and on a running 0.8.4:

- ``POST /api/admin/token`` (OAuth2 password form) issues bearer tokens with a lifetime
  (``token_lifetime`` seconds, None for none); ``expire_tokens()`` kills every issued one,
  as an expiry or a reinstall (new signing secret) does. No token: 401 "Not
  authenticated"; a dead one: 401 "Could not validate credentials".
- A user's access is its proxies (one per type, with its credentials) and, per proxy, the
  server inbounds it is *excluded* from; its ``inbounds`` are every server inbound of the
  type minus those. ``GET /api/inbounds`` lists the server's inbounds by type.
- ``POST /api/user``: validation errors are 422 ``{"detail": {"<field>": "<message>"}}``;
  a proxy type without inbounds is 400 "Protocol X is disabled on your server" (checked
  before the duplicate); a duplicate name is 409 "User already exists" (case-sensitive, as
  on SQLite). Without ``inbounds`` the user is excluded from every inbound (the real
  validator never runs on a missing field); ``"inbounds": {}`` or an empty list gives all
  of a type.
- ``PUT /api/user/{name}`` applies absolute values with the panel's status rules (a past
  ``expire`` answers ``expired`` at once; used traffic over the limit answers
  ``limited``). ``proxies``, when sent, replace the user's: types left out are removed and
  credentials left out are regenerated. ``inbounds`` is applied only when not empty, and
  then per type *as given*: an empty list there excludes the user from every inbound of
  the type (unlike on creation).
- ``POST /api/user/{name}/reset`` sets ``used_traffic`` to 0 and logs it (so
  ``lifetime_used_traffic`` keeps counting), and, through the panel's
  ``status not in (expired or disabled)`` slip, makes every user but an ``expired`` one
  ``active``, a ``disabled`` one included.
- ``expire`` is unix seconds; 0 is stored and answered as null.
- ``subscription_url`` is ``{prefix}/{subscription_path}/{token}``, the token being
  ``base64(username,<now rounded up to the second>)`` and a signature: it changes from one
  second to the next, and every one ever issued keeps working. ``GET
  /{subscription_path}/{token}`` serves the user's links, newline-separated and base64
  encoded (the default for clients the panel does not recognise), whatever the user's
  status, with the ``subscription-userinfo`` header; an HTML page to a browser; 404 "Not
  Found" for a token that does not verify or a user created after it was issued.
- Missing users: 404 ``{"detail": "User not found"}``; unknown routes: 404 "Not Found".
- The panel's periodic review (active users past their expiry or traffic become
  ``expired`` / ``limited``) is applied whenever a user is read or written.
- ``root_path`` serves everything under a path prefix, as behind a reverse proxy that
  maps ``https://host/<prefix>/`` to the panel: the panel itself does not know the prefix,
  so relative subscription URLs leave it out.

Beyond the panel, for the sandbox: ``snapshot`` / ``restore`` keep the users and the
subscription signing secret across restarts (every subscription link issued before still
opens), ``revision`` / ``wait_changed`` say when there is something new to keep. Admin tokens
are not kept: a restarted panel asks for a new login, as after a reinstall.

Not modelled: ``on_hold`` timing, ``next_plan``, non-sudo admins and ownership (403),
node usage, templates, ``revoke_sub``, the user-agent specific subscription formats (Clash,
sing-box, v2ray-json) and the other admin routes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._base import FakePeer

PROXY_TYPES = ("vmess", "vless", "trojan", "shadowsocks")
RESET_STRATEGIES = ("no_reset", "day", "week", "month", "year")
USERNAME_PATTERN = re.compile(r"^(?=\w{3,32}\b)[a-zA-Z0-9-_@.]+(?:_[a-zA-Z0-9-_@.]+)*$")
USERNAME_MESSAGE = (
    "Value error, Username only can be 3 to 32 characters and contain a-z, 0-9, "
    "and underscores in between."
)
DEFAULT_INBOUNDS: dict[str, list[str]] = {
    "vless": ["VLESS TCP REALITY", "VLESS GRPC REALITY"],
    "vmess": ["VMess TCP"],
    "trojan": ["Trojan Websocket TLS"],
}
SERVER_ADDRESS = "203.0.113.10"
STATUSES = ("active", "disabled", "limited", "expired", "on_hold")
KEEP_USERS = 10_000
"""Users a ``snapshot`` keeps, the newest; a larger ``restore`` is refused."""
MAX_USER_AGENT = 512
"""The panel's column for a subscription client's user agent."""


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers=headers)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64(data: bytes) -> str:
    return base64.b64encode(data, altchars=b"-_").decode()


class FakeMarzban(FakePeer):
    """``users`` maps a username to the stored user; tests may read and change it."""

    name = "marzban"

    def __init__(
        self,
        *,
        admin_username: str = "admin",
        admin_password: str = "admin-password",
        token_lifetime: float | None = None,
        inbounds: Mapping[str, Sequence[str]] | None = None,
        subscription_prefix: str = "",
        subscription_path: str = "sub",
        root_path: str = "",
        clock: Callable[[], float] = time.time,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.admin_username = admin_username
        self.admin_password = admin_password
        self.token_lifetime = token_lifetime
        self.inbounds = {k: list(v) for k, v in (inbounds or DEFAULT_INBOUNDS).items()}
        """The server's inbound tags by proxy type; a type missing here is disabled."""
        self.subscription_prefix = subscription_prefix.strip("/")
        """``XRAY_SUBSCRIPTION_URL_PREFIX``: empty gives relative subscription URLs."""
        self.subscription_path = subscription_path.strip("/")
        """``XRAY_SUBSCRIPTION_PATH``."""
        self.root_path = "/" + root_path.strip("/") if root_path.strip("/") else ""
        self.clock = clock
        """The panel's clock (unix seconds): tests may move it."""
        self.users: dict[str, dict[str, Any]] = {}
        self.issued_tokens: list[str] = []
        self._token_expiry: dict[str, float | None] = {}
        self._secret_key = secrets.token_hex(32)

    # -- keeping the users across restarts (the sandbox) ---------------------------------

    def snapshot(self, keep: int = KEEP_USERS) -> dict[str, Any]:
        """The newest ``keep`` users and the subscription secret, as JSON-ready data. A
        user's reset log is kept as its sum: only the sum is ever answered."""
        newest = sorted(self.users.values(), key=lambda u: u["created"])
        users = []
        for user in newest[-keep:] if keep > 0 else []:
            kept = deepcopy(user)
            kept["reset_logs"] = [sum(user["reset_logs"])] if user["reset_logs"] else []
            users.append(kept)
        return {"version": 1, "secret_key": self._secret_key, "users": users}

    def restore(self, data: Any) -> None:
        """Take back a ``snapshot``; ``ValueError`` (and no change) when it is not one."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a fake Marzban snapshot of version 1")
        secret, users = data.get("secret_key"), data.get("users")
        if not isinstance(secret, str) or not 32 <= len(secret) <= 256:
            raise ValueError("no subscription secret of 32 to 256 characters")
        if not isinstance(users, list) or len(users) > KEEP_USERS:
            raise ValueError(f"users is not a list of at most {KEEP_USERS}")
        restored: dict[str, dict[str, Any]] = {}
        for user in users:
            kept = _kept_user(user)
            if kept["username"] in restored:
                raise ValueError(f"user {kept['username']!r} twice")
            restored[kept["username"]] = kept
        self.users = restored
        self._secret_key = secret
        self._touch()

    # -- test controls -------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far now gets 401 "Could not validate credentials"."""
        self._token_expiry.clear()

    def set_used_traffic(self, username: str, used_bytes: int) -> None:
        self.users[username]["used_traffic"] = used_bytes
        self._touch()

    def use_traffic(self, username: str, data_bytes: int) -> None:
        """The user moved ``data_bytes`` more bytes through the panel's nodes."""
        self.users[username]["used_traffic"] += data_bytes
        self._touch()

    def add_user(
        self, username: str, *, without_inbounds: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Put a user in place directly, as if created earlier (by a crashed attempt, or
        by hand); ``without_inbounds`` as a creation that left ``inbounds`` out."""
        body: dict[str, Any] = {"username": username, "proxies": {"vless": {}}, **fields}
        if not without_inbounds:
            body.setdefault("inbounds", {})
        user = self._new_user(body)
        self.users[username] = user
        self._touch()
        return user

    def user_inbounds(self, username: str) -> dict[str, list[str]]:
        """The inbound tags the user can use, by proxy type (as the panel answers them)."""
        return self._inbounds_of(self.users[username])

    # -- routes --------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        root = self.root_path
        sub = f"{root}/{self.subscription_path}"
        return [
            Route(f"{root}/api/admin/token", self._token, methods=["POST"]),
            Route(f"{root}/api/admin", self._admin, methods=["GET"]),
            Route(f"{root}/api/system", self._system, methods=["GET"]),
            Route(f"{root}/api/inbounds", self._server_inbounds, methods=["GET"]),
            Route(f"{root}/api/user", self._create, methods=["POST"]),
            Route(f"{root}/api/user/{{username}}", self._get, methods=["GET"]),
            Route(f"{root}/api/user/{{username}}", self._modify, methods=["PUT"]),
            Route(f"{root}/api/user/{{username}}", self._delete, methods=["DELETE"]),
            Route(f"{root}/api/user/{{username}}/reset", self._reset, methods=["POST"]),
            Route(f"{sub}/{{token}}", self._subscription, methods=["GET"]),
            Route(f"{sub}/{{token}}/", self._subscription, methods=["GET"]),
        ]

    async def _token(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        missing = {k: "Field required" for k in ("username", "password") if not form.get(k)}
        if missing:
            return _detail(422, missing)
        username, password = form["username"][0], form["password"][0]
        if username != self.admin_username or password != self.admin_password:
            return _detail(401, "Incorrect username or password", {"WWW-Authenticate": "Bearer"})
        token = (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
            + secrets.token_urlsafe(24)
            + "."
            + secrets.token_urlsafe(16)
        )
        lifetime = self.token_lifetime
        self._token_expiry[token] = None if lifetime is None else time.monotonic() + lifetime
        self.issued_tokens.append(token)
        return JSONResponse({"access_token": token, "token_type": "bearer"})

    def _unauthorized(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _detail(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        if token not in self._token_expiry:
            return _detail(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})
        expiry = self._token_expiry[token]
        if expiry is not None and expiry <= time.monotonic():
            del self._token_expiry[token]
            return _detail(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})
        return None

    async def _admin(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return JSONResponse(
            {
                "username": self.admin_username,
                "is_sudo": True,
                "telegram_id": None,
                "discord_webhook": None,
                "users_usage": sum(u["used_traffic"] for u in self.users.values()),
            }
        )

    async def _system(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        for user in self.users.values():
            self._review(user)
        statuses = [u["status"] for u in self.users.values()]
        return JSONResponse(
            {
                "version": "0.8.4",
                "mem_total": 2**31,
                "mem_used": 2**30,
                "cpu_cores": 2,
                "cpu_usage": 3.5,
                "total_user": len(statuses),
                "online_users": 0,
                "users_active": statuses.count("active"),
                "users_disabled": statuses.count("disabled"),
                "users_expired": statuses.count("expired"),
                "users_limited": statuses.count("limited"),
                "users_on_hold": statuses.count("on_hold"),
                "incoming_bandwidth": 0,
                "outgoing_bandwidth": 0,
                "incoming_bandwidth_speed": 0,
                "outgoing_bandwidth_speed": 0,
            }
        )

    async def _server_inbounds(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return JSONResponse(
            {
                kind: [
                    {"tag": tag, "protocol": kind, "network": "tcp", "tls": "reality", "port": 443}
                    for tag in tags
                ]
                for kind, tags in self.inbounds.items()
            }
        )

    async def _create(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        try:
            self._validate(body, creating=True)
        except _Invalid as exc:
            return _detail(422, {exc.field: exc.message})
        for kind in body["proxies"]:
            if not self.inbounds.get(kind):
                return _detail(400, f"Protocol {kind} is disabled on your server")
        if body["username"] in self.users:
            return _detail(409, "User already exists")
        user = self._new_user(body)
        self.users[user["username"]] = user
        self._touch()
        return JSONResponse(self._answer(user))

    async def _get(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        user = self.users.get(request.path_params["username"])
        if user is None:
            return _detail(404, "User not found")
        self._review(user)
        return JSONResponse(self._answer(user))

    async def _modify(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        user = self.users.get(request.path_params["username"])
        if user is None:  # the panel resolves the user before it validates the body
            return _detail(404, "User not found")
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        try:
            self._validate(body, creating=False)
        except _Invalid as exc:
            return _detail(422, {exc.field: exc.message})
        for kind in body.get("proxies") or {}:
            if not self.inbounds.get(kind):
                return _detail(400, f"Protocol {kind} is disabled on your server")
        self._apply(user, body)
        self._touch()
        return JSONResponse(self._answer(user))

    async def _delete(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.users.pop(request.path_params["username"], None) is None:
            return _detail(404, "User not found")
        self._touch()
        return _detail(200, "User successfully deleted")

    async def _reset(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        user = self.users.get(request.path_params["username"])
        if user is None:
            return _detail(404, "User not found")
        user["reset_logs"].append(user["used_traffic"])
        user["used_traffic"] = 0
        # crud.reset_user_data_usage: `status not in (UserStatus.expired or
        # UserStatus.disabled)` is a substring test against "expired".
        if user["status"] not in "expired":
            user["status"] = "active"
        self._touch()
        return JSONResponse(self._answer(user))

    async def _subscription(self, request: Request) -> Response:
        user = self._subscriber(request.path_params["token"])
        if user is None:
            return _detail(404, "Not Found")
        self._review(user)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(f"<html><body><h1>{user['username']}</h1></body></html>")
        user["sub_updated_at"] = datetime.fromtimestamp(self.clock(), UTC).isoformat()
        user["sub_last_user_agent"] = request.headers.get("user-agent", "")[:MAX_USER_AGENT]
        self._touch()
        info = {
            "upload": 0,
            "download": user["used_traffic"],
            "total": user["data_limit"] or 0,
            "expire": user["expire"] or 0,
        }
        content = base64.b64encode("\n".join(self._links(user)).encode()).decode()
        return Response(
            content,
            media_type="text/plain",
            headers={
                "content-disposition": f'attachment; filename="{user["username"]}"',
                "profile-update-interval": "12",
                "subscription-userinfo": "; ".join(f"{k}={v}" for k, v in info.items()),
            },
        )

    # -- subscription tokens -------------------------------------------------------------

    def _signature(self, data: str) -> str:
        return _b64(hashlib.sha256((data + self._secret_key).encode()).digest())[:10]

    def _subscription_token(self, username: str) -> str:
        data = _b64(f"{username},{math.ceil(self.clock())}".encode()).rstrip("=")
        return data + self._signature(data)

    def _subscriber(self, token: str) -> dict[str, Any] | None:
        """The user a subscription token was issued for, if it verifies."""
        if len(token) < 15:
            return None
        data, signature = token[:-10], token[-10:]
        if not secrets.compare_digest(signature, self._signature(data)):
            return None
        try:
            decoded = base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_")
            username, issued = decoded.decode().rsplit(",", 1)
            issued_at = int(issued)
        except ValueError:
            return None
        user = self.users.get(username)
        if user is None or user["created"] > issued_at:
            return None
        return user

    def _subscription_url(self, username: str) -> str:
        prefix = self.subscription_prefix.replace("*", secrets.token_hex(8))
        return f"{prefix}/{self.subscription_path}/{self._subscription_token(username)}"

    # -- behaviour -----------------------------------------------------------------------

    @staticmethod
    async def _json(request: Request) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except ValueError:
            return _detail(422, {"body": "JSON decode error"})
        if not isinstance(body, dict):
            return _detail(422, {"body": "Input should be a valid dictionary"})
        return body

    def _validate(self, body: dict[str, Any], *, creating: bool) -> None:
        if creating:
            username = body.get("username")
            if username is None:
                raise _Invalid("username", "Field required")
            if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
                raise _Invalid("username", USERNAME_MESSAGE)
            if not body.get("proxies"):
                raise _Invalid("proxies", "Value error, Each user needs at least one proxy")
        proxies = body.get("proxies") or {}
        if not isinstance(proxies, dict):
            raise _Invalid("proxies", "Input should be a valid dictionary")
        inbounds = body.get("inbounds") or {}
        if not isinstance(inbounds, dict):
            raise _Invalid("inbounds", "Input should be a valid dictionary")
        for kind in [*proxies, *inbounds]:
            if kind not in PROXY_TYPES:
                raise _Invalid(kind, "Input should be 'vmess', 'vless', 'trojan' or 'shadowsocks'")
        for field in ("expire", "data_limit"):
            value = body.get(field)
            if value is not None and not _is_int(value):
                raise _Invalid(field, "Input should be a valid integer")
        if (body.get("data_limit") or 0) < 0:
            raise _Invalid("data_limit", "Input should be greater than or equal to 0")
        allowed = ("active", "on_hold") if creating else ("active", "disabled", "on_hold")
        status = body.get("status")
        if status is not None and status not in allowed:
            expected = " or ".join(f"'{s}'" for s in allowed)
            raise _Invalid("status", f"Input should be {expected}")
        if status == "on_hold" and not body.get("on_hold_expire_duration"):
            raise _Invalid(
                "status",
                "Value error, User cannot be on hold without a valid on_hold_expire_duration.",
            )
        strategy = body.get("data_limit_reset_strategy")
        if strategy is not None and strategy not in RESET_STRATEGIES:
            raise _Invalid("data_limit_reset_strategy", "Input should be a valid strategy")
        known = {tag for tags in self.inbounds.values() for tag in tags}
        for tags in inbounds.values():
            if not isinstance(tags, list):
                raise _Invalid("inbounds", "Input should be a valid list")
            for tag in tags:
                if tag not in known:
                    raise _Invalid("inbounds", f"Value error, Inbound {tag} doesn't exist")
        note = body.get("note")
        if isinstance(note, str) and len(note) > 500:
            raise _Invalid("note", "Value error, User's note can be a maximum of 500 character")

    @staticmethod
    def _proxy_settings(kind: str, given: dict[str, Any]) -> dict[str, Any]:
        if kind in ("vmess", "vless"):
            settings: dict[str, Any] = {"id": str(given.get("id") or uuid.uuid4())}
        else:
            settings = {"password": str(given.get("password") or secrets.token_urlsafe(16))}
        if kind in ("vless", "trojan"):
            settings["flow"] = given.get("flow", "")
        if kind == "shadowsocks":
            settings["method"] = given.get("method", "chacha20-ietf-poly1305")
        return settings

    def _excluded(self, kind: str, included: Sequence[str]) -> list[str]:
        return [tag for tag in self.inbounds.get(kind, []) if tag not in included]

    def _inbounds_of(self, user: dict[str, Any]) -> dict[str, list[str]]:
        excluded = user["excluded"]
        return {
            kind: [t for t in self.inbounds.get(kind, []) if t not in excluded.get(kind, [])]
            for kind in user["proxies"]
        }

    def _new_user(self, body: dict[str, Any]) -> dict[str, Any]:
        proxies = {
            kind: self._proxy_settings(kind, given or {}) for kind, given in body["proxies"].items()
        }
        given = body.get("inbounds") or {}
        excluded = {
            # Creation fills a type sent without tags with all of them, but only when the
            # field itself was sent: its validator does not run on a missing field.
            kind: self._excluded(kind, given.get(kind) or self.inbounds.get(kind, []))
            if "inbounds" in body
            else list(self.inbounds.get(kind, []))
            for kind in proxies
        }
        now = self.clock()
        return {
            "username": body["username"],
            "proxies": proxies,
            "excluded": excluded,
            "expire": body.get("expire") or None,
            "data_limit": body.get("data_limit") or None,
            "data_limit_reset_strategy": body.get("data_limit_reset_strategy") or "no_reset",
            "note": body.get("note") or None,
            "status": body.get("status") or "active",
            "used_traffic": 0,
            "reset_logs": [],
            "created": now,
            "created_at": datetime.fromtimestamp(now, UTC).replace(tzinfo=None).isoformat(),
            "on_hold_expire_duration": body.get("on_hold_expire_duration"),
            "on_hold_timeout": None,
            "auto_delete_in_days": None,
            "next_plan": None,
            "sub_updated_at": None,
            "sub_last_user_agent": None,
            "online_at": None,
        }

    def _apply(self, user: dict[str, Any], body: dict[str, Any]) -> None:
        """``PUT /api/user/{name}``, following crud.update_user."""
        proxies = body.get("proxies") or {}
        if proxies:
            user["proxies"] = {
                kind: self._proxy_settings(kind, given or {}) for kind, given in proxies.items()
            }
            user["excluded"] = {kind: user["excluded"].get(kind, []) for kind in user["proxies"]}
        inbounds = body.get("inbounds") or {}
        for kind, tags in inbounds.items():  # applied as given: [] excludes every inbound
            if kind in user["proxies"]:
                user["excluded"][kind] = self._excluded(kind, tags)
        if body.get("status") is not None:
            user["status"] = body["status"]
        if body.get("data_limit") is not None:
            user["data_limit"] = body["data_limit"] or None
            if user["status"] not in ("expired", "disabled"):
                limit = user["data_limit"]
                if not limit or user["used_traffic"] < limit:
                    if user["status"] != "on_hold":
                        user["status"] = "active"
                else:
                    user["status"] = "limited"
        if body.get("expire") is not None:
            user["expire"] = body["expire"] or None
            if user["status"] in ("active", "expired"):
                expire = user["expire"]
                user["status"] = "active" if not expire or expire > self.clock() else "expired"
        if body.get("note") is not None:
            user["note"] = body["note"] or None
        if body.get("data_limit_reset_strategy") is not None:
            user["data_limit_reset_strategy"] = body["data_limit_reset_strategy"]

    def _review(self, user: dict[str, Any]) -> None:
        """What the panel's periodic job does to active users."""
        if user["status"] != "active":
            return
        if user["data_limit"] and user["used_traffic"] >= user["data_limit"]:
            user["status"] = "limited"
        elif user["expire"] and user["expire"] <= self.clock():
            user["status"] = "expired"
        else:
            return
        self._touch()

    def _links(self, user: dict[str, Any]) -> list[str]:
        links = []
        for kind, tags in self._inbounds_of(user).items():
            settings = user["proxies"][kind]
            for tag in tags:
                remark = quote(f"{tag} ({user['username']})")
                if kind == "vmess":
                    config = {"v": "2", "ps": tag, "add": SERVER_ADDRESS, "port": 443}
                    config.update(id=settings["id"], net="tcp", tls="tls")
                    encoded = base64.b64encode(json.dumps(config).encode()).decode()
                    links.append(f"vmess://{encoded}")
                elif kind == "vless":
                    links.append(
                        f"vless://{settings['id']}@{SERVER_ADDRESS}:443"
                        f"?security=reality&type=tcp&flow={settings.get('flow', '')}#{remark}"
                    )
                elif kind == "trojan":
                    links.append(
                        f"trojan://{settings['password']}@{SERVER_ADDRESS}:443"
                        f"?security=tls&type=ws#{remark}"
                    )
                else:
                    secret = f"{settings['method']}:{settings['password']}".encode()
                    userinfo = base64.urlsafe_b64encode(secret).decode().rstrip("=")
                    links.append(f"ss://{userinfo}@{SERVER_ADDRESS}:443#{remark}")
        return links

    def _answer(self, user: dict[str, Any]) -> dict[str, Any]:
        hidden = ("excluded", "reset_logs", "created")
        return {
            **{k: v for k, v in user.items() if k not in hidden},
            "inbounds": self._inbounds_of(user),
            "excluded_inbounds": {k: list(v) for k, v in user["excluded"].items()},
            "lifetime_used_traffic": user["used_traffic"] + sum(user["reset_logs"]),
            "links": self._links(user),
            "subscription_url": self._subscription_url(user["username"]),
            "admin": {
                "username": self.admin_username,
                "is_sudo": True,
                "telegram_id": None,
                "discord_webhook": None,
            },
        }


def _optional(kind: type | tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda v: v is None or (isinstance(v, kind) and not isinstance(v, bool))


def _count(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(t, str) for t in v)


_KEPT_FIELDS: dict[str, Callable[[Any], bool]] = {
    "username": lambda v: isinstance(v, str) and USERNAME_PATTERN.match(v) is not None,
    "proxies": lambda v: isinstance(v, dict) and bool(v) and set(v) <= set(PROXY_TYPES),
    "excluded": lambda v: isinstance(v, dict) and all(_texts(t) for t in v.values()),
    "expire": lambda v: v is None or _count(v),
    "data_limit": lambda v: v is None or _count(v),
    "data_limit_reset_strategy": lambda v: v in RESET_STRATEGIES,
    "note": lambda v: v is None or (isinstance(v, str) and len(v) <= 500),
    "status": lambda v: v in STATUSES,
    "used_traffic": _count,
    "reset_logs": lambda v: isinstance(v, list) and all(_count(n) for n in v),
    "created": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "created_at": lambda v: isinstance(v, str),
    "on_hold_expire_duration": lambda v: v is None or _count(v),
    "on_hold_timeout": _optional(str),
    "auto_delete_in_days": lambda v: v is None or _count(v),
    "next_plan": _optional(dict),
    "sub_updated_at": _optional(str),
    "sub_last_user_agent": lambda v: v is None or (isinstance(v, str) and len(v) <= 512),
    "online_at": _optional(str),
}
_PROXY_FIELDS = {
    "vmess": {"id"},
    "vless": {"id", "flow"},
    "trojan": {"password", "flow"},
    "shadowsocks": {"password", "method"},
}


def _kept_user(user: Any) -> dict[str, Any]:
    """A user from a snapshot, checked field by field; ``ValueError`` naming the first
    field that is not what the fake stores."""
    if not isinstance(user, dict) or set(user) != set(_KEPT_FIELDS):
        raise ValueError("a user without the fields the fake stores")
    for field, valid in _KEPT_FIELDS.items():
        if not valid(user[field]):
            raise ValueError(f"user {str(user.get('username'))[:40]!r}: a bad {field}")
    for kind, settings in user["proxies"].items():
        if not (
            isinstance(settings, dict)
            and set(settings) == _PROXY_FIELDS[kind]
            and all(v is None or isinstance(v, str) for v in settings.values())
        ):
            raise ValueError(f"user {user['username']!r}: bad {kind} proxy settings")
    if not set(user["excluded"]) <= set(user["proxies"]):
        raise ValueError(f"user {user['username']!r}: exclusions for a proxy it lacks")
    return deepcopy(user)
