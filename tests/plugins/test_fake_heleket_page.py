"""The fake Heleket's payment page (the sandbox's): an invoice paid by a person, with
the signed webhook delivered, retried while refused, and accepted by the provider."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from plugins.heleket import HeleketProvider
from runtime.config import Settings
from runtime.plugin_api.payments import AuthenticatedDelivery
from runtime.sandbox import sandbox_settings
from runtime.testing.fakes._base import FakePeer
from runtime.testing.fakes.heleket import FakeHeleket
from tests.plugins.test_heleket import intent


class FlakyReceiver(FakePeer):
    """Answers 503 to the first POST to ``/hook``, 200 after; ``requests`` keeps them."""

    def routes(self) -> Sequence[BaseRoute]:
        async def hook(request: Request) -> Response:
            return Response(status_code=503 if len(self.requests) == 1 else 200)

        return [Route("/hook", hook, methods=["POST"])]


async def test_paying_on_the_page_delivers_a_webhook_until_it_is_taken() -> None:
    fake, receiver = FakeHeleket(), FlakyReceiver()
    async with fake.running() as url, receiver.running() as hook_base:
        fake.page_base_url = url
        fake.webhook_url = f"{hook_base}/hook"
        provider = HeleketProvider(fake.merchant, fake.api_key, base_url=f"{url}/")
        invoice = await provider.create_invoice(intent())
        assert invoice.url == f"{url}/pay/{invoice.external_id}"
        async with httpx.AsyncClient() as http:
            page = await http.get(invoice.url)
            assert page.status_code == 200 and "Pay</button>" in page.text
            paid = await http.post(invoice.url, data={"action": "pay"})
            assert paid.status_code == 200 and "Paid." in paid.text
            again = await http.post(invoice.url, data={"action": "pay"})
            assert again.status_code == 409

        assert fake.webhook_results == [503, 200]
        first, second = receiver.requests
        assert first.body == second.body
        await provider.webhook.authenticate(second.headers, second.body)
        (payment,) = await provider.webhook.parse(
            AuthenticatedDelivery(second.headers, second.body)
        )
        assert payment.external_id == invoice.external_id
        await provider.aclose()


def test_the_sandbox_offers_heleket_where_it_offers_cryptobot() -> None:
    fake = FakeHeleket()
    fake.url = "http://127.0.0.1:4"
    settings = sandbox_settings(
        Settings(),
        telegram_url="http://127.0.0.1:1",
        token="1:unit-test-token-0123456789abcdefghi",
        panel_url="http://127.0.0.1:2",
        cryptobot_url="http://127.0.0.1:3",
        heleket=fake,
    )
    assert settings.plugins.settings["heleket"]["base_url"] == "http://127.0.0.1:4"
    assert settings.plans["month"].prices["heleket"] == {"RUB": 19900}
    assert "heleket" not in settings.plans["quarter"].prices
