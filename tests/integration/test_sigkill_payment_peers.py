"""A SIGKILL between a payment peer's confirmation and our commit ends in exactly one credit.

For YooKassa and Heleket alike: a real ``vpnbot run`` takes payments from the peer's fake.
A user's payment succeeds there and its notification reaches the process, which fetches
the payment back from the API (the peer says paid) and starts crediting it: this test holds the
payment's row locked, so the process is caught inside the crediting transaction, after the
provider's confirmation and before our commit. The process is killed with SIGKILL; the
notification it was answering gets no 200. After the restart, the peer sends the
notification again (both retry until they get a 200), or the payment watcher finds the paid
payment at the API first (or reconciliation does): both ways back are tried.
The payment is credited once: one finalized row, one subscription, one VPN account, one
"Payment received"; a later delivery is a duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from plugins.heleket import HeleketProvider
from plugins.yookassa import YooKassaProvider
from runtime.billing import Billing
from runtime.bridge import run_asyncio
from runtime.catalog import Catalog
from runtime.config import load_settings
from runtime.plugin_api import PaymentProvider
from runtime.storage import Database
from runtime.testing.fakes import FakePeer
from runtime.testing.fakes.heleket import FakeHeleket
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.fakes.yookassa import FakeYooKassa
from runtime.testing.telegram import TelegramEmulator

from .payment_crash import is_payment_received
from .processes import (
    PANEL_PASSWORD,
    PANEL_USER,
    PATIENCE,
    TOKEN,
    Vpnbot,
    rows,
    until,
    value,
    write_config,
)
from .test_process import free_port

SHOP, SECRET = "506071", "test_SigkillShopSecretKey_0001"
MERCHANT, API_KEY = "8b03432e-385b-4670-8d06-0645910967aa", "sigkill-heleket-payment-key-01"
PAYER = 4_200_001
Delivery = tuple[dict[str, str], bytes]


class _Alerts:
    def submit(self, alert: object) -> None:
        pass


@dataclass
class Peer:
    """What differs between the peers: the fake, our settings for it, and its doors."""

    name: str
    fake: FakePeer
    price: str
    settings: str
    provider: PaymentProvider
    pay: Callable[[str], object]
    notification: Callable[[str], Delivery]
    confirm_path: Callable[[str], tuple[str, str]]
    """The API call by which the process fetches a payment back (method, path)."""


@asynccontextmanager
async def running_peer(name: str) -> AsyncIterator[Peer]:
    if name == "yookassa":
        yookassa = FakeYooKassa(SHOP, SECRET)
        async with yookassa.running() as url:
            provider = YooKassaProvider(SHOP, SECRET, base_url=f"{url}/v3/")
            yield Peer(
                name,
                yookassa,
                "{ RUB = 19900 }",
                f'shop_id = "{SHOP}"\nsecret_key = "{SECRET}"\nbase_url = "{url}/v3/"',
                provider,
                yookassa.pay,
                yookassa.notification,
                lambda payment_id: ("GET", f"/v3/payments/{payment_id}"),
            )
            await provider.aclose()
    else:
        heleket = FakeHeleket(MERCHANT, API_KEY)
        async with heleket.running() as url:
            provider = HeleketProvider(MERCHANT, API_KEY, base_url=f"{url}/")
            yield Peer(
                name,
                heleket,
                "{ USD = 500 }",
                f'merchant = "{MERCHANT}"\napi_key = "{API_KEY}"\nbase_url = "{url}/"',
                provider,
                heleket.pay,
                heleket.webhook_delivery,
                lambda _: ("POST", "/v1/payment/info"),
            )
            await provider.aclose()


def peer_config(peer: Peer, *, watcher: bool) -> str:
    pollers = ("crypto_payment_watcher", "reconciliation")
    switch = "" if watcher else "".join(f"[actors.{n}]\nenabled = false\n" for n in pollers)
    return (
        switch
        + f"""
[plans.peer_month]
title = {{ en = "1 month" }}
duration_days = 30
backend = "marzban"
prices = {{ {peer.name} = {peer.price} }}

[plugins.settings.{peer.name}]
{peer.settings}
"""
    )


async def deliver_until_cut(url: str, headers: dict[str, str], body: bytes) -> str:
    """The peer's first delivery of the notification, waiting as long as the process
    takes: the kill cuts it, so it never gets its 200."""
    try:
        async with httpx.AsyncClient(timeout=PATIENCE * 2) as client:
            response = await client.post(url, headers=headers, content=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return str(response.status_code)


async def redeliver(url: str, headers: dict[str, str], body: bytes) -> list[str]:
    """The peer sending the notification again, as it does until it gets a 200: the
    verdicts of the 200 it gets."""
    async with httpx.AsyncClient(timeout=PATIENCE) as client:
        response = await client.post(url, headers=headers, content=body)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


# Each peer once and each way of finding the payment once: the crash is in the core's
# crediting, which both peers share; each peer's watcher and webhook have tests of their own.
@pytest.mark.parametrize(
    ("peer_name", "found_by"), [("yookassa", "notification"), ("heleket", "watcher")]
)
async def test_a_sigkill_inside_the_crediting_transaction_ends_in_one_credit(
    db: Database, database_dsn: str, tmp_path: Path, peer_name: str, found_by: str
) -> None:
    """``notification``: the payment watcher and reconciliation are off, the peer's next
    delivery credits it. ``watcher``: they are on and find it at the API first; the next
    delivery is a duplicate."""
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    async with emulator.running(), panel.running(), running_peer(peer_name) as peer:
        payer = emulator.create_user(PAYER, first_name="Payer")
        port, public_port = free_port(), free_port()
        config = write_config(
            tmp_path / "vpnbot.toml",
            port=port,
            public_port=public_port,
            dsn=database_dsn,
            telegram=emulator.url,
            panel=panel.url,
            crypto="http://127.0.0.1:9",
            instance="alpha",
            extra=peer_config(peer, watcher=found_by == "watcher"),
        )
        webhook = f"http://127.0.0.1:{public_port}/webhooks/payments/{peer_name}"
        settings = load_settings(config, environ={})
        billing = Billing(
            db,
            Catalog.from_settings(settings),
            {peer_name: peer.provider},
            _Alerts(),
            balance_currency="RUB",
        )
        lock = await db.open_session()
        running: list[Vpnbot] = []
        try:
            alpha = Vpnbot(config, tmp_path / "alpha.log", port)
            running.append(alpha)
            await alpha.wait_ready()

            # the user buys: the intent stored and the payment created at the peer
            checkout = await billing.buy(PAYER, "peer_month", peer_name)
            intent_id, payment_id = checkout.payment.id, checkout.invoice.external_id or ""
            assert payment_id

            # whatever credits it first will wait for this row, inside its transaction
            await run_asyncio(lock.execute, "begin")
            await run_asyncio(
                lock.execute, "select 1 from payments where id = $1::uuid for update", intent_id
            )
            peer.pay(payment_id)
            first: list[str] = []
            async with trio.open_nursery() as nursery:

                async def first_delivery() -> None:
                    first.append(await deliver_until_cut(webhook, *peer.notification(payment_id)))

                nursery.start_soon(first_delivery)

                async def caught_crediting() -> bool:
                    confirmed = peer.fake.calls(*peer.confirm_path(payment_id))
                    waiting = await value(
                        db,
                        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                        " and datname = current_database() and query like '%finalize_charge%'",
                    )
                    return bool(confirmed) and bool(waiting)

                await until(
                    caught_crediting, seconds=PATIENCE, what="the credit held before its commit"
                )
                await alpha.kill()
                running.remove(alpha)
            assert first and first[0] != "200", first
            with trio.CancelScope(shield=True):
                await run_asyncio(lock.close)

            async def money() -> dict[str, object]:
                (payment,) = await rows(
                    db,
                    "select status, external_id from payments where id = $1::uuid",
                    intent_id,
                )
                subscriptions = await value(
                    db, "select count(*) from subscriptions where user_id = $1", PAYER
                )
                return {"payment": payment, "subscriptions": subscriptions}

            assert await money() == {
                "payment": {"status": "invoiced", "external_id": payment_id},
                "subscriptions": 0,
            }, "the killed transaction committed something"

            alpha = Vpnbot(config, tmp_path / "alpha.log", port)
            running.append(alpha)
            await alpha.wait_ready()
            if found_by == "notification":  # the peer's next attempt
                retried = await redeliver(webhook, *peer.notification(payment_id))
                assert retried == ["credited"], retried

            async def told() -> bool:
                return any(is_payment_received(m) for m in payer.messages(from_bot=True))

            await until(told, seconds=PATIENCE, what="Payment received")

            async def active() -> bool:
                status = await value(
                    db, "select activation_status from subscriptions where user_id = $1", PAYER
                )
                return bool(status == "active")

            await until(active, seconds=PATIENCE, what="the subscription activated")
            assert await redeliver(webhook, *peer.notification(payment_id)) == ["duplicate"]
        finally:
            codes = [await process.stop() for process in running]
            with trio.CancelScope(shield=True):
                await run_asyncio(lock.close)
        assert codes == [0], "\n".join(p.tail() for p in running)

    payments = await rows(
        db,
        "select id::text, status, external_id from payments where provider = $1",
        peer_name,
    )
    assert payments == [{"id": intent_id, "status": "finalized", "external_id": payment_id}]
    (subscription,) = await rows(
        db,
        "select plan_id, kind, expires_at - starts_at as length from subscriptions"
        " where user_id = $1",
        PAYER,
    )
    assert (subscription["plan_id"], subscription["length"].days) == ("peer_month", 30)
    received = [m for m in payer.messages(from_bot=True) if is_payment_received(m)]
    assert len(received) == 1, [m.content for m in payer.messages(from_bot=True)]
    assert len(panel_users := list(panel.users)) == 1, panel_users
