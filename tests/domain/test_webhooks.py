"""Payment webhooks over HTTP: the starlette route, Billing on a real PostgreSQL, the real
CryptoBot provider against the fake Crypto Pay API on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette

from plugins.cryptobot import CryptoBotProvider
from runtime.billing import Billing, Checkout, payment_webhook_routes
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api.payments import InvoiceState
from runtime.plugin_api.services import ServiceNotReady
from runtime.storage import Connection, Database, job_kinds
from runtime.storage.payments import Verdict
from runtime.testing.fakes.cryptobot import SIGNATURE_HEADER, FakeCryptoBot, sign

from .conftest import Alerts

TOKEN = "424242:AAcryptoPayAppTokenForWebhooks"
USER = 3003
URL = "/webhooks/payments/cryptobot"

SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month"},
                "duration_days": 30,
                "backend": "marzban",
                "prices": {"cryptobot": {"RUB": 19900}},
            }
        }
    }
)


@pytest.fixture
async def peer() -> AsyncIterator[FakeCryptoBot]:
    fake = FakeCryptoBot(TOKEN)
    async with fake.running():
        yield fake


@pytest.fixture
async def provider(peer: FakeCryptoBot) -> AsyncIterator[CryptoBotProvider]:
    subject = CryptoBotProvider(TOKEN, base_url=f"{peer.url}/api/")
    yield subject
    await subject.aclose()


@pytest.fixture
def billing(db: Database, provider: CryptoBotProvider, alerts: Alerts) -> Billing:
    return Billing(
        db,
        Catalog.from_settings(SETTINGS),
        {"cryptobot": provider},
        alerts,
        balance_currency="RUB",
    )


def client_for(billing: Callable[[], Billing]) -> httpx.AsyncClient:
    app = Starlette(routes=payment_webhook_routes(billing))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")


@pytest.fixture
async def client(billing: Billing) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(lambda: billing) as http:
        yield http


# -- helpers ---------------------------------------------------------------------------------


async def checkout(billing: Billing) -> tuple[Checkout, str]:
    """A purchase of "month" with its invoice on the peer; (checkout, invoice id)."""
    bought = await billing.buy(USER, "month", "cryptobot")
    assert bought.invoice.external_id is not None
    return bought, bought.invoice.external_id


async def deliver(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> httpx.Response:
    return await client.post(URL, headers=headers, content=body)


async def state(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Everything a delivery may change."""

    async def unit(conn: Connection) -> dict[str, list[dict[str, Any]]]:
        return {
            "payments": [
                dict(r)
                for r in await conn.fetch(
                    "select id, status, external_id, subscription_id, updated_at, paid_at,"
                    " finalized_at from payments order by id"
                )
            ],
            "subscriptions": [
                dict(r) for r in await conn.fetch("select * from subscriptions order by id")
            ],
            "outbox": [dict(r) for r in await conn.fetch("select * from outbox order by id")],
            "users": [dict(r) for r in await conn.fetch("select * from users order by 1")],
        }

    return await db.read(unit)


def kinds(snapshot: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [row["kind"] for row in snapshot["outbox"]]


def templates(snapshot: dict[str, list[dict[str, Any]]]) -> list[str]:
    notify = [row for row in snapshot["outbox"] if row["kind"] == job_kinds.NOTIFY]
    return [row["payload"]["template"] for row in notify]


# -- tests -----------------------------------------------------------------------------------


async def test_checkout_creates_an_invoice_on_the_peer(
    billing: Billing, peer: FakeCryptoBot, db: Database
) -> None:
    bought, invoice_id = await checkout(billing)
    invoice = peer.invoices[int(invoice_id)]
    assert invoice["payload"] == bought.payment.id  # the intent id travels with the invoice
    assert (invoice["currency_type"], invoice["fiat"], invoice["amount"]) == (
        "fiat",
        "RUB",
        "199.00",
    )
    assert invoice["status"] == "active"
    [payment] = (await state(db))["payments"]
    assert (str(payment["id"]), payment["status"], payment["external_id"]) == (
        bought.payment.id,
        "invoiced",
        invoice_id,
    )
    assert bought.invoice.url == invoice["bot_invoice_url"]


async def test_a_signed_delivery_credits_the_payment(
    billing: Billing, peer: FakeCryptoBot, client: httpx.AsyncClient, db: Database
) -> None:
    bought, invoice_id = await checkout(billing)
    peer.pay(invoice_id)

    response = await deliver(client, *peer.webhook_delivery(invoice_id))

    assert response.status_code == 200
    assert response.json() == {"ok": True, "results": ["credited"]}
    after = await state(db)
    [payment] = after["payments"]
    assert (str(payment["id"]), payment["status"]) == (bought.payment.id, "finalized")
    [subscription] = after["subscriptions"]
    assert payment["subscription_id"] == subscription["id"]
    assert subscription["user_id"] == USER
    assert kinds(after) == [job_kinds.ACTIVATE, job_kinds.NOTIFY]
    assert templates(after) == ["payment_received"]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda h, b: ({**h, SIGNATURE_HEADER: sign("1:other-token", b)}, b), id="key"),
        pytest.param(lambda h, b: ({"content-type": "application/json"}, b), id="unsigned"),
        pytest.param(
            lambda h, b: (h, b.replace(b'"amount":"199.00"', b'"amount":"1.99"')), id="amount"
        ),
    ],
)
async def test_a_forged_delivery_is_refused_and_changes_nothing(
    billing: Billing,
    peer: FakeCryptoBot,
    client: httpx.AsyncClient,
    db: Database,
    alerts: Alerts,
    forge: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
) -> None:
    _, invoice_id = await checkout(billing)
    peer.pay(invoice_id)
    headers, body = forge(*peer.webhook_delivery(invoice_id))
    before = await state(db)

    response = await deliver(client, headers, body)

    assert response.status_code == 401
    assert response.json()["ok"] is False
    after = await state(db)
    assert after == before
    assert after["payments"][0]["status"] == "invoiced"
    assert after["subscriptions"] == [] and after["outbox"] == []
    assert alerts.alerts == []


async def test_an_unreadable_signed_delivery_is_a_400_and_changes_nothing(
    billing: Billing, peer: FakeCryptoBot, client: httpx.AsyncClient, db: Database
) -> None:
    await checkout(billing)
    before = await state(db)
    headers, body = peer.update_delivery({"update_type": "invoice_paid", "payload": "nonsense"})

    assert (await deliver(client, headers, body)).status_code == 400
    assert (await state(db)) == before


async def test_a_replayed_delivery_is_an_idempotent_skip(
    billing: Billing, peer: FakeCryptoBot, client: httpx.AsyncClient, db: Database
) -> None:
    _, invoice_id = await checkout(billing)
    peer.pay(invoice_id)
    delivery = peer.webhook_delivery(invoice_id)
    assert (await deliver(client, *delivery)).json()["results"] == ["credited"]
    credited = await state(db)

    for again in (delivery, delivery, peer.webhook_delivery(invoice_id)):  # the last: new update_id
        response = await deliver(client, *again)
        assert response.status_code == 200
        assert response.json() == {"ok": True, "results": [Verdict.DUPLICATE.value]}

    after = await state(db)
    assert after == credited
    assert len(after["subscriptions"]) == 1
    assert kinds(after) == [job_kinds.ACTIVATE, job_kinds.NOTIFY]


async def test_an_authentic_delivery_for_another_amount_is_refused_alerted_and_answered_200(
    billing: Billing,
    peer: FakeCryptoBot,
    client: httpx.AsyncClient,
    db: Database,
    alerts: Alerts,
) -> None:
    """Signed with the app's token, so it comes from Crypto Pay: a 4xx would only make it
    deliver the same thing again for days. It is answered 200, refused and alerted."""
    _, invoice_id = await checkout(billing)
    invoice = peer.pay(invoice_id)
    before = await state(db)
    headers, body = peer.update_delivery(
        {
            "update_id": 7,
            "update_type": "invoice_paid",
            "request_date": invoice["paid_at"],
            "payload": {**invoice, "amount": "1.99"},
        }
    )

    response = await deliver(client, headers, body)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "results": [Verdict.MISMATCH.value]}
    assert await state(db) == before  # nothing credited, no job, no notification
    assert alerts.keys() == [f"payment_mismatch:cryptobot:{invoice_id}"]
    assert "199" in alerts.alerts[0].text and "Nothing was credited" in alerts.alerts[0].text


async def test_the_webhook_and_the_watcher_racing_credit_once(
    billing: Billing,
    provider: CryptoBotProvider,
    peer: FakeCryptoBot,
    client: httpx.AsyncClient,
    db: Database,
) -> None:
    _, invoice_id = await checkout(billing)
    peer.pay(invoice_id)
    delivery = peer.webhook_delivery(invoice_id)
    [status] = await provider.fetch_status([invoice_id])
    assert status.state is InvoiceState.PAID and status.payment is not None
    verdicts: list[str] = []

    async def webhook() -> None:
        response = await deliver(client, *delivery)
        assert response.status_code == 200
        verdicts.extend(response.json()["results"])

    async def watcher() -> None:
        assert status.payment is not None
        verdicts.append((await billing.confirm(status.payment)).verdict.value)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(webhook)
            nursery.start_soon(watcher)

    assert sorted(verdicts) == ["credited"] + ["duplicate"] * 7
    after = await state(db)
    assert [p["status"] for p in after["payments"]] == ["finalized"]
    assert len(after["subscriptions"]) == 1
    assert kinds(after) == [job_kinds.ACTIVATE, job_kinds.NOTIFY]


async def test_a_delivery_before_billing_is_ready_is_asked_again_later(
    peer: FakeCryptoBot,
) -> None:
    def not_ready() -> Billing:
        raise ServiceNotReady("billing starts with the database")

    headers, body = peer.update_delivery({"update_id": 1, "update_type": "invoice_paid"})
    async with client_for(not_ready) as http:
        response = await deliver(http, headers, body)
    assert response.status_code == 503
    assert json.loads(response.content) == {"ok": False, "error": "not_ready"}


async def test_an_unknown_provider_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhooks/payments/paypal", content=b"{}")
    assert response.status_code == 404


async def test_a_delivery_that_meets_a_database_outage_is_asked_again_later(
    billing: Billing,
    provider: CryptoBotProvider,
    peer: FakeCryptoBot,
    client: httpx.AsyncClient,
    db: Database,
) -> None:
    _, invoice_id = await checkout(billing)
    peer.pay(invoice_id)
    delivery = peer.webhook_delivery(invoice_id)
    nowhere = await Database.connect("postgresql://vpnbot@127.0.0.1:1/vpnbot", min_size=0)
    try:
        outage = Billing(
            nowhere,
            Catalog.from_settings(SETTINGS),
            {"cryptobot": provider},
            Alerts(),
            balance_currency="RUB",
        )
        async with client_for(lambda: outage) as http:
            response = await deliver(http, *delivery)
    finally:
        await nowhere.close()
    assert response.status_code == 503
    assert (await state(db))["payments"][0]["status"] == "invoiced"

    # Crypto Pay delivers it again once the database is back.
    assert (await deliver(client, *delivery)).json()["results"] == ["credited"]
