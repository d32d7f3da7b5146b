"""Webhook delivery: the secret header, retries with backoff, pending updates, answers
that carry a method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.fakes import FakePeer
from runtime.testing.telegram import SECRET_HEADER, TelegramEmulator


class Receiver(FakePeer):
    """The bot's webhook endpoint: records updates, may answer with a method."""

    name = "receiver"

    def __init__(self) -> None:
        super().__init__()
        self.reply: dict[str, Any] | None = None

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/hook", self._hook, methods=["POST"])]

    async def _hook(self, request: Request) -> Response:
        await request.body()
        return JSONResponse(self.reply or {})

    def updates(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.calls("POST", "/hook")]


async def test_webhook_delivery_with_secret_and_retries() -> None:
    emulator = TelegramEmulator(webhook_retry_delays=(0.05, 0.1))
    receiver = Receiver()
    async with (
        receiver.running() as hook_base,
        emulator.running(),
        asyncio_loop(),
        emulator.bot_client() as bot,
    ):
        user = emulator.create_user()
        assert await run_asyncio(
            bot.set_webhook, f"{hook_base}/hook", secret_token="s3cret-Token_1"
        )
        info = await run_asyncio(bot.get_webhook_info)
        assert info.url == f"{hook_base}/hook" and info.pending_update_count == 0

        user.send_text("hello")
        await emulator.wait_drained(timeout=30)
        [call] = receiver.calls("POST", "/hook")
        assert call.headers[SECRET_HEADER.lower()] == "s3cret-Token_1"
        assert call.json()["message"]["text"] == "hello"

        # two 500s, then success: the same update three times, in order
        receiver.fail_next(500, times=2)
        user.send_text("retried")
        await emulator.wait_drained(timeout=30)
        texts = [u["message"]["text"] for u in receiver.updates()]
        assert texts == ["hello", "retried", "retried", "retried"]
        assert len({u["update_id"] for u in receiver.updates()[1:]}) == 1
        info = await run_asyncio(bot.get_webhook_info)
        assert (
            info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        )

        # failing for good: the update is kept, and polling gets it after deleteWebhook
        receiver.fail_next(503, times=100)
        user.send_text("kept")
        await emulator.wait_until(lambda: emulator.counters["webhook.failed"] >= 5, timeout=30)
        await trio.sleep(0.2)
        assert emulator.webhook_info()["pending_update_count"] == 1
        attempts = emulator.counters["webhook.attempts"]
        await trio.sleep(0.2)
        assert emulator.counters["webhook.attempts"] == attempts  # parked after 3 attempts
        assert await run_asyncio(bot.delete_webhook)
        updates = await run_asyncio(bot.get_updates)
        assert [u.message.text for u in updates if u.message] == ["kept"]
    assert emulator.counters["webhook.delivered"] == 2


async def test_webhook_answer_with_a_method_is_executed() -> None:
    emulator = TelegramEmulator()
    receiver = Receiver()
    async with (
        receiver.running() as hook_base,
        emulator.running(),
        asyncio_loop(),
        emulator.bot_client() as bot,
    ):
        user = emulator.create_user()
        receiver.reply = {"method": "sendMessage", "chat_id": user.id, "text": "pong"}
        await run_asyncio(bot.set_webhook, f"{hook_base}/hook")
        user.send_text("ping")
        reply = await user.wait_for_message(timeout=30)
        assert reply.text == "pong"
