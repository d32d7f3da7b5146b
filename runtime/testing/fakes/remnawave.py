"""A fake Remnawave 3.x panel (modelled on 3.3.2): the user API, awkward parts included.

Modelled on the panel's source:

- ``Authorization: Bearer <api_token>``, else 401 ``{"message": "Unauthorized",
  "statusCode": 401}``. With ``api_key`` set, a request without that ``X-Api-Key`` gets
  403, as from the proxy that some setups put in front.
- Users have numeric ids (3.x); answers are ``{"response": {...}}``; errors are
  ``{"timestamp", "path", "message", "errorCode"}`` with the panel's codes: A019 a taken
  username (400, case-sensitive), A025 / A063 no such user (404), A029 / A030 already
  disabled / enabled (400), A018 / A039 a failed create / update (500, e.g. an unknown
  internal squad). Validation errors are 400 ``{"statusCode": 400, "message":
  "Validation failed", "errors": [{"code", "path", "message"}]}``: username 3-36 of
  ``[a-zA-Z0-9_-]``, ``expireAt`` required on create and in the future on update.
- ``PATCH /api/users`` names the user by ``id`` or ``username`` and follows the panel's
  status rules (only ACTIVE <-> DISABLED on request; a LIMITED user given more traffic
  and an EXPIRED one given a later expiry become ACTIVE).
- ``POST /api/users/{id}/actions/extend {"days"}`` adds days to the later of now and the
  current expiry (EXPIRED users become ACTIVE): not idempotent, as on the panel.
- ``POST /api/users/{id}/actions/reset-traffic`` sets the used traffic to 0 (the
  lifetime figure keeps counting) and ``lastTrafficResetAt`` to now; a LIMITED user becomes
  ACTIVE.
- ``subscriptionUrl`` is ``https://<sub_public_domain>/<shortUuid>``; it changes only on
  ``revoke``. ``GET /api/sub/{shortUuid}`` serves the subscription (the panel's own
  subscription route; a public domain points at it, or at the subscription page that
  proxies it): for an ACTIVE user one VLESS link per internal squad it is in, newline
  separated and base64 encoded (the panel's answer to clients it does not recognise), with
  the ``subscription-userinfo`` header; for any other user the custom remark of its
  status as a placeholder config (the panel's default ``isShowCustomRemarks``); 404 for an
  unknown short uuid. ``sub_url_scheme`` lets tests reach it over plain HTTP.
- The panel's periodic jobs (ACTIVE users past their expiry or traffic become EXPIRED /
  LIMITED) are applied whenever a user is read or written (unless ``review_on_read`` is
  turned off, to see a user between two runs of them).

- HWID devices (the panel's HWID device limit turned on): a client that fetches the
  subscription with an ``x-hwid`` header registers that device (with ``x-device-os``,
  ``x-device-model``); past the user's ``hwidDeviceLimit`` (0: none) a new device gets the
  placeholder config instead. ``GET /api/hwid/devices/{id}`` lists them (``{total,
  devices}``), ``POST /api/hwid/devices/delete {userId, hwid}`` and ``.../delete-all
  {userId}`` forget them and answer the list left.

Not modelled: the connection the panel closes on requests without
``X-Forwarded-For`` / ``X-Forwarded-Proto: https`` when reached without its reverse
proxy (requests record the headers instead), API token scopes, bulk routes, HWID
statistics and blocking, external squads, nodes.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import string
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._base import FakePeer

STATUSES = ("ACTIVE", "DISABLED", "LIMITED", "EXPIRED")
RESET_PERIODS = ("NO_RESET", "DAY", "WEEK", "MONTH", "MONTH_ROLLING")
USERNAME = re.compile(r"^[a-zA-Z0-9_-]+$")
TAG = re.compile(r"^[A-Z0-9_]+$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SERVER_ADDRESS = "203.0.113.20"
DEFAULT_SQUADS = {"0b3c5f4e-7a6d-4c1b-9e8f-2a1d3c4b5e6f": "Default-Squad"}

ERRORS: dict[str, tuple[int, str]] = {
    "A018": (500, "Failed to create user"),
    "A019": (400, "User username already exists"),
    "A025": (404, "User not found"),
    "A029": (400, "User already disabled"),
    "A030": (400, "User already enabled"),
    "A039": (500, "Update user error"),
    "A063": (404, "User with specified params not found"),
}


class _Invalid(Exception):
    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__("validation failed")
        self.issues = issues


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: Any) -> datetime | None:
    """zod's ``z.iso.datetime({offset: true, local: true})``: None when invalid."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Collects zod-like issues for one body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.issues: list[dict[str, Any]] = []

    def fail(self, field: str, code: str, message: str) -> None:
        self.issues.append({"code": code, "path": [field] if field else [], "message": message})

    def present(self, field: str) -> bool:
        return field in self.body and self.body[field] is not None

    def number(self, field: str, *, minimum: float | None = None, integer: bool = False) -> None:
        if not self.present(field):
            return
        value = self.body[field]
        if not _is_number(value) or (integer and not float(value).is_integer()):
            expected = "int" if integer else "number"
            self.fail(field, "invalid_type", f"Invalid input: expected {expected}")
        elif minimum is not None and value < minimum:
            self.fail(field, "too_small", f"Too small: expected number to be >={minimum:g}")

    def choice(self, field: str, choices: Sequence[str]) -> None:
        if self.present(field) and self.body[field] not in choices:
            options = "|".join(f'"{c}"' for c in choices)
            self.fail(field, "invalid_value", f"Invalid option: expected one of {options}")

    def squads(self) -> None:
        squads = self.body.get("activeInternalSquads")
        if squads is None:
            return
        if not isinstance(squads, list):
            self.fail("activeInternalSquads", "invalid_type", "Invalid input: expected array")
        elif not all(isinstance(s, str) and UUID.match(s) for s in squads):
            self.fail("activeInternalSquads", "invalid_format", "Invalid UUID")

    def common(self) -> None:
        self.number("trafficLimitBytes", minimum=0)
        self.choice("trafficLimitStrategy", RESET_PERIODS)
        self.number("telegramId")
        self.number("hwidDeviceLimit", minimum=0, integer=True)
        self.squads()
        tag = self.body.get("tag")
        if tag is not None and (not isinstance(tag, str) or not TAG.match(tag) or len(tag) > 16):
            self.fail("tag", "invalid_format", "Tag can only contain uppercase letters, numbers")
        description = self.body.get("description")
        if description is not None and not isinstance(description, str):
            self.fail("description", "invalid_type", "Invalid input: expected string")

    def raise_if_any(self) -> None:
        if self.issues:
            raise _Invalid(self.issues)


class FakeRemnawave(FakePeer):
    """``users`` maps an id to the stored user; tests may read and change it."""

    name = "remnawave"

    def __init__(
        self,
        *,
        api_token: str = "remnawave-api-token",
        api_key: str | None = None,
        sub_public_domain: str = "sub.example.com",
        sub_url_scheme: str = "https",
        internal_squads: Mapping[str, str] | None = None,
        version: str = "3.3.2",
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.api_token = api_token
        self.api_key = api_key
        self.sub_public_domain = sub_public_domain
        """``SUB_PUBLIC_DOMAIN``: host (and path) of subscription URLs."""
        self.sub_url_scheme = sub_url_scheme
        self.internal_squads = dict(internal_squads or DEFAULT_SQUADS)
        """The panel's internal squads, uuid -> name."""
        self.version = version
        self.users: dict[int, dict[str, Any]] = {}
        self.review_on_read = True
        """False: the periodic jobs have not run yet (a user over its traffic stays ACTIVE
        for a while on the real panel)."""
        self._ids = itertools.count(1)
        self.devices: dict[int, list[dict[str, Any]]] = {}
        """A user's id -> its HWID devices, oldest first."""

    # -- test controls -------------------------------------------------------------------

    def user(self, username: str) -> dict[str, Any] | None:
        """The stored user of that name (case-sensitive), or None."""
        return next((u for u in self.users.values() if u["username"] == username), None)

    def add_user(self, username: str, **fields: Any) -> dict[str, Any]:
        """Put a user in place directly, as if created earlier (by a crashed attempt)."""
        expire_at = fields.pop("expireAt", _now() + timedelta(days=1))
        if isinstance(expire_at, datetime):
            expire_at = _iso(expire_at)
        body = {"username": username, "expireAt": expire_at, **fields}
        user = self._new_user(body)
        self.users[user["id"]] = user
        return user

    def set_used_traffic(self, username: str, used_bytes: int) -> None:
        user = self.user(username)
        assert user is not None, username
        user["usedTrafficBytes"] = used_bytes

    def use_traffic(self, username: str, data_bytes: int) -> None:
        """The user moved ``data_bytes`` more bytes through the panel's nodes."""
        user = self.user(username)
        assert user is not None, username
        user["usedTrafficBytes"] += data_bytes
        user["lifetimeUsedTrafficBytes"] += data_bytes

    def add_device(
        self, username: str, hwid: str, *, platform: str = "Android", model: str = "Pixel"
    ) -> bool:
        """A client with that hardware id fetched the subscription: registered unless
        the user's device limit is reached (True when it is registered now or was)."""
        user = self.user(username)
        assert user is not None, username
        return self._register_device(user, hwid, platform, model)

    def _register_device(
        self, user: dict[str, Any], hwid: str, platform: str | None, model: str | None
    ) -> bool:
        devices = self.devices.setdefault(user["id"], [])
        if any(d["hwid"] == hwid for d in devices):
            return True
        limit = user.get("hwidDeviceLimit") or 0
        if limit and len(devices) >= limit:
            return False
        now = _iso(_now())
        devices.append(
            {
                "hwid": hwid,
                "userId": user["id"],
                "platform": platform,
                "osVersion": None,
                "deviceModel": model,
                "userAgent": None,
                "createdAt": now,
                "updatedAt": now,
            }
        )
        return True

    def serve_subscriptions_here(self) -> None:
        """Point subscription URLs at this fake's own subscription route (once running)."""
        scheme, _, rest = self.url.partition("://")
        self.sub_url_scheme = scheme
        self.sub_public_domain = rest.rstrip("/") + "/api/sub"

    # -- routes --------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/users", self._create, methods=["POST"]),
            Route("/api/users", self._update, methods=["PATCH"]),
            Route("/api/users/by-username/{username}", self._by_username, methods=["GET"]),
            Route("/api/users/{user_id}", self._by_id, methods=["GET"]),
            Route("/api/users/{user_id}", self._delete, methods=["DELETE"]),
            Route("/api/users/{user_id}/actions/{action}", self._action, methods=["POST"]),
            Route("/api/system/metadata", self._metadata, methods=["GET"]),
            Route("/api/sub/{short_uuid}", self._subscription, methods=["GET"]),
            Route("/api/hwid/devices/delete", self._delete_device, methods=["POST"]),
            Route("/api/hwid/devices/delete-all", self._delete_devices, methods=["POST"]),
            Route("/api/hwid/devices/{user_id}", self._devices, methods=["GET"]),
        ]

    def _device_list(self, user_id: int) -> JSONResponse:
        devices = self.devices.get(user_id, [])
        return JSONResponse({"response": {"total": len(devices), "devices": list(devices)}})

    async def _devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            user_id = self._user_id(request)
        except _Invalid as exc:
            return self._invalid(exc.issues)
        if user_id not in self.users:
            return self._error(request, "A025")
        return self._device_list(user_id)

    async def _device_body(self, request: Request, *, with_hwid: bool) -> tuple[int, str]:
        body = await self._body(request)
        user_id, hwid = body.get("userId"), body.get("hwid")
        issues = []
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            issues.append({"code": "invalid_type", "path": ["userId"], "message": "Invalid"})
        if with_hwid and not isinstance(hwid, str):
            issues.append({"code": "invalid_type", "path": ["hwid"], "message": "Invalid"})
        if issues or not isinstance(user_id, int):
            raise _Invalid(issues)
        return user_id, str(hwid)

    async def _delete_device(self, request: Request) -> Response:
        return await self._forget_devices(request, every=False)

    async def _delete_devices(self, request: Request) -> Response:
        return await self._forget_devices(request, every=True)

    async def _forget_devices(self, request: Request, *, every: bool) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            user_id, hwid = await self._device_body(request, with_hwid=not every)
        except _Invalid as exc:
            return self._invalid(exc.issues)
        if user_id not in self.users:
            return self._error(request, "A025")
        devices = self.devices.get(user_id, [])
        self.devices[user_id] = [] if every else [d for d in devices if d["hwid"] != hwid]
        return self._device_list(user_id)

    def _error(self, request: Request, code: str) -> JSONResponse:
        status, message = ERRORS[code]
        return JSONResponse(
            {
                "timestamp": _iso(_now()),
                "path": request.url.path,
                "message": message,
                "errorCode": code,
            },
            status,
        )

    @staticmethod
    def _invalid(issues: list[dict[str, Any]]) -> JSONResponse:
        return JSONResponse(
            {"statusCode": 400, "message": "Validation failed", "errors": issues}, 400
        )

    def _denied(self, request: Request) -> Response | None:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return Response("Forbidden", 403, media_type="text/plain")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token, self.api_token):
            return JSONResponse({"message": "Unauthorized", "statusCode": 401}, 401)
        return None

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _Invalid(
                [{"code": "invalid_type", "path": [], "message": "Invalid JSON"}]
            ) from None
        if not isinstance(body, dict):
            raise _Invalid(
                [{"code": "invalid_type", "path": [], "message": "Invalid input: expected object"}]
            )
        return body

    def _user_id(self, request: Request) -> int:
        raw = request.path_params["user_id"]
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value > 0 or not value.is_integer():
            raise _Invalid(
                [
                    {
                        "code": "too_small",
                        "path": ["userId"],
                        "message": "Too small: expected number to be >0",
                    }
                ]
            )
        return int(value)

    def _answer(self, user: dict[str, Any], status: int = 200) -> JSONResponse:
        self._review(user)
        return JSONResponse({"response": self._render(user)}, status)

    async def _create(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = await self._body(request)
            self._check_create(body)
        except _Invalid as exc:
            return self._invalid(exc.issues)
        if self.user(body["username"]) is not None:
            return self._error(request, "A019")
        if any(s not in self.internal_squads for s in body.get("activeInternalSquads") or []):
            return self._error(request, "A018")
        user = self._new_user(body)
        self.users[user["id"]] = user
        return self._answer(user, 201)

    async def _update(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = await self._body(request)
            self._check_update(body)
        except _Invalid as exc:
            return self._invalid(exc.issues)
        user = self._find(body.get("id"), body.get("username"))
        if user is None:
            return self._error(request, "A025")
        squads = body.get("activeInternalSquads")
        if squads is not None and any(s not in self.internal_squads for s in squads):
            return self._error(request, "A039")
        self._review(user)
        self._apply_update(user, body)
        return self._answer(user)

    async def _by_username(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        user = self.user(request.path_params["username"])
        return self._error(request, "A063") if user is None else self._answer(user)

    async def _by_id(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            user = self.users.get(self._user_id(request))
        except _Invalid as exc:
            return self._invalid(exc.issues)
        return self._error(request, "A063") if user is None else self._answer(user)

    async def _delete(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            user_id = self._user_id(request)
        except _Invalid as exc:
            return self._invalid(exc.issues)
        if self.users.pop(user_id, None) is None:
            return self._error(request, "A025")
        self.devices.pop(user_id, None)
        return Response(status_code=204)

    async def _action(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        action = request.path_params["action"]
        if action not in ("enable", "disable", "extend", "reset-traffic", "revoke"):
            return JSONResponse({"message": "Not Found", "statusCode": 404}, 404)
        try:
            user_id = self._user_id(request)
            days = await self._extend_days(request) if action == "extend" else 0
        except _Invalid as exc:
            return self._invalid(exc.issues)
        user = self.users.get(user_id)
        if user is None:
            return self._error(request, "A025")
        self._review(user)
        if action == "disable":
            if user["status"] == "DISABLED":
                return self._error(request, "A029")
            user["status"] = "DISABLED"
        elif action == "enable":
            if user["status"] == "ACTIVE":
                return self._error(request, "A030")
            user["status"] = "ACTIVE"
        elif action == "extend":
            base = max(user["expireAt"], _now())
            user["expireAt"] = base + timedelta(days=days)
            if user["status"] == "EXPIRED":
                user["status"] = "ACTIVE"
        elif action == "reset-traffic":
            user["usedTrafficBytes"] = 0
            user["lastTrafficResetAt"] = _now()
            user["lastTriggeredThreshold"] = 0
            if user["status"] == "LIMITED":
                user["status"] = "ACTIVE"
        else:  # revoke: new credentials and a new subscription URL
            user.update(self._credentials())
            user["subRevokedAt"] = _now()
        user["updatedAt"] = _now()
        return self._answer(user)

    async def _subscription(self, request: Request) -> Response:
        short_uuid = request.path_params["short_uuid"]
        user = next((u for u in self.users.values() if u["shortUuid"] == short_uuid), None)
        if user is None:
            return JSONResponse({"message": "Not found", "statusCode": 404}, 404)
        self._review(user)
        hwid = request.headers.get("x-hwid")
        admitted = hwid is None or self._register_device(
            user, hwid, request.headers.get("x-device-os"), request.headers.get("x-device-model")
        )
        if user["status"] != "ACTIVE" or not admitted:
            state = user["status"].lower() if admitted else "device limit reached"
            remark = quote(f"Subscription {state}")
            links = [f"vless://{'0' * 8}-0000-0000-0000-{'0' * 12}@0.0.0.0:1?type=tcp#{remark}"]
        else:
            links = [
                f"vless://{user['vlessUuid']}@{SERVER_ADDRESS}:443"
                f"?security=reality&type=tcp#{quote(self.internal_squads.get(squad, squad))}"
                for squad in user["activeInternalSquads"]
            ]
        info = {
            "upload": 0,
            "download": user["usedTrafficBytes"],
            "total": user["trafficLimitBytes"],
            "expire": int(user["expireAt"].timestamp()),
        }
        return Response(
            base64.b64encode("\n".join(links).encode()).decode(),
            media_type="text/plain",
            headers={
                "subscription-userinfo": "; ".join(f"{k}={v}" for k, v in info.items()),
                "profile-update-interval": "12",
            },
        )

    async def _metadata(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return JSONResponse(
            {
                "response": {
                    "version": self.version,
                    "build": {"time": "2026-01-01T00:00:00Z", "number": "1"},
                    "git": {
                        "backend": {"commitSha": "0" * 40, "branch": "main", "commitUrl": ""},
                        "frontend": {"commitSha": "0" * 40, "commitUrl": ""},
                    },
                }
            }
        )

    # -- behaviour -----------------------------------------------------------------------

    @staticmethod
    async def _extend_days(request: Request) -> int:
        body = await FakeRemnawave._body(request)
        days: Any = body.get("days")
        if not _is_number(days) or days < 1:
            raise _Invalid(
                [
                    {
                        "code": "too_small",
                        "path": ["days"],
                        "message": "Too small: expected number to be >=1",
                    }
                ]
            )
        return int(days)

    @staticmethod
    def _check_create(body: dict[str, Any]) -> None:
        check = _Checker(body)
        username = body.get("username")
        if not isinstance(username, str):
            check.fail("username", "invalid_type", "Invalid input: expected string")
        elif not USERNAME.match(username):
            check.fail(
                "username",
                "invalid_format",
                "Username can only contain letters, numbers, underscores and dashes",
            )
        elif len(username) > 36:
            check.fail("username", "too_big", "Username must be less than 36 characters")
        elif len(username) < 3:
            check.fail("username", "too_small", "Username must be at least 3 characters")
        check.choice("status", STATUSES)
        if "expireAt" not in body:
            check.fail("expireAt", "invalid_type", "Invalid input: expected string")
        elif _parse_iso(body["expireAt"]) is None:
            check.fail("expireAt", "invalid_format", "Invalid ISO datetime")
        check.common()
        check.raise_if_any()

    @staticmethod
    def _check_update(body: dict[str, Any]) -> None:
        check = _Checker(body)
        if check.present("username") and not isinstance(body["username"], str):
            check.fail("username", "invalid_type", "Invalid input: expected string")
        check.number("id")
        check.choice("status", ("ACTIVE", "DISABLED"))
        if check.present("expireAt"):
            expire_at = _parse_iso(body["expireAt"])
            if expire_at is None:
                check.fail("expireAt", "invalid_format", "Invalid ISO datetime")
            elif expire_at <= _now():
                check.fail("expireAt", "custom", "Expiration date cannot be in the past")
        check.common()
        if not (body.get("username") or body.get("id")):
            check.fail("", "custom", "At least one of username, id must be provided")
        check.raise_if_any()

    def _find(self, user_id: Any, username: Any) -> dict[str, Any] | None:
        for user in self.users.values():
            if user_id is not None and user["id"] != user_id:
                continue
            if username is not None and user["username"] != username:
                continue
            return user
        return None

    @staticmethod
    def _credentials() -> dict[str, Any]:
        alphabet = string.ascii_letters + string.digits
        return {
            "shortUuid": "".join(secrets.choice(alphabet) for _ in range(16)),
            "vlessUuid": str(uuid.uuid4()),
            "trojanPassword": secrets.token_urlsafe(18)[:24],
            "ssPassword": secrets.token_urlsafe(18)[:24],
        }

    def _new_user(self, body: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        expire_at = _parse_iso(body["expireAt"])
        return {
            "id": next(self._ids),
            "username": body["username"],
            "status": body.get("status") or "ACTIVE",
            "trafficLimitBytes": int(body.get("trafficLimitBytes") or 0),
            "trafficLimitStrategy": body.get("trafficLimitStrategy") or "NO_RESET",
            "expireAt": expire_at,
            "telegramId": body.get("telegramId"),
            "email": body.get("email"),
            "description": body.get("description"),
            "tag": body.get("tag"),
            "hwidDeviceLimit": body.get("hwidDeviceLimit"),
            "externalSquadUuid": body.get("externalSquadUuid"),
            "activeInternalSquads": list(body.get("activeInternalSquads") or []),
            "lastTriggeredThreshold": 0,
            "subRevokedAt": None,
            "lastTrafficResetAt": None,
            "createdAt": now,
            "updatedAt": now,
            "usedTrafficBytes": 0,
            "lifetimeUsedTrafficBytes": 0,
            **self._credentials(),
        }

    @staticmethod
    def _apply_update(user: dict[str, Any], body: dict[str, Any]) -> None:
        """The panel's ``updateUser`` rules."""
        old_status = user["status"]
        for field in ("trafficLimitStrategy", "description", "tag", "email", "externalSquadUuid"):
            if field in body:
                user[field] = body[field]
        if "telegramId" in body:
            user["telegramId"] = body["telegramId"]
        if "hwidDeviceLimit" in body:
            user["hwidDeviceLimit"] = body["hwidDeviceLimit"]
        if body.get("activeInternalSquads") is not None:
            user["activeInternalSquads"] = list(body["activeInternalSquads"])
        new_expiry = _parse_iso(body.get("expireAt"))
        status = body.get("status")
        if old_status != "ACTIVE" and status == "ACTIVE":
            user["status"] = "ACTIVE"
        if old_status == "ACTIVE" and status == "DISABLED":
            user["status"] = "DISABLED"
        limit = body.get("trafficLimitBytes")
        if limit is not None:
            if old_status == "LIMITED" and (limit > user["trafficLimitBytes"] or limit == 0):
                user["status"] = "ACTIVE"
            user["trafficLimitBytes"] = int(limit)
            user["lastTriggeredThreshold"] = 0
        if (
            old_status == "EXPIRED"
            and new_expiry is not None
            and not status
            and new_expiry != user["expireAt"]
            and new_expiry > _now()
        ):
            user["status"] = "ACTIVE"
        if new_expiry is not None:
            user["expireAt"] = new_expiry
        user["updatedAt"] = _now()

    def _review(self, user: dict[str, Any]) -> None:
        """What the panel's periodic jobs do to active users."""
        if not self.review_on_read or user["status"] != "ACTIVE":
            return
        if user["expireAt"] <= _now():
            user["status"] = "EXPIRED"
        elif user["trafficLimitBytes"] and user["usedTrafficBytes"] >= user["trafficLimitBytes"]:
            user["status"] = "LIMITED"

    def _render(self, user: dict[str, Any]) -> dict[str, Any]:
        fields = {
            k: v
            for k, v in user.items()
            if k not in ("usedTrafficBytes", "lifetimeUsedTrafficBytes", "activeInternalSquads")
        }
        return {
            **fields,
            "expireAt": _iso(user["expireAt"]),
            "subRevokedAt": _iso(user["subRevokedAt"]),
            "lastTrafficResetAt": _iso(user["lastTrafficResetAt"]),
            "createdAt": _iso(user["createdAt"]),
            "updatedAt": _iso(user["updatedAt"]),
            "subscriptionUrl": (
                f"{self.sub_url_scheme}://{self.sub_public_domain}/{user['shortUuid']}"
            ),
            "activeInternalSquads": [
                {"uuid": s, "name": self.internal_squads.get(s, "")}
                for s in user["activeInternalSquads"]
            ],
            "userTraffic": {
                "usedTrafficBytes": user["usedTrafficBytes"],
                "lifetimeUsedTrafficBytes": user["lifetimeUsedTrafficBytes"],
                "onlineAt": None,
                "lastConnectedNodeUuid": None,
                "firstConnectedAt": None,
            },
        }
