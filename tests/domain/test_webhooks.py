"""Payment webhooks over HTTP: the starlette route, Billing on a real PostgreSQL, the real
CryptoBot provider against the fake Crypto Pay API on 127.0.0.1, and the real Telegram
payment providers, which have no HTTP door."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from structlog.testing import capture_logs

from plugins.cryptobot import CryptoBotProvider
from plugins.telegram_payments import BotApiPaymentsClient, CardProvider, StarsProvider
from runtime.billing import Billing, Checkout, payment_webhook_routes
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api.payments import InvoiceState, PaymentProvider
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
                "prices": {
                    "cryptobot": {"RUB": 19900},
                    "stars": {"XTR": 150},
                    "card": {"RUB": 19900},
                },
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
async def telegram() -> AsyncIterator[dict[str, PaymentProvider]]:
    """The real Stars and card providers (their Bot API is never called here)."""
    client = BotApiPaymentsClient("1:AAunusedBotTokenForTheseTests", api_base="http://127.0.0.1:9")
    yield {
        "stars": StarsProvider(client),
        "card": CardProvider(provider_token="381764678:TEST:card", currency="RUB"),
    }
    await client.aclose()


@pytest.fixture
def billing(
    db: Database,
    provider: CryptoBotProvider,
    telegram: dict[str, PaymentProvider],
    alerts: Alerts,
) -> Billing:
    return Billing(
        db,
        Catalog.from_settings(SETTINGS),
        {"cryptobot": provider, **telegram},
        alerts,
        balance_currency="RUB",
    )


def client_for(billing: Callable[[], Billing], providers: Billing) -> httpx.AsyncClient:
    routes = payment_webhook_routes(billing, providers=providers.providers.values())
    app = Starlette(routes=routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")


@pytest.fixture
async def client(billing: Billing) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(lambda: billing, billing) as http:
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
                    "select id, user_id, status, external_id, subscription_id, updated_at,"
                    " paid_at, finalized_at, refused, paid_for from payments order by id"
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
    bought, invoice_id = await checkout(billing)
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
    again = await deliver(client, headers, body)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "results": [Verdict.MISMATCH.value]}
    assert again.json() == {"ok": True, "results": [Verdict.DUPLICATE.value]}
    after = await state(db)
    assert after["subscriptions"] == after["outbox"] == []  # nothing credited, no job
    # the intent's own invoice was paid, wrongly: kept as paid and refused, to refund
    [payment] = after["payments"]
    assert (payment["status"], payment["refused"]) == ("paid", "mismatch")
    assert [p["status"] for p in before["payments"]] == ["invoiced"]
    assert alerts.keys() == [f"payment_mismatch:cryptobot:{bought.payment.id}"]
    assert "199" in alerts.alerts[0].text and "Nothing was credited" in alerts.alerts[0].text
    assert invoice_id not in alerts.keys()[0]  # the peer's id: never part of a key


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


def not_ready() -> Billing:
    raise ServiceNotReady("billing starts with the database")


async def test_a_delivery_before_billing_is_ready_is_asked_again_later(
    peer: FakeCryptoBot, billing: Billing
) -> None:
    headers, body = peer.update_delivery({"update_id": 1, "update_type": "invoice_paid"})
    async with client_for(not_ready, billing) as http:
        response = await deliver(http, headers, body)
    assert response.status_code == 503
    assert json.loads(response.content) == {"ok": False, "error": "not_ready"}


async def test_a_forged_delivery_is_refused_before_billing_or_the_database(
    peer: FakeCryptoBot, billing: Billing
) -> None:
    """Authentication is the provider's own check on the raw request: a forged delivery is
    a 401 even while billing is not wired yet (not a 503 asking to deliver it again)."""
    headers, body = peer.update_delivery({"update_id": 1, "update_type": "invoice_paid"})
    async with client_for(not_ready, billing) as http:
        unsigned = await deliver(http, {"content-type": "application/json"}, body)
        changed = await deliver(http, headers, body + b" ")
    assert (unsigned.status_code, changed.status_code) == (401, 401)
    assert unsigned.json() == {"ok": False, "error": "unauthorized"}
    # refused without reading on: the connection is not kept for another request
    assert unsigned.headers["connection"] == "close"


async def test_an_unknown_provider_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhooks/payments/paypal", content=b"{}")
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["stars", "card"])
async def test_telegram_payments_have_no_webhook_whatever_the_body_says(
    billing: Billing, client: httpx.AsyncClient, db: Database, alerts: Alerts, name: str
) -> None:
    """The hole this closes: a JSON body naming a known intent id used to credit it."""
    bought = await billing.buy(USER, "month", name)
    before = await state(db)
    forged = {
        "currency": bought.payment.currency,
        "total_amount": bought.payment.amount_minor,
        "invoice_payload": bought.payment.id,
        "telegram_payment_charge_id": "forged-1",
        "provider_payment_charge_id": "forged-1",
    }
    with capture_logs() as logs:
        for _ in range(300):
            response = await client.post(f"/webhooks/payments/{name}", json=forged)
            assert response.status_code == 404
    assert await state(db) == before
    assert alerts.alerts == []
    assert all(entry["log_level"] in ("debug", "info") for entry in logs)


async def test_a_signed_amount_we_cannot_read_is_a_400_and_changes_nothing(
    billing: Billing,
    peer: FakeCryptoBot,
    client: httpx.AsyncClient,
    db: Database,
    alerts: Alerts,
) -> None:
    """From the authenticated peer, so not forged, but not a number we can store: a domain
    error (400), never a bug's 500, and nothing credited or alerted."""
    _, invoice_id = await checkout(billing)
    peer.pay(invoice_id)
    before = await state(db)
    for amount in ("1e400", "NaN", "-1", "1" * 200):
        headers, body = peer.webhook_delivery(invoice_id, changes={"amount": amount})
        with capture_logs() as logs:
            response = await deliver(client, headers, body)
        assert response.status_code == 400, amount
        assert [e["failure_type"] for e in logs if "failure_type" in e] == ["domain_error"]
    assert await state(db) == before
    assert alerts.alerts == []
    # the real delivery still credits it
    assert (await deliver(client, *peer.webhook_delivery(invoice_id))).json()["results"] == [
        "credited"
    ]


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
        async with client_for(lambda: outage, outage) as http:
            response = await deliver(http, *delivery)
    finally:
        await nowhere.close()
    assert response.status_code == 503
    assert (await state(db))["payments"][0]["status"] == "invoiced"

    # Crypto Pay delivers it again once the database is back.
    assert (await deliver(client, *delivery)).json()["results"] == ["credited"]
