"""The webhook route on the public listener: the secret token is checked before anything is
read, an update is stored before the 200, and what the inbox cannot keep is a 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from runtime.bot import telegram_webhook_routes
from runtime.bot._webhook import MAX_BODY, SECRET_HEADER
from runtime.storage import Database, inbox
from runtime.supervision import ActorSpec, Supervisor
from runtime.web import HttpEndpoint, public_app
from tests.web.raw_client import chunked, head, until_hung_up

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
    """The public listener as the runtime builds it, limits included, under a supervisor."""
    holder: list[Supervisor] = []
    endpoint = HttpEndpoint(
        lambda: public_app(holder[0], routes=telegram_webhook_routes(shop.services)),
        host="127.0.0.1",
        port=0,
    )
    holder.append(Supervisor([ActorSpec("http_public", endpoint.run)]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder[0].run)
        with trio.fail_after(30):
            await holder[0].ready.wait()
        yield endpoint.urls[0]
        holder[0].request_shutdown()


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


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_an_unauthenticated_body_is_never_read(shop: Shop, url: str) -> None:
    """No secret, a body without end: 401 at once, and the connection is dropped."""
    outcome = await until_hung_up(
        port_of(url),
        iter([head("/telegram/hook", "Transfer-Encoding: chunked"), *chunked(256 << 20)]),
    )
    assert outcome.status == 401
    assert outcome.sent < 64 << 20
    assert await inbox.pending_count(shop.db) == 0


async def test_a_body_over_the_limit_is_413_and_nothing_is_stored(shop: Shop, url: str) -> None:
    """An authenticated update that keeps growing past ``MAX_BODY``, sent chunked (no
    Content-Length to check up front): cut off there."""
    start = b'{"update_id": 20, "message": {"text": "'
    parts = iter(
        [
            head(
                "/telegram/hook", "Transfer-Encoding: chunked", f"{SECRET_HEADER}: {WEBHOOK_SECRET}"
            ),
            f"{len(start):x}\r\n".encode() + start + b"\r\n",
            *chunked(4 * MAX_BODY),
        ]
    )
    outcome = await until_hung_up(port_of(url), parts)
    assert outcome.status == 413
    assert outcome.sent < 64 << 20
    assert await inbox.pending_count(shop.db) == 0


async def test_an_update_close_to_the_limit_is_stored(shop: Shop, url: str) -> None:
    update = an_update(30)
    update["message"]["text"] = "x" * (MAX_BODY - 1000)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        answer = await client.post(
            "/telegram/hook", json=update, headers={SECRET_HEADER: WEBHOOK_SECRET}
        )
    assert answer.status_code == 200
    assert await inbox.pending_count(shop.db) == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"update_id": 9223372036854775808, "message": {}}',
        b'{"update_id": -9223372036854775809, "message": {}}',
        b'{"update_id": 1' + b"0" * 5000 + b"}",
        b'{"update_id": 1e400}',
        b'{"update_id": true}',
        b"[" * 100_000 + b"]" * 100_000,
        b"[1, 2]",
        b"\xff\xfe",
    ],
    ids=["above", "below", "5000 digits", "float", "bool", "deep", "list", "not utf-8"],
)
async def test_an_update_the_inbox_cannot_keep_is_400_for_good(
    shop: Shop, url: str, body: bytes
) -> None:
    """400, not 503: Telegram would deliver it again forever."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        answer = await client.post(
            "/telegram/hook", content=body, headers={SECRET_HEADER: WEBHOOK_SECRET}
        )
        after = await client.post(
            "/telegram/hook", json=an_update(2**63 - 1), headers={SECRET_HEADER: WEBHOOK_SECRET}
        )
    assert answer.status_code == 400
    assert after.status_code == 200
    claimed = await inbox.claim(shop.db, owner="t", limit=10, claim_seconds=30)
    assert [u.update_id for u in claimed] == [2**63 - 1]
