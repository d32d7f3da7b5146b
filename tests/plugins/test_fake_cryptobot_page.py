"""The fake CryptoBot's payment page and control routes: invoices payable by a person in
the sandbox, over real HTTP, with the signed webhook the provider checks."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from plugins.cryptobot import CryptoBotProvider
from runtime.plugin_api.payments import AuthenticatedDelivery, InvoiceState
from runtime.testing.fakes._base import FakePeer
from runtime.testing.fakes.cryptobot import FakeCryptoBot

TOKEN = "98765:AAHcryptoPaySecretAppToken42"


class WebhookReceiver(FakePeer):
    """Answers 200 to every POST to ``/hook``; ``requests`` keeps them."""

    def routes(self) -> Sequence[BaseRoute]:
        async def hook(request: Request) -> Response:
            return Response(status_code=200)

        return [Route("/hook", hook, methods=["POST"])]


@dataclass
class Peers:
    fake: FakeCryptoBot
    url: str
    receiver: WebhookReceiver
    http: httpx.AsyncClient


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    fake = FakeCryptoBot(TOKEN)
    receiver = WebhookReceiver()
    async with fake.running() as url, receiver.running() as hook_url:
        fake.page_base_url = url
        fake.webhook_url = f"{hook_url}/hook"
        async with httpx.AsyncClient(timeout=30) as http:
            yield Peers(fake, url, receiver, http)


async def create(peers: Peers, description: str = "30 days of VPN") -> dict[str, object]:
    answer = await peers.http.post(
        f"{peers.url}/api/createInvoice",
        headers={"Crypto-Pay-API-Token": TOKEN},
        json={
            "currency_type": "fiat",
            "fiat": "RUB",
            "amount": "199.00",
            "description": description,
            "payload": "intent-1",
        },
    )
    result: dict[str, object] = answer.json()["result"]
    return result


async def status_of(peers: Peers, invoice_id: object) -> str:
    answer = await peers.http.get(
        f"{peers.url}/api/getInvoices",
        headers={"Crypto-Pay-API-Token": TOKEN},
        params={"invoice_ids": str(invoice_id)},
    )
    return str(answer.json()["result"]["items"][0]["status"])


async def test_without_a_page_the_links_are_telegrams() -> None:
    fake = FakeCryptoBot(TOKEN)
    invoice = fake.add_invoice(currency_type="crypto", asset="USDT", amount="5")
    assert invoice["bot_invoice_url"].startswith("https://t.me/CryptoBot?start=")
    assert invoice["web_app_invoice_url"].startswith("https://app.send.tg/invoices/")


async def test_the_invoice_links_open_the_fakes_page_showing_the_invoice_escaped(
    peers: Peers,
) -> None:
    invoice = await create(peers, description='<script>alert("x")</script> & more')
    page_url = f"{peers.url}/pay/{invoice['hash']}"
    assert invoice["bot_invoice_url"] == page_url
    assert str(invoice["mini_app_invoice_url"]).startswith(page_url + "?")
    assert str(invoice["web_app_invoice_url"]).startswith(page_url + "?")
    page = await peers.http.get(str(invoice["web_app_invoice_url"]))
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    html = page.text
    assert "199.00 RUB" in html and ">active<" in html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in html
    assert re.search(r'<form method="post">.*value="pay">Pay<.*value="expire">Let it expire<', html)


async def test_paying_on_the_page_is_paying_with_the_signed_webhook(peers: Peers) -> None:
    invoice = await create(peers)
    page_url = str(invoice["bot_invoice_url"])
    paid = await peers.http.post(page_url, data={"action": "pay"})
    assert paid.status_code == 200 and ">paid<" in paid.text and "<form" not in paid.text
    assert await status_of(peers, invoice["invoice_id"]) == "paid"
    (delivery,) = peers.receiver.calls("POST", "/hook")
    assert peers.fake.webhook_results == [200]
    # the delivery is one the provider accepts: signed, the invoice paid
    provider = CryptoBotProvider(TOKEN, base_url=f"{peers.url}/api/")
    assert provider.webhook is not None
    await provider.webhook.authenticate(delivery.headers, delivery.body)
    (payment,) = await provider.webhook.parse(
        AuthenticatedDelivery(headers=delivery.headers, body=delivery.body)
    )
    assert payment.external_id == str(invoice["invoice_id"])
    (status,) = await provider.fetch_status([str(invoice["invoice_id"])])
    assert status.state is InvoiceState.PAID
    await provider.aclose()

    before = dict(peers.fake.invoices[int(str(invoice["invoice_id"]))])
    for action in ("pay", "expire"):
        again = await peers.http.post(page_url, data={"action": action})
        assert again.status_code == 409 and "paid already" in again.text
    assert peers.fake.invoices[int(str(invoice["invoice_id"]))] == before
    assert len(peers.receiver.calls("POST", "/hook")) == 1


async def test_letting_it_expire_on_the_page(peers: Peers) -> None:
    invoice = await create(peers)
    page_url = str(invoice["bot_invoice_url"])
    expired = await peers.http.post(page_url, data={"action": "expire"})
    assert expired.status_code == 200 and ">expired<" in expired.text
    assert await status_of(peers, invoice["invoice_id"]) == "expired"
    late = await peers.http.post(page_url, data={"action": "pay"})
    assert late.status_code == 409 and "expired already" in late.text
    assert await status_of(peers, invoice["invoice_id"]) == "expired"
    assert peers.receiver.calls("POST", "/hook") == []
    unknown = await peers.http.post(page_url, data={"action": "refund"})
    assert unknown.status_code == 400


async def test_the_control_routes_pay_and_expire(peers: Peers) -> None:
    first, second = await create(peers), await create(peers)
    base = f"{peers.url}/_control/invoices"
    paid = await peers.http.post(f"{base}/{first['invoice_id']}/pay")
    assert paid.status_code == 200 and paid.json()["invoice"]["status"] == "paid"
    assert len(peers.receiver.calls("POST", "/hook")) == 1
    conflict = await peers.http.post(f"{base}/{first['invoice_id']}/expire")
    assert conflict.status_code == 409 and conflict.json()["error"] == "invoice is paid"
    assert await status_of(peers, first["invoice_id"]) == "paid"

    expired = await peers.http.post(f"{base}/{second['invoice_id']}/expire")
    assert expired.status_code == 200 and expired.json()["invoice"]["status"] == "expired"
    assert (await peers.http.post(f"{base}/{second['invoice_id']}/pay")).status_code == 409
    assert len(peers.receiver.calls("POST", "/hook")) == 1

    assert (await peers.http.post(f"{base}/424242/pay")).status_code == 404
    assert (await peers.http.post(f"{base}/{second['invoice_id']}/refund")).status_code == 404
    assert (await peers.http.get(f"{peers.url}/pay/IVNOSUCHHASH")).status_code == 404


async def test_a_webhook_that_fails_leaves_the_payment_to_getinvoices(peers: Peers) -> None:
    peers.receiver.fail_next(500)
    invoice = await create(peers)
    paid = await peers.http.post(str(invoice["bot_invoice_url"]), data={"action": "pay"})
    assert paid.status_code == 200
    assert peers.fake.webhook_results == [500]
    assert await status_of(peers, invoice["invoice_id"]) == "paid"


async def test_the_invoices_are_kept_across_a_restart(peers: Peers) -> None:
    invoice = await create(peers)
    paid = await create(peers)
    await peers.http.post(str(paid["bot_invoice_url"]), data={"action": "pay"})
    kept = json.loads(json.dumps(peers.fake.snapshot()))

    again = FakeCryptoBot(TOKEN)
    again.restore(kept)
    async with again.running() as url:
        again.page_base_url = url
        page = await peers.http.get(f"{url}/pay/{invoice['hash']}")
        assert page.status_code == 200 and ">active<" in page.text
        paid_page = await peers.http.get(f"{url}/pay/{paid['hash']}")
        assert ">paid<" in paid_page.text and "<form" not in paid_page.text
        third = again.add_invoice(currency_type="crypto", asset="USDT", amount="5")
        assert third["invoice_id"] == int(str(paid["invoice_id"])) + 1
        assert str(third["bot_invoice_url"]).startswith(f"{url}/pay/")


@pytest.mark.parametrize(
    "data",
    [None, {"version": 2}, {"version": 1, "invoices": [{}], "next_invoice_id": 1}],
)
def test_a_broken_snapshot_changes_nothing(data: object) -> None:
    fake = FakeCryptoBot(TOKEN)
    fake.add_invoice(currency_type="crypto", asset="USDT", amount="5")
    before = dict(fake.invoices)
    with pytest.raises(ValueError):
        fake.restore(data)
    assert fake.invoices == before
