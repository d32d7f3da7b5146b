"""The webhook route: the secret token is checked, an update is stored before the 200."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette

from runtime.bot import telegram_webhook_routes
from runtime.bot._webhook import SECRET_HEADER
from runtime.storage import Database, inbox

from .conftest import WEBHOOK_SECRET, Alerts, Shop, build_shop, make_settings


def webhook_settings() -> dict[str, Any]:
    return {
        "bot": {
            "mode": "webhook",
            "webhook_url": "https://bot.example.com/telegram/hook",
            "webhook_secret": WEBHOOK_SECRET,
        }
    }


@pytest.fixture
async def shop(db: Database, panel: Any, crypto: Any, alerts: Alerts) -> AsyncIterator[Shop]:
    shop = build_shop(
        make_settings("http://127.0.0.1:9", **webhook_settings()), db, panel, crypto, alerts
    )
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@pytest.fixture
async def url(shop: Shop) -> AsyncIterator[str]:
    app = Starlette(routes=telegram_webhook_routes(shop.services))
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(app, config, task_status=task_status)  # type: ignore[arg-type]
        )
        yield binds[0]
        nursery.cancel_scope.cancel()


def an_update(update_id: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1700000000,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "is_bot": False, "first_name": "A"},
            "text": "/start",
        },
    }


async def test_a_forged_or_missing_secret_is_refused(shop: Shop, url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        forged = await client.post(
            "/telegram/hook", json=an_update(1), headers={SECRET_HEADER: "guess"}
        )
        missing = await client.post("/telegram/hook", json=an_update(2))
        almost = await client.post(
            "/telegram/hook", json=an_update(3), headers={SECRET_HEADER: WEBHOOK_SECRET + "x"}
        )
    assert [r.status_code for r in (forged, missing, almost)] == [401, 401, 401]
    assert await inbox.pending_count(shop.db) == 0


async def test_an_update_is_stored_before_the_200(shop: Shop, url: str) -> None:
    headers = {SECRET_HEADER: WEBHOOK_SECRET}
    async with httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/telegram/hook", json=an_update(10), headers=headers)
        again = await client.post("/telegram/hook", json=an_update(10), headers=headers)
        broken = await client.post("/telegram/hook", content=b"{nope", headers=headers)
        no_id = await client.post("/telegram/hook", json={"message": {}}, headers=headers)
        wrong_method = await client.get("/telegram/hook", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (broken.status_code, no_id.status_code, wrong_method.status_code) == (400, 400, 405)
    claimed = await inbox.claim(shop.db, owner="t", limit=10, claim_seconds=30)
    assert [u.update_id for u in claimed] == [10]
    assert claimed[0].payload == an_update(10)


async def test_no_route_in_polling_mode(db: Database, panel: Any, crypto: Any) -> None:
    shop = build_shop(make_settings("http://127.0.0.1:9"), db, panel, crypto, Alerts())
    assert telegram_webhook_routes(shop.services) == []
    for closer in shop.closers:
        await closer.aclose()
