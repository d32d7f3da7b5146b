"""Polling goes on past an update the inbox cannot keep (an ``update_id`` beyond bigint).

Telegram's ids fit in 52 bits, but a self-hosted Bot API server is only a config key away,
and an answer the poller cannot store must not stop polling for good: storing it would
fail on every retry, and the same batch would come back forever. The peer here is a
scripted Bot API: ``getUpdates`` as documented (pending updates in ``update_id`` order;
an offset confirms every update below it), with the ids the test chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import trio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from runtime.bot._polling import Poller
from runtime.bridge import run_asyncio
from runtime.storage import Database, inbox
from runtime.supervision import ActorContext, ActorSpec, ActorState, Supervisor
from runtime.testing.fakes import FakePeer

from .conftest import TOKEN

BEYOND = 2**63


def message(update_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id % 1000,
            "date": 1700000000,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "is_bot": False, "first_name": "A"},
            "text": text,
        },
    }


class ScriptedUpdates(FakePeer):
    """``getUpdates`` and ``deleteWebhook``; ``offsets`` lists every offset asked for, and
    ``settled`` is set once ``settle_offset`` has been asked for three times."""

    name = "telegram"

    def __init__(self, updates: Sequence[dict[str, Any]], *, settle_offset: int) -> None:
        super().__init__()
        self.pending = sorted(updates, key=lambda u: int(u["update_id"]))
        self.offsets: list[int | None] = []
        self.settle_offset = settle_offset
        self.settled = trio.Event()

    def routes(self) -> Sequence[BaseRoute]:
        async def call(request: Request) -> JSONResponse:
            method = request.path_params["method"]
            if method == "deleteWebhook":
                return JSONResponse({"ok": True, "result": True})
            form = parse_qs((await request.body()).decode())
            offset = int(form["offset"][0]) if "offset" in form else None
            self.offsets.append(offset)
            if self.offsets.count(self.settle_offset) >= 3:
                self.settled.set()
            if offset is not None:
                self.pending = [u for u in self.pending if int(u["update_id"]) >= offset]
            if not self.pending:
                await trio.sleep(0.05)  # a short long poll
            return JSONResponse({"ok": True, "result": self.pending})

        return [Route(f"/bot{TOKEN}/{{method}}", call, methods=["POST"])]


async def test_an_update_id_beyond_bigint_is_dropped_and_polling_goes_on(db: Database) -> None:
    peer = ScriptedUpdates(
        [message(100, "before"), message(BEYOND, "beyond"), message(101, "after")],
        settle_offset=BEYOND + 1,
    )
    async with peer.running() as url:
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
        poller = Poller(lambda: db, holder="poller-test", on_stored=lambda: None, timeout=0)

        async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            await poller.run(ctx, bot)

        supervisor = Supervisor([ActorSpec("bot-poller", run)])
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervisor.run)
                with trio.fail_after(60):
                    await peer.settled.wait()
                supervisor.request_shutdown()
        finally:
            await run_asyncio(bot.session.close)
    (status,) = supervisor.statuses
    assert status.failures == 0 and status.state is ActorState.STOPPED
    assert peer.offsets[:2] == [None, BEYOND + 1]  # one batch, acknowledged whole
    claimed = await inbox.claim(db, owner="t", limit=10, claim_seconds=30)
    assert [u.update_id for u in claimed] == [100, 101]
