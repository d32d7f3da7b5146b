"""A fake Bot API for the notifier: ``sendMessage`` and ``sendPhoto`` over real HTTP, with
blocked users, scripted 429s and failures, and a record of every send and its time."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.testing.fakes import FakePeer

TOKEN = "424242:AAFakeNotifierToken_0123456789abcde"


@dataclass(frozen=True)
class Sent:
    method: str
    chat_id: int
    text: str | None
    at: float
    photo: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    message = BytesParser(policy=default_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            fields[str(name)] = payload.decode()
    return fields, files


class FakeBotApi(FakePeer):
    """``sent`` lists every accepted send; ``attempts`` every call (accepted or not)."""

    name = "telegram"

    def __init__(self, token: str = TOKEN, *, latency: float = 0.0) -> None:
        super().__init__()
        self.token = token
        self.latency = latency
        self.sent: list[Sent] = []
        self.attempts: list[tuple[str, int, float, int]] = []
        """(method, chat_id, time, status) of every call."""
        self.blocked: set[int] = set()
        self.scripted: list[tuple[int, dict[str, Any]]] = []
        """Answers for the next calls, in order: (status, extra envelope fields)."""
        self.max_per_second: float = math.inf
        """Telegram's global limit as this fake enforces it (429 past it)."""

    def rate_limit(self, retry_after: int, *, times: int = 1) -> None:
        for _ in range(times):
            self.scripted.append(
                (
                    429,
                    {
                        "description": f"Too Many Requests: retry after {retry_after}",
                        "parameters": {"retry_after": retry_after},
                    },
                )
            )

    def fail(
        self, status: int, description: str, *, times: int = 1, retry_after: int | None = None
    ) -> None:
        extra: dict[str, Any] = {"description": description}
        if retry_after is not None:
            extra["parameters"] = {"retry_after": retry_after}
        for _ in range(times):
            self.scripted.append((status, dict(extra)))

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [s.text or "" for s in self.sent if chat_id is None or s.chat_id == chat_id]

    def times(self, chat_id: int | None = None) -> list[float]:
        return [s.at for s in self.sent if chat_id is None or s.chat_id == chat_id]

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/bot{token}/{method}", self._dispatch, methods=["POST"])]

    async def _dispatch(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.path_params["method"]
        if method not in ("sendMessage", "sendPhoto"):
            return self._error(404, "Not Found")
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        files: dict[str, bytes] = {}
        if content_type.startswith("multipart/"):
            params, files = _multipart(content_type, body)
        else:
            params = json.loads(body or b"{}")
        chat_id = int(params["chat_id"])
        now = trio.current_time()
        if self.latency:
            await trio.sleep(self.latency)
        status, extra = (200, {})
        if self.scripted:
            status, extra = self.scripted.pop(0)
        elif chat_id in self.blocked:
            status, extra = 403, {"description": "Forbidden: bot was blocked by the user"}
        elif sum(1 for s in self.sent if s.at > now - 1.0) >= self.max_per_second:
            status, extra = (
                429,
                {
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
            )
        self.attempts.append((method, chat_id, now, status))
        if status != 200:
            return self._error(status, extra.pop("description"), **extra)
        text = params.get("text") if method == "sendMessage" else params.get("caption")
        self.sent.append(Sent(method, chat_id, text, now, files.get("photo"), dict(params)))
        return JSONResponse(
            {"ok": True, "result": {"message_id": len(self.sent), "chat": {"id": chat_id}}}
        )

    @staticmethod
    def _error(status: int, description: str, **extra: Any) -> Response:
        return JSONResponse(
            {"ok": False, "error_code": status, "description": description, **extra}, status
        )
