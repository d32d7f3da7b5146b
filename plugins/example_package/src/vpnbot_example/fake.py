"""The tiny panel's fake, for this plugin's tests and for anyone trying it.

Accounts count the bytes they ``used``; a PUT with another ``period`` than the account's
starts that period with nothing used."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.testing.fakes import FakePeer


class FakeTinyPanel(FakePeer):
    name = "tiny-panel"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.accounts: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def use_traffic(self, name: str, data_bytes: int) -> None:
        self.accounts[name]["used"] += data_bytes

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def routes(self) -> Sequence[BaseRoute]:
        async def account(request: Request) -> Response:
            if not self._authorized(request):
                return JSONResponse({"error": "unauthorized"}, 401)
            name = request.path_params["name"]
            if request.method == "PUT":
                body = await request.json()
                current = self.accounts.get(name) or {
                    "id": next(self._ids),
                    "name": name,
                    "link": f"vless://{name}@vpn.example.com",
                    "used": 0,
                }
                if body.get("period") != current.get("period"):
                    current["used"] = 0
                current.update(body)
                self.accounts[name] = current
                return JSONResponse(current)
            if name not in self.accounts:
                return JSONResponse({"error": "not found"}, 404)
            if request.method == "DELETE":
                del self.accounts[name]
                return Response(status_code=204)
            return JSONResponse(self.accounts[name])

        async def disable(request: Request) -> Response:
            if not self._authorized(request):
                return JSONResponse({"error": "unauthorized"}, 401)
            found = self.accounts.get(request.path_params["name"])
            if found is None:
                return JSONResponse({"error": "not found"}, 404)
            found["enabled"] = False
            return JSONResponse(found)

        async def health(request: Request) -> Response:
            return JSONResponse({"ok": True})

        return [
            Route("/accounts/{name}", account, methods=["GET", "PUT", "DELETE"]),
            Route("/accounts/{name}/disable", disable, methods=["POST"]),
            Route("/health", health),
        ]
