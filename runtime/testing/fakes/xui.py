"""A fake 3x-ui panel, both API generations, awkward parts included.

What it models (from the panel's controllers and services):

- ``api="inbounds"``: v2.x / v3.0. Clients live in each inbound's ``settings``, a JSON
  *string*; ``panel/api/inbounds/`` serves ``list``, ``get/:id``, ``getClientTraffics/:email``,
  ``addClient`` (``{id, settings: "<JSON text>"}``), ``updateClient/:clientId`` (replaces
  the whole client), ``:id/delClient/:clientId``, ``:id/delClientByEmail/:email``. An email
  is unique panel-wide, without case ("Duplicate email"); ``shared_emails=True`` gives the
  v3.0 rule (the same email may sit in several inbounds with the same ``subId``). An
  inbound cannot lose its last client ("no client remained in Inbound").
- ``api="clients"``: v3.1+. The client routes above are gone (404); ``panel/api/clients/``
  serves ``get/:email`` (``{client: record, inboundIds}``, the record's ``id`` a row number
  and ``uuid`` the credential), ``add`` (``{client, inboundIds}``; "email already in use"
  for another ``subId``), ``update/:email`` (a missing ``id`` is replaced by a new random
  UUID, as v3.1 does), ``del/:email``, ``:email/attach``, ``:email/detach``, ``list``;
  ``inbounds/get/:id`` returns ``settings`` as an object. ``switch_api`` upgrades the panel
  in place, keeping its data.
- Auth: ``POST {base}login`` (form) sets the ``3x-ui`` session cookie; sessions expire
  (``session_ttl`` or ``expire_sessions()``). ``auth="token"`` also accepts
  ``Authorization: Bearer <api_token>`` (v3.0+). With ``csrf`` (default for the clients
  API) the login and every unsafe session request need the ``X-CSRF-Token`` from
  ``GET {base}csrf-token``, else 403. Unauthenticated API calls get **404**.
- Every error is HTTP 200 ``{"success": false, "msg": ...}``; ``totalGB`` in bytes,
  ``expiryTime`` in milliseconds; field types checked as Go's JSON binding would.

- Traffic: one ``client_traffics`` row per email (``traffics``): ``up``, ``down``,
  ``allTime``, ``total``, ``expiryTime`` and ``enable``, made when a client is added and
  dropped when it is deleted. Adding or updating a client copies its ``enable``,
  ``totalGB`` and ``expiryTime`` into the row (``UpdateClientStat``); the panel's job that
  disables depleted and expired clients (``disableInvalidClients``) runs before every API
  request, setting the row's ``enable`` false and leaving the client's own alone.
  ``inbounds/getClientTraffics/:email`` (v2.x, v3.0) and ``clients/traffic/:email``
  (v3.1+) read the row; ``inbounds/:id/resetClientTraffic/:email`` and
  ``clients/resetTraffic/:email`` set ``up`` and ``down`` to 0 and ``enable`` true.
  ``use_traffic`` is a client moving bytes.
- The subscription server (on its own port on the real panel, here under ``sub_path`` of
  the same address): ``GET {sub_path}<subId>`` gives the link of every client with that
  ``subId`` on an enabled inbound, enabled or not, one per line and base64 encoded (the
  ``subEncrypt`` default), with ``subscription-userinfo``; 400 "Error!" when there is none.

Not modelled: Xray itself, the JSON and Clash subscription formats, 2FA, API token scopes,
inbound management beyond ``add_inbound``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._base import FakePeer

Api = Literal["inbounds", "clients"]
Auth = Literal["cookie", "token"]

COOKIE = "3x-ui"
WENT_WRONG = "Something went wrong"

_INT_FIELDS = ("limitIp", "totalGB", "expiryTime", "tgId", "reset")
_STR_FIELDS = ("id", "email", "subId", "password", "auth", "flow", "comment", "security")
_KEY_FIELD = {"trojan": "password", "shadowsocks": "email", "hysteria": "auth", "hysteria2": "auth"}


class _Refused(Exception):
    """An error the panel reports as ``success: false``."""


@dataclass
class _Session:
    csrf: str
    logged_in: bool = False
    expires_at: float | None = None


Handler = Callable[..., Awaitable[Response]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _key_field(protocol: str) -> str:
    return _KEY_FIELD.get(protocol, "id")


class FakeXui(FakePeer):
    name = "xui"

    def __init__(
        self,
        *,
        api: Api = "inbounds",
        auth: Auth = "cookie",
        username: str = "admin",
        password: str = "fake-xui-password",
        api_token: str = "fake-xui-api-token",
        base_path: str = "/",
        csrf: bool | None = None,
        shared_emails: bool = False,
        session_ttl: float | None = None,
        inbounds: Mapping[int, str] | None = None,
        sub_path: str = "/sub/",
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        if api not in ("inbounds", "clients"):
            raise ValueError(f"unknown api {api!r}")
        if auth not in ("cookie", "token"):
            raise ValueError(f"unknown auth {auth!r}")
        self.api: Api = api
        self.auth: Auth = auth
        self.username = username
        self.password = password
        self.api_token = api_token
        self.base_path = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        self.csrf = (api == "clients") if csrf is None else csrf
        self.shared_emails = shared_emails
        self.session_ttl = session_ttl
        self.sub_path = "/" + sub_path.strip("/") + "/"
        self.inbounds: dict[int, dict[str, Any]] = {}
        self.traffics: dict[str, dict[str, Any]] = {}
        """``client_traffics`` rows by lower-case email."""
        self.sessions: dict[str, _Session] = {}
        self.logins = 0
        """Successful logins."""
        self._record_ids: dict[str, int] = {}
        self._next_record_id = itertools.count(1)
        self._before: list[tuple[str, Callable[[], None]]] = []
        for inbound_id, protocol in ({1: "vless"} if inbounds is None else inbounds).items():
            self.add_inbound(inbound_id, protocol)

    # -- control from tests ----------------------------------------------------------

    def add_inbound(
        self,
        inbound_id: int,
        protocol: str = "vless",
        *,
        seed_client: bool = True,
        method: str = "2022-blake3-aes-256-gcm",
    ) -> None:
        """An inbound, with one client of the operator's own unless ``seed_client=False``
        (panels up to v3.0 cannot delete an inbound's last client)."""
        settings: dict[str, Any] = {"clients": []}
        if protocol == "vless":
            settings.update(decryption="none", fallbacks=[])
        elif protocol == "shadowsocks":
            settings.update(method=method, password="c2VydmVyLWtleQ==", network="tcp,udp")
        self.inbounds[inbound_id] = {
            "id": inbound_id,
            "up": 0,
            "down": 0,
            "total": 0,
            "remark": f"inbound {inbound_id}",
            "enable": True,
            "expiryTime": 0,
            "listen": "",
            "port": 20000 + inbound_id,
            "protocol": protocol,
            "settings": json.dumps(settings, indent=2),
            "streamSettings": "{}",
            "tag": f"inbound-{20000 + inbound_id}",
            "sniffing": "{}",
        }
        if seed_client:
            seed = self._with_credentials({"email": f"seed-{inbound_id}", "enable": True}, protocol)
            seed.update(limitIp=0, totalGB=0, expiryTime=0, tgId=0, subId=_random_sub_id())
            self._set_clients(inbound_id, [seed])
            self._add_traffic(inbound_id, seed)

    def put_client(self, inbound_id: int, client: Mapping[str, Any]) -> None:
        """Store a client as if made in the panel's UI (no checks)."""
        clients = self.clients(inbound_id)
        clients.append(dict(client))
        self._set_clients(inbound_id, clients)
        self._add_traffic(inbound_id, client)

    def use_traffic(self, email: str, data_bytes: int) -> None:
        """The client moved ``data_bytes`` more bytes (counted as download)."""
        row = self.traffics[email.lower()]
        row["down"] += data_bytes
        row["allTime"] += data_bytes

    def remove_client(self, inbound_id: int, email: str) -> None:
        """Take a client off an inbound as if done in the panel's UI (no checks)."""
        kept = [c for c in self.clients(inbound_id) if str(c.get("email", "")) != email]
        self._set_clients(inbound_id, kept)

    def clients(self, inbound_id: int) -> list[dict[str, Any]]:
        settings = json.loads(self.inbounds[inbound_id]["settings"])
        return list(settings.get("clients") or [])

    def find(self, email: str) -> list[tuple[int, dict[str, Any]]]:
        """Every (inbound id, client) with this email, panel-wide."""
        return [
            (inbound_id, client)
            for inbound_id in self.inbounds
            for client in self.clients(inbound_id)
            if str(client.get("email", "")).lower() == email.lower()
        ]

    def client(self, email: str) -> dict[str, Any] | None:
        found = self.find(email)
        return found[0][1] if found else None

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def switch_api(self, api: Api, *, csrf: bool | None = None) -> None:
        """Upgrade (or downgrade) the panel in place; data and sessions survive."""
        self.api = api
        if csrf is not None:
            self.csrf = csrf

    def before_next(self, path_suffix: str, action: Callable[[], None]) -> None:
        """Run ``action`` just before the next API request whose path ends with
        ``path_suffix`` is handled: another process acting in between."""
        self._before.append((path_suffix, action))

    # -- storage ---------------------------------------------------------------------

    def _set_clients(self, inbound_id: int, clients: list[dict[str, Any]]) -> None:
        inbound = self.inbounds[inbound_id]
        settings = json.loads(inbound["settings"])
        settings["clients"] = clients
        inbound["settings"] = json.dumps(settings, indent=2)

    def _add_traffic(self, inbound_id: int, client: Mapping[str, Any]) -> None:
        """``AddClientStat``: a row for a new email; an existing one is left as it is."""
        email = str(client.get("email", ""))
        self.traffics.setdefault(
            email.lower(),
            {
                "inboundId": inbound_id,
                "email": email,
                "up": 0,
                "down": 0,
                "allTime": 0,
                "lastOnline": 0,
                "reset": client.get("reset", 0),
            },
        )
        self._copy_stat(email, client)

    def _copy_stat(self, email: str, client: Mapping[str, Any]) -> None:
        """``UpdateClientStat``: the client's own enable, total and expiry into its row."""
        row = self.traffics.pop(email.lower(), None)
        if row is None:
            return
        row.update(
            email=client.get("email", email),
            enable=client.get("enable", True),
            total=client.get("totalGB", 0),
            expiryTime=client.get("expiryTime", 0),
            reset=client.get("reset", 0),
        )
        self.traffics[str(row["email"]).lower()] = row

    def _drop_traffic(self, email: str) -> None:
        if not self.find(email):
            self.traffics.pop(email.lower(), None)

    def _disable_invalid_clients(self) -> None:
        now = _now_ms()
        for row in self.traffics.values():
            depleted = row["total"] > 0 and row["up"] + row["down"] >= row["total"]
            expired = row["expiryTime"] > 0 and row["expiryTime"] <= now
            if row["enable"] and (depleted or expired):
                row["enable"] = False

    def _reset_traffic(self, email: str) -> None:
        row = self.traffics.get(email.lower())
        if row is None:
            raise _Refused(f"record not found for {email}")
        row.update(up=0, down=0, enable=True)

    def _traffic_out(self, email: str) -> dict[str, Any]:
        row = self.traffics.get(email.lower())
        if row is None:
            raise _Refused(f"Inbound Not Found For Email: {email}")
        client = self.client(email) or {}
        return {
            "id": 1,
            **row,
            "uuid": client.get("id", ""),
            "subId": client.get("subId", ""),
        }

    def _inbound(self, inbound_id: int) -> dict[str, Any]:
        if inbound_id not in self.inbounds:
            raise _Refused("record not found")
        return self.inbounds[inbound_id]

    def _with_credentials(self, client: dict[str, Any], protocol: str) -> dict[str, Any]:
        if protocol in ("vless", "vmess") and not client.get("id"):
            client["id"] = str(uuid.uuid4())
        elif protocol in ("trojan", "shadowsocks") and not client.get("password"):
            client["password"] = uuid.uuid4().hex
        elif protocol in ("hysteria", "hysteria2") and not client.get("auth"):
            client["auth"] = uuid.uuid4().hex
        return client

    def _record(self, email: str) -> dict[str, Any]:
        found = self.find(email)
        if not found:
            raise _Refused("record not found")
        client = found[0][1]
        key = str(client["email"]).lower()
        if key not in self._record_ids:
            self._record_ids[key] = next(self._next_record_id)
        record = {
            "id": self._record_ids[key],
            "email": client.get("email", ""),
            "subId": client.get("subId", ""),
            "uuid": client.get("id", ""),
            "password": client.get("password", ""),
            "auth": client.get("auth", ""),
            "flow": client.get("flow", ""),
            "security": client.get("security", ""),
            "reverse": None,
            "limitIp": client.get("limitIp", 0),
            "totalGB": client.get("totalGB", 0),
            "expiryTime": client.get("expiryTime", 0),
            "enable": client.get("enable", True),
            "tgId": client.get("tgId", 0),
            "comment": client.get("comment", ""),
            "reset": client.get("reset", 0),
            "createdAt": client.get("created_at", 0),
            "updatedAt": client.get("updated_at", 0),
        }
        return {"client": record, "inboundIds": sorted(i for i, _ in found)}

    # -- HTTP ------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/{path:path}", self._dispatch, methods=["GET", "POST"])]

    def _table(self) -> list[tuple[str, str, Handler, Iterable[Api]]]:
        both: tuple[Api, ...] = ("inbounds", "clients")
        old: tuple[Api, ...] = ("inbounds",)
        new: tuple[Api, ...] = ("clients",)
        return [
            ("GET", r"server/status", self._status, both),
            ("GET", r"inbounds/list", self._list_inbounds, both),
            ("GET", r"inbounds/get/(?P<inbound_id>\d+)", self._get_inbound, both),
            ("GET", r"inbounds/getClientTraffics/(?P<email>[^/]+)", self._traffics, old),
            (
                "POST",
                r"inbounds/(?P<inbound_id>\d+)/resetClientTraffic/(?P<email>[^/]+)",
                self._reset_client_traffic,
                old,
            ),
            ("POST", r"inbounds/addClient", self._add_client, old),
            ("POST", r"inbounds/updateClient/(?P<client_id>[^/]+)", self._update_client, old),
            (
                "POST",
                r"inbounds/(?P<inbound_id>\d+)/delClient/(?P<client_id>[^/]+)",
                self._del_client,
                old,
            ),
            (
                "POST",
                r"inbounds/(?P<inbound_id>\d+)/delClientByEmail/(?P<email>[^/]+)",
                self._del_client_by_email,
                old,
            ),
            ("GET", r"clients/list", self._clients_list, new),
            ("GET", r"clients/get/(?P<email>[^/]+)", self._clients_get, new),
            ("GET", r"clients/traffic/(?P<email>[^/]+)", self._clients_traffic, new),
            ("POST", r"clients/resetTraffic/(?P<email>[^/]+)", self._clients_reset, new),
            ("POST", r"clients/add", self._clients_add, new),
            ("POST", r"clients/update/(?P<email>[^/]+)", self._clients_update, new),
            ("POST", r"clients/del/(?P<email>[^/]+)", self._clients_del, new),
            ("POST", r"clients/(?P<email>[^/]+)/attach", self._clients_attach, new),
            ("POST", r"clients/(?P<email>[^/]+)/detach", self._clients_detach, new),
        ]

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith(self.sub_path) and request.method == "GET":
            return self._subscription(path[len(self.sub_path) :])
        if not path.startswith(self.base_path):
            return Response(status_code=404)
        rel = path[len(self.base_path) :]
        if rel == "csrf-token" and request.method == "GET" and self.csrf:
            return self._csrf_token(request)
        if rel == "login" and request.method == "POST":
            return await self._login(request)
        if not rel.startswith("panel/api/"):
            return Response(status_code=404)
        if not self._authorized(request):
            hidden = 401 if self.api == "clients" and _is_xhr(request) else 404
            return Response(status_code=hidden)
        if self._csrf_refused(request):
            return Response(status_code=403)
        route = rel[len("panel/api/") :]
        self._disable_invalid_clients()
        for index, (suffix, action) in enumerate(self._before):
            if route.endswith(suffix):
                del self._before[index]
                action()
                break
        for method, pattern, handler, apis in self._table():
            if method != request.method or self.api not in apis:
                continue
            match = re.fullmatch(pattern, route)
            if match is None:
                continue
            try:
                return await handler(request, **match.groupdict())
            except _Refused as exc:
                return _reply(False, f"{WENT_WRONG} ({exc})")
        return Response(status_code=404)

    # -- auth ------------------------------------------------------------------------

    def _session(self, request: Request) -> _Session | None:
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid) if sid else None
        if session is None:
            return None
        if session.expires_at is not None and time.monotonic() > session.expires_at:
            self.sessions.pop(sid or "", None)
            return None
        return session

    def _bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return (
            self.auth == "token"
            and header.startswith("Bearer ")
            and secrets.compare_digest(header[len("Bearer ") :], self.api_token)
        )

    def _authorized(self, request: Request) -> bool:
        if self._bearer_ok(request):
            return True
        session = self._session(request)
        return session is not None and session.logged_in

    def _csrf_refused(self, request: Request) -> bool:
        if not self.csrf or request.method in ("GET", "HEAD") or self._bearer_ok(request):
            return False
        session = self._session(request)
        sent = request.headers.get("x-csrf-token", "")
        return session is None or not secrets.compare_digest(sent, session.csrf)

    def _new_session(self) -> tuple[str, _Session]:
        sid = secrets.token_urlsafe(24)
        expires = time.monotonic() + self.session_ttl if self.session_ttl else None
        session = _Session(csrf=secrets.token_urlsafe(32), expires_at=expires)
        self.sessions[sid] = session
        return sid, session

    def _set_cookie(self, response: Response, sid: str) -> None:
        response.set_cookie(COOKIE, sid, path=self.base_path, httponly=True, samesite="lax")

    def _csrf_token(self, request: Request) -> Response:
        session = self._session(request)
        sid = request.cookies.get(COOKIE, "")
        if session is None:
            sid, session = self._new_session()
        response = JSONResponse({"success": True, "obj": session.csrf})
        self._set_cookie(response, sid)
        return response

    async def _login(self, request: Request) -> Response:
        if self.csrf and self._csrf_refused(request):
            return Response(status_code=403)
        form = await _form_body(request)
        username, password = form.get("username"), form.get("password")
        if not username:
            return _reply(False, "Please enter username")
        if not password:
            return _reply(False, "Please enter password")
        if not (
            secrets.compare_digest(str(username), self.username)
            and secrets.compare_digest(str(password), self.password)
        ):
            return _reply(False, "Wrong username or password")
        session = self._session(request)
        sid = request.cookies.get(COOKIE, "")
        if session is None:
            sid, session = self._new_session()
        session.logged_in = True
        self.logins += 1
        response = _reply(True, "Login successful")
        self._set_cookie(response, sid)
        return response

    # -- shared routes ---------------------------------------------------------------

    async def _status(self, request: Request) -> Response:
        return _reply(True, obj={"xray": {"state": "running", "version": "25.0.0"}})

    def _inbound_out(self, inbound: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(inbound)
        if self.api == "clients":  # v3.1+ emits settings as nested JSON
            for field in ("settings", "streamSettings", "sniffing"):
                out[field] = json.loads(out[field])
        return out

    async def _list_inbounds(self, request: Request) -> Response:
        return _reply(True, obj=[self._inbound_out(i) for i in self.inbounds.values()])

    async def _get_inbound(self, request: Request, inbound_id: str) -> Response:
        return _reply(True, obj=self._inbound_out(self._inbound(int(inbound_id))))

    # -- inbounds API (v2.x, v3.0) ---------------------------------------------------

    async def _traffics(self, request: Request, email: str) -> Response:
        try:
            return _reply(True, obj=self._traffic_out(email))
        except _Refused as exc:
            return _reply(False, f"Error getting traffics ({exc})")

    async def _reset_client_traffic(
        self, request: Request, inbound_id: str, email: str
    ) -> Response:
        self._inbound(int(inbound_id))
        self._reset_traffic(email)
        return _reply(True, "Client traffic reset")

    async def _inbound_payload(self, request: Request) -> tuple[int, list[dict[str, Any]]]:
        """``{id, settings}`` as JSON or a form, the way gin's ``ShouldBind`` takes it."""
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await _json_body(request)
        else:
            body = dict(await _form_body(request))
        inbound_id = body.get("id")
        if isinstance(inbound_id, str) and inbound_id.isdigit():
            inbound_id = int(inbound_id)
        if not isinstance(inbound_id, int) or isinstance(inbound_id, bool):
            raise _Refused("json: cannot unmarshal id")
        settings = body.get("settings")
        if not isinstance(settings, str):
            raise _Refused("json: cannot unmarshal object into Go struct field Inbound.settings")
        try:
            clients = json.loads(settings).get("clients")
        except (ValueError, AttributeError):
            raise _Refused("invalid character in settings") from None
        if not isinstance(clients, list) or not clients:
            raise _Refused("setting is null")
        return inbound_id, [_checked_client(c) for c in clients]

    def _duplicate(self, client: Mapping[str, Any], inbound_id: int) -> bool:
        email = str(client.get("email", ""))
        if not email:
            return False
        for other_inbound, other in self.find(email):
            same_sub = bool(client.get("subId")) and other.get("subId") == client.get("subId")
            if self.shared_emails and same_sub and other_inbound != inbound_id:
                continue
            return True
        return False

    async def _add_client(self, request: Request) -> Response:
        inbound_id, new = await self._inbound_payload(request)
        for client in new:
            if self._duplicate(client, inbound_id):
                raise _Refused(f"Duplicate email: {client['email']}")
        inbound = self._inbound(inbound_id)
        protocol = inbound["protocol"]
        for client in new:
            if not client.get(_key_field(protocol)):
                raise _Refused("empty client ID")
        clients = self.clients(inbound_id)
        now = _now_ms()
        for client in new:
            client.setdefault("created_at", now)
            client["updated_at"] = now
            clients.append(client)
        self._set_clients(inbound_id, clients)
        for client in new:
            self._add_traffic(inbound_id, client)
        return _reply(True, "Client(s) added Successfully")

    async def _update_client(self, request: Request, client_id: str) -> Response:
        inbound_id, new = await self._inbound_payload(request)
        inbound = self._inbound(inbound_id)
        key = _key_field(inbound["protocol"])
        clients = self.clients(inbound_id)
        index = next((i for i, c in enumerate(clients) if c.get(key) == client_id), -1)
        replacement = new[0]
        if index < 0 or not replacement.get(key):
            raise _Refused("empty client ID")
        old = clients[index]
        # As the panel: any change, even of case, is checked against every email (itself too).
        renamed = replacement.get("email", "") != old.get("email", "")
        if renamed and self._duplicate(replacement, inbound_id):
            raise _Refused(f"Duplicate email: {replacement['email']}")
        replacement["created_at"] = old.get("created_at", _now_ms())
        replacement["updated_at"] = _now_ms()
        clients[index] = replacement
        self._set_clients(inbound_id, clients)
        self._copy_stat(str(old.get("email", "")), replacement)
        return _reply(True, "Client updated Successfully")

    def _remove(
        self, inbound_id: int, match: Callable[[dict[str, Any]], bool], missing: str
    ) -> None:
        self._inbound(inbound_id)
        clients = self.clients(inbound_id)
        kept = [c for c in clients if not match(c)]
        if len(kept) == len(clients):
            raise _Refused(missing)
        if not kept and self.api == "inbounds":
            raise _Refused("no client remained in Inbound")
        self._set_clients(inbound_id, kept)

    async def _del_client(self, request: Request, inbound_id: str, client_id: str) -> Response:
        key = _key_field(self._inbound(int(inbound_id))["protocol"])
        emails = [
            str(c.get("email", ""))
            for c in self.clients(int(inbound_id))
            if c.get(key) == client_id
        ]
        self._remove(
            int(inbound_id),
            lambda c: c.get(key) == client_id,
            f"Client Not Found In Inbound For ID: {client_id}",
        )
        for email in emails:
            self._drop_traffic(email)
        return _reply(True, "Client deleted Successfully")

    async def _del_client_by_email(self, request: Request, inbound_id: str, email: str) -> Response:
        self._remove(
            int(inbound_id),
            lambda c: c.get("email") == email,
            f"client with email {email} not found",
        )
        self._drop_traffic(email)
        return _reply(True, "Client deleted Successfully")

    # -- clients API (v3.1+) ---------------------------------------------------------

    async def _clients_list(self, request: Request) -> Response:
        emails: dict[str, str] = {}
        for inbound_id in self.inbounds:
            for client in self.clients(inbound_id):
                emails.setdefault(str(client.get("email", "")).lower(), str(client.get("email")))
        rows = []
        for email in emails.values():
            found = self._record(email)
            rows.append({**found["client"], "inboundIds": found["inboundIds"]})
        return _reply(True, obj=rows)

    async def _clients_get(self, request: Request, email: str) -> Response:
        try:
            return _reply(True, obj=self._record(email))
        except _Refused as exc:
            return _reply(False, f"Failed to obtain ({exc})")

    async def _clients_traffic(self, request: Request, email: str) -> Response:
        try:
            return _reply(True, obj=self._traffic_out(email))
        except _Refused as exc:
            return _reply(False, f"Error getting traffics ({exc})")

    async def _clients_reset(self, request: Request, email: str) -> Response:
        if not self.find(email):
            raise _Refused("record not found")
        self._reset_traffic(email)
        return _reply(True, "Client traffic reset")

    async def _clients_add(self, request: Request) -> Response:
        body = await _json_body(request)
        client = _checked_client(body.get("client"))
        inbound_ids = body.get("inboundIds")
        if not str(client.get("email", "")).strip():
            raise _Refused("client email is required")
        if not isinstance(inbound_ids, list) or not inbound_ids:
            raise _Refused("at least one inbound is required")
        client.setdefault("subId", "")
        if not client["subId"]:
            client["subId"] = str(uuid.uuid4())
        client["enable"] = True
        existing = self.find(client["email"])
        if existing and existing[0][1].get("subId") != client["subId"]:
            raise _Refused(f"email already in use: {client['email']}")
        for inbound_id in inbound_ids:
            self._attach(dict(client), int(inbound_id))
        return _reply(True, "Client(s) added Successfully")

    def _attach(self, client: dict[str, Any], inbound_id: int) -> None:
        inbound = self._inbound(inbound_id)
        if any(i == inbound_id for i, _ in self.find(client["email"])):
            return
        self._with_credentials(client, inbound["protocol"])
        now = _now_ms()
        client.setdefault("created_at", now)
        client["updated_at"] = now
        clients = self.clients(inbound_id)
        clients.append(client)
        self._set_clients(inbound_id, clients)
        self._add_traffic(inbound_id, client)

    async def _clients_update(self, request: Request, email: str) -> Response:
        updated = _checked_client(await _json_body(request))
        found = self.find(email)
        if not found:
            raise _Refused("record not found")
        if not str(updated.get("email", "")).strip():
            raise _Refused("client email is required")
        if str(updated["email"]).lower() != email.lower() and self.find(updated["email"]):
            raise _Refused(f"Duplicate email: {updated['email']}")
        if not updated.get("subId"):
            updated["subId"] = found[0][1].get("subId", "")
        for inbound_id, old in found:
            replacement = self._with_credentials(
                dict(updated), self.inbounds[inbound_id]["protocol"]
            )
            replacement["created_at"] = old.get("created_at", _now_ms())
            replacement["updated_at"] = _now_ms()
            clients = [replacement if c == old else c for c in self.clients(inbound_id)]
            self._set_clients(inbound_id, clients)
        self._copy_stat(email, updated)
        return _reply(True, "Client updated Successfully")

    async def _clients_del(self, request: Request, email: str) -> Response:
        found = self.find(email)
        if not found:
            raise _Refused("record not found")
        for inbound_id, _ in found:
            self._remove(inbound_id, lambda c: str(c.get("email", "")).lower() == email.lower(), "")
        self._record_ids.pop(email.lower(), None)
        self._drop_traffic(email)
        return _reply(True, "Client deleted Successfully")

    async def _clients_attach(self, request: Request, email: str) -> Response:
        found = self.find(email)
        if not found:
            raise _Refused("record not found")
        body = await _json_body(request)
        client = {k: v for k, v in found[0][1].items() if k not in ("created_at", "updated_at")}
        for inbound_id in body.get("inboundIds") or []:
            self._attach(dict(client), int(inbound_id))
        return _reply(True, "Client(s) added Successfully")

    async def _clients_detach(self, request: Request, email: str) -> Response:
        if not self.find(email):
            raise _Refused("record not found")
        body = await _json_body(request)
        for inbound_id in body.get("inboundIds") or []:
            self._remove(
                int(inbound_id), lambda c: str(c.get("email", "")).lower() == email.lower(), ""
            )
        return _reply(True, "Client deleted Successfully")

    # -- the subscription server ------------------------------------------------------

    def _subscription(self, sub_id: str) -> Response:
        links: list[str] = []
        rows: list[dict[str, Any]] = []
        for inbound in self.inbounds.values():
            if not inbound["enable"]:
                continue
            for client in self.clients(inbound["id"]):
                if client.get("subId") == sub_id:
                    links.append(_link(inbound, client))
                    row = self.traffics.get(str(client.get("email", "")).lower())
                    if row is not None:
                        rows.append(row)
        if not links:
            return Response("Error!", 400, media_type="text/plain")
        info = {
            "upload": sum(r["up"] for r in rows),
            "download": sum(r["down"] for r in rows),
            "total": rows[0]["total"] if rows else 0,
            "expire": (rows[0]["expiryTime"] // 1000) if rows else 0,
        }
        body = "".join(link + "\n" for link in links)
        return Response(
            base64.b64encode(body.encode()).decode(),
            media_type="text/plain",
            headers={
                "subscription-userinfo": "; ".join(f"{k}={v}" for k, v in info.items()),
                "profile-update-interval": "12",
            },
        )


# -- helpers -----------------------------------------------------------------------------

SERVER_ADDRESS = "203.0.113.30"


def _link(inbound: Mapping[str, Any], client: Mapping[str, Any]) -> str:
    protocol, port = inbound["protocol"], inbound["port"]
    remark = quote(f"{inbound['remark']}-{client.get('email', '')}")
    if protocol == "vmess":
        config = {"v": "2", "ps": remark, "add": SERVER_ADDRESS, "port": port, "id": client["id"]}
        return "vmess://" + base64.b64encode(json.dumps(config).encode()).decode()
    if protocol == "shadowsocks":
        method = json.loads(inbound["settings"]).get("method", "")
        secret = f"{method}:{client.get('password', '')}".encode()
        return f"ss://{base64.urlsafe_b64encode(secret).decode().rstrip('=')}@{SERVER_ADDRESS}:{port}#{remark}"
    if protocol == "trojan":
        return f"trojan://{client.get('password', '')}@{SERVER_ADDRESS}:{port}?type=tcp#{remark}"
    if protocol in ("hysteria", "hysteria2"):
        return f"hysteria2://{client.get('auth', '')}@{SERVER_ADDRESS}:{port}#{remark}"
    flow = client.get("flow", "")
    return (
        f"vless://{client.get('id', '')}@{SERVER_ADDRESS}:{port}"
        f"?type=tcp&security=reality&flow={flow}#{remark}"
    )


def _reply(success: bool, msg: str = "", obj: Any = None) -> JSONResponse:
    return JSONResponse({"success": success, "msg": msg, "obj": obj})


def _is_xhr(request: Request) -> bool:
    return request.headers.get("x-requested-with", "") == "XMLHttpRequest"


def _random_sub_id() -> str:
    return secrets.token_hex(8)


async def _form_body(request: Request) -> dict[str, str]:
    """A urlencoded form, without starlette's optional multipart dependency."""
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _Refused("invalid character looking for beginning of value") from None
    if not isinstance(body, dict):
        raise _Refused("json: cannot unmarshal array into Go value")
    return body


def _checked_client(value: Any) -> dict[str, Any]:
    """A client as Go's JSON binding would accept it into ``model.Client``."""
    if not isinstance(value, dict):
        raise _Refused("json: cannot unmarshal into Go struct field of type model.Client")
    client = dict(value)
    for field in _INT_FIELDS:
        item = client.get(field, 0)
        if isinstance(item, bool) or not isinstance(item, int):
            raise _Refused(
                f"json: cannot unmarshal into Go struct field Client.{field} of type int64"
            )
    for field in _STR_FIELDS:
        if field in client and not isinstance(client[field], str):
            raise _Refused(
                f"json: cannot unmarshal into Go struct field Client.{field} of type string"
            )
    if "enable" in client and not isinstance(client["enable"], bool):
        raise _Refused("json: cannot unmarshal into Go struct field Client.enable of type bool")
    return client
