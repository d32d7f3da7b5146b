"""The sandbox offers YooKassa against its fake: the plan priced for it, the provider
pointed at the fake, and the fake's checkout page paying and notifying the bot."""

from __future__ import annotations

import httpx
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugins.yookassa import YooKassaProvider, vpnbot_payment_providers
from runtime.config import Settings
from runtime.sandbox import sandbox_settings
from runtime.sandbox._sandbox import YOOKASSA_SECRET, YOOKASSA_SHOP, SandboxPorts
from runtime.testing.fakes import FakePeer
from runtime.testing.fakes.yookassa import FakeYooKassa
from tests.plugins.test_yookassa import intent


def settings(yookassa_url: str | None) -> Settings:
    return sandbox_settings(
        Settings(),
        telegram_url="http://127.0.0.1:1",
        token="1:unit-test-token-0123456789abcdefghi",
        panel_url="http://127.0.0.1:2",
        cryptobot_url="http://127.0.0.1:3",
        yookassa_url=yookassa_url,
    )


def test_the_sandbox_prices_the_month_for_yookassa_against_its_fake() -> None:
    with_it = settings("http://127.0.0.1:4")
    assert with_it.plans["month"].prices["yookassa"] == {"RUB": 19900}
    (provider,) = vpnbot_payment_providers(settings=with_it)
    assert isinstance(provider, YooKassaProvider)
    assert provider.base_url == "http://127.0.0.1:4/v3/"
    without = settings(None)
    assert "yookassa" not in without.plans["month"].prices
    assert vpnbot_payment_providers(settings=without) == []
    assert SandboxPorts(9000).yookassa == 9003


class _Receiver(FakePeer):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def routes(self) -> list[Route]:
        async def hook(request: Request) -> JSONResponse:
            self.bodies.append(await request.body())
            return JSONResponse({"ok": True})

        return [Route("/webhooks/payments/yookassa", hook, methods=["POST"])]


async def test_the_fake_checkout_page_pays_and_notifies() -> None:
    fake = FakeYooKassa(YOOKASSA_SHOP, YOOKASSA_SECRET)
    receiver = _Receiver()
    async with fake.running() as url, receiver.running() as hook_url:
        fake.page_base_url = url
        fake.webhook_url = f"{hook_url}/webhooks/payments/yookassa"
        provider = YooKassaProvider(YOOKASSA_SHOP, YOOKASSA_SECRET, base_url=f"{url}/v3/")
        invoice = await provider.create_invoice(intent())
        assert invoice.url == f"{url}/checkout/{invoice.external_id}"
        async with httpx.AsyncClient() as browser:
            page = await browser.get(invoice.url)
            assert "199.00 RUB" in page.text and "pending" in page.text
            paid = await browser.post(invoice.url, data={"action": "pay"})
            assert "Paid" in paid.text
            again = await browser.post(invoice.url, data={"action": "pay"})
            assert again.status_code == 409
        with trio.fail_after(30):
            while not receiver.bodies:  # noqa: ASYNC110
                await trio.sleep(0.01)
        (body,) = receiver.bodies
        assert b'"payment.succeeded"' in body and (invoice.external_id or "").encode() in body
        await provider.aclose()
