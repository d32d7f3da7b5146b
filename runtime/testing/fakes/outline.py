"""A fake Outline server management API: access keys in memory, served over HTTPS.

Modelled on Outline's ``api.yml`` and its restify service (server 1.10 and later):

- HTTPS only, with a self-signed certificate (``self_signed_certificate`` makes one the
  way the installer does, with the ``openssl`` command), and the API under a secret path
  prefix: ``api_url`` is ``https://127.0.0.1:<port>/<secret>``, ``cert_sha256`` the
  certificate's fingerprint as the installer prints it;
- any path outside the prefix, or not a route, is 404
  ``{"code": "ResourceNotFound", "message": "<path> does not exist"}`` (the message echoes
  the path, secret included, as the real server's does); a route with another method is
  405 ``MethodNotAllowed``;
- ``GET /server``; ``PUT /name``; ``PUT|DELETE /server/access-key-data-limit``;
- ``POST /access-keys`` creates with the next free decimal id (``id`` in the body is 400);
  ``PUT /access-keys/{id}`` creates with the caller's id: 201, or 409
  ``{"code": "Conflict", "message": "Access key \\"<id>\\" conflict"}`` when it exists;
  ``GET /access-keys``; ``GET|DELETE /access-keys/{id}`` (204 on delete), 404
  ``{"code": "NotFound", "message": "Access key \\"<id>\\" not found"}`` when missing;
- ``PUT /access-keys/{id}/name``; ``PUT|DELETE /access-keys/{id}/data-limit``
  (``{"limit": {"bytes": N}}``, N a non-negative integer, else 400; a PUT without
  ``limit`` removes the limit, as restify's validation lets it);
- a key created with a ``password`` another key has is 409 ``Conflict`` (checked after
  the id), as Outline keeps one password per key;
- ``GET /metrics/transfer``: the bytes the test recorded with ``transfer`` (or
  ``use_traffic``), by key id, deleted keys included (the server's Prometheus keeps their
  series; it counts the last 30 days, the fake counts everything). A key is blocked
  (``blocked``) when its usage reaches its own limit or else the server default, so a
  0-byte limit blocks it at once (the real server enforces this within an hour, and at
  once when a limit is set);
- errors are restify's shape ``{"code", "message"}``; parameters are the JSON body merged
  under the path parameters (``mapParams``); a bad cipher is 400 ``InvalidArgument``.

Not modelled: Shadowsocks itself, the 30-day window of usage, port availability, the
experimental metrics, ``/metrics/enabled`` and the ``hostname-for-access-keys`` /
``port-for-new-access-keys`` settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._base import FakePeer

CIPHERS = ("chacha20-ietf-poly1305", "aes-256-gcm", "aes-192-gcm", "aes-128-gcm")
DEFAULT_METHOD = "chacha20-ietf-poly1305"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


@dataclass(frozen=True)
class Certificate:
    certfile: str
    keyfile: str
    sha256: str
    """Upper-case hex without colons, as the installer prints ``certSha256``."""


def fingerprint_of(certfile: str | Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(Path(certfile).read_text())
    return hashlib.sha256(der).hexdigest().upper()


def self_signed_certificate(
    directory: str | Path, *, common_name: str = "127.0.0.1", stem: str = "outline"
) -> Certificate:
    """A self-signed certificate and key in ``directory``, made like the installer's
    (``openssl req -x509``; an EC key here, for speed). Needs the ``openssl`` command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    folder = Path(directory)
    certfile, keyfile = folder / f"{stem}.crt", folder / f"{stem}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-nodes", "-days", "36500",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", f"/CN={common_name}",
            "-keyout", str(keyfile), "-out", str(certfile),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(str(certfile), str(keyfile), fingerprint_of(certfile))


class OutlineError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _not_found(key_id: str) -> OutlineError:
    return OutlineError(404, "NotFound", f'Access key "{key_id}" not found')


def _data_limit(value: object) -> dict[str, int] | None:
    if value is None:
        return None
    data = value.get("bytes") if isinstance(value, dict) else None
    if not isinstance(data, int) or isinstance(data, bool) or data < 0:
        raise OutlineError(400, "InvalidArgument", "`limit.bytes` must be an non-negative integer")
    return {"bytes": data}


def _string(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutlineError(
            400, "InvalidArgument", f"Expected a string for {name}, instead got {value!r}"
        )
    return value


Handler = Callable[[dict[str, Any]], Awaitable[Response]]


class FakeOutline(FakePeer):
    name = "outline"

    def __init__(
        self,
        *,
        certfile: str,
        keyfile: str,
        secret: str | None = None,
        hostname: str = "127.0.0.1",
        access_key_port: int = 43210,
        server_name: str = "Outline Server",
        version: str = "1.12.3",
    ) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.secret = secret or secrets.token_urlsafe(16)
        self.cert_sha256 = fingerprint_of(certfile)
        self.hostname = hostname
        self.access_key_port = access_key_port
        self.server_name = server_name
        self.version = version
        self.server_id = "7fda0079-5317-4e5a-bb41-5a431dddae21"
        self.keys: dict[str, dict[str, Any]] = {}
        """Stored keys by id: ``id``, ``name``, ``password``, ``port``, ``method``, and
        ``dataLimit`` when the key has its own."""
        self.default_limit: dict[str, int] | None = None
        self.transferred: dict[str, int] = {}
        self._next_id = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/server"), self._get_server),
            ("PUT", re.compile(r"/name"), self._rename_server),
            ("PUT", re.compile(r"/server/access-key-data-limit"), self._set_default_limit),
            ("DELETE", re.compile(r"/server/access-key-data-limit"), self._remove_default_limit),
            ("POST", re.compile(r"/access-keys"), self._post_key),
            ("GET", re.compile(r"/access-keys"), self._list_keys),
            ("PUT", re.compile(r"/access-keys/(?P<id>[^/]+)"), self._put_key),
            ("GET", re.compile(r"/access-keys/(?P<id>[^/]+)"), self._get_key),
            ("DELETE", re.compile(r"/access-keys/(?P<id>[^/]+)"), self._delete_key),
            ("PUT", re.compile(r"/access-keys/(?P<id>[^/]+)/name"), self._rename_key),
            ("PUT", re.compile(r"/access-keys/(?P<id>[^/]+)/data-limit"), self._set_limit),
            ("DELETE", re.compile(r"/access-keys/(?P<id>[^/]+)/data-limit"), self._remove_limit),
            ("GET", re.compile(r"/metrics/transfer"), self._transfer),
        ]

    # -- driving it from a test -------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What the installer prints as ``apiUrl`` (once ``running``)."""
        return f"{self.url}/{self.secret}"

    def transfer(self, key_id: str, data_bytes: int) -> None:
        """The key's user moved ``data_bytes`` more bytes."""
        self.transferred[key_id] = self.transferred.get(key_id, 0) + data_bytes

    def use_traffic(self, name: str, data_bytes: int) -> None:
        """The user of the key named ``name`` moved ``data_bytes`` more bytes."""
        [key_id] = [k["id"] for k in self.keys.values() if k["name"] == name]
        self.transfer(key_id, data_bytes)

    def key_named(self, name: str) -> dict[str, Any]:
        """The one stored key named ``name``."""
        [key] = [k for k in self.keys.values() if k["name"] == name]
        return key

    def blocked(self, key_id: str) -> bool:
        """Whether the key is over its data limit (its own, else the server default)."""
        key = self.keys[key_id]
        limit = key.get("dataLimit") or self.default_limit
        return limit is not None and self.transferred.get(key_id, 0) >= limit["bytes"]

    def add_key(self, key_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """A key made outside the bot (the Manager app, another tool)."""
        return self._create(key_id, fields)

    # -- the API ----------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/{rest:path}", self._dispatch, methods=METHODS)]

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        prefix = f"/{self.secret}"
        # Constant time, like the server's prefix filter.
        head = path[: len(prefix)].encode()
        if not (len(path) >= len(prefix) and hmac.compare_digest(head, prefix.encode())):
            return self._error(OutlineError(404, "ResourceNotFound", f"{path} does not exist"))
        route = path[len(prefix) :].rstrip("/") or "/"
        matched_path = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(route)
            if match is None:
                continue
            matched_path = True
            if method != request.method:
                continue
            try:
                params = await self._params(request)
                params.update(match.groupdict())
                return await handler(params)
            except OutlineError as exc:
                return self._error(exc)
        if matched_path:
            return self._error(
                OutlineError(405, "MethodNotAllowed", f"{request.method} is not allowed")
            )
        return self._error(OutlineError(404, "ResourceNotFound", f"{path} does not exist"))

    @staticmethod
    async def _params(request: Request) -> dict[str, Any]:
        body = await request.body()
        if not body:
            return {}
        try:
            parsed = json.loads(body)
        except ValueError:
            raise OutlineError(400, "InvalidContent", "Invalid JSON in body") from None
        return dict(parsed) if isinstance(parsed, dict) else {}

    @staticmethod
    def _error(exc: OutlineError) -> Response:
        return JSONResponse({"code": exc.code, "message": exc.message}, exc.status)

    # -- server -----------------------------------------------------------------------

    async def _get_server(self, params: dict[str, Any]) -> Response:
        info: dict[str, Any] = {
            "name": self.server_name,
            "serverId": self.server_id,
            "metricsEnabled": False,
            "createdTimestampMs": 1_700_000_000_000,
            "version": self.version,
            "portForNewAccessKeys": self.access_key_port,
            "hostnameForAccessKeys": self.hostname,
        }
        if self.default_limit is not None:
            info["accessKeyDataLimit"] = self.default_limit
        return JSONResponse(info)

    async def _rename_server(self, params: dict[str, Any]) -> Response:
        name = params.get("name")
        if not name:
            raise OutlineError(400, "MissingParameter", "Parameter `name` is missing")
        if not isinstance(name, str) or len(name) > 100:
            raise OutlineError(400, "InvalidArgument", "Requested server name is invalid")
        self.server_name = name
        return Response(status_code=204)

    async def _set_default_limit(self, params: dict[str, Any]) -> Response:
        self.default_limit = _data_limit(params.get("limit"))
        return Response(status_code=204)

    async def _remove_default_limit(self, params: dict[str, Any]) -> Response:
        self.default_limit = None
        return Response(status_code=204)

    async def _transfer(self, params: dict[str, Any]) -> Response:
        return JSONResponse({"bytesTransferredByUserId": dict(self.transferred)})

    # -- access keys ------------------------------------------------------------------

    def _create(self, key_id: str | None, params: dict[str, Any]) -> dict[str, Any]:
        # The service checks the parameters' types first, then the repository checks the
        # id, the password, the cipher and the port, in this order.
        method = _string(params, "method") or DEFAULT_METHOD
        name = _string(params, "name") or ""
        limit = _data_limit(params.get("limit"))
        password = _string(params, "password")
        port = params.get("port", self.access_key_port)
        if not isinstance(port, int | float) or isinstance(port, bool):
            raise OutlineError(400, "InvalidArgument", f"Expected a number for port, got {port!r}")
        if key_id is not None and key_id in self.keys:
            raise OutlineError(409, "Conflict", f'Access key "{key_id}" conflict')
        if password is not None and any(k["password"] == password for k in self.keys.values()):
            raise OutlineError(
                409, "Conflict", f"Access key {key_id} has the same password. Please specify "
                "a unique password for each access key",
            )  # fmt: skip
        if method not in CIPHERS:
            raise OutlineError(400, "InvalidArgument", f'cipher "{method}" is not valid')
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise OutlineError(
                400, "InvalidArgument", f"Port {port} is invalid: must be an integer in range"
            )
        if key_id is None:
            key_id = self._free_id()
        key: dict[str, Any] = {
            "id": key_id,
            "name": name,
            "password": password or secrets.token_urlsafe(16)[:22],
            "port": port,
            "method": method,
        }
        if limit is not None:
            key["dataLimit"] = limit
        self.keys[key_id] = key
        return self._json(key)

    def _free_id(self) -> str:
        while str(self._next_id) in self.keys:
            self._next_id += 1
        key_id = str(self._next_id)
        self._next_id += 1
        return key_id

    def _json(self, key: dict[str, Any]) -> dict[str, Any]:
        secret = base64.urlsafe_b64encode(f"{key['method']}:{key['password']}".encode())
        access_url = f"ss://{secret.decode().rstrip('=')}@{self.hostname}:{key['port']}/?outline=1"
        return {**key, "accessUrl": access_url}

    def _key(self, key_id: str) -> dict[str, Any]:
        key = self.keys.get(key_id)
        if key is None:
            raise _not_found(key_id)
        return key

    async def _post_key(self, params: dict[str, Any]) -> Response:
        if params.get("id"):
            raise OutlineError(400, "InvalidArgument", "Parameter `id` is not allowed")
        return JSONResponse(self._create(None, params), 201)

    async def _put_key(self, params: dict[str, Any]) -> Response:
        return JSONResponse(self._create(str(params["id"]), params), 201)

    async def _list_keys(self, params: dict[str, Any]) -> Response:
        return JSONResponse({"accessKeys": [self._json(k) for k in self.keys.values()]})

    async def _get_key(self, params: dict[str, Any]) -> Response:
        return JSONResponse(self._json(self._key(params["id"])))

    async def _delete_key(self, params: dict[str, Any]) -> Response:
        self._key(params["id"])
        del self.keys[params["id"]]
        return Response(status_code=204)

    async def _rename_key(self, params: dict[str, Any]) -> Response:
        key = self._key(params["id"])
        name = params.get("name")
        if not name:
            raise OutlineError(400, "MissingParameter", "Parameter `name` is missing")
        if not isinstance(name, str):
            raise OutlineError(400, "InvalidArgument", "Parameter `name` must be of type string")
        key["name"] = name
        return Response(status_code=204)

    async def _set_limit(self, params: dict[str, Any]) -> Response:
        limit = _data_limit(params.get("limit"))
        key = self._key(params["id"])
        if limit is None:
            key.pop("dataLimit", None)
        else:
            key["dataLimit"] = limit
        return Response(status_code=204)

    async def _remove_limit(self, params: dict[str, Any]) -> Response:
        self._key(params["id"]).pop("dataLimit", None)
        return Response(status_code=204)
