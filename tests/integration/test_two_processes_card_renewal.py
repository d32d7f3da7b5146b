"""Saved-card renewals with two ``vpnbot run`` processes on one database: one charge per
subscription period at YooKassa, a declined card falling back to the balance once.

Users buy a month through YooKassa with their consent to save the card (the billing core
in this test, against the peer's fake, before the processes start). Both processes run
with ``saved_methods = true``, a one-hour renewal lead and the auto_renewal worker
scanning every second; then every subscription is made due at once, so both renewers
meet the same subscriptions. The peer declines a few of the charges (insufficient funds).

Afterwards: each subscription is one period longer; the peer holds one charge per
subscription, under one idempotence key per period; the card users' balance is
untouched and they hear "extended" once; the declined users paid once from their balance
and hear "renewed from your balance" once (then "extended" once, after the activation).
Both processes took part in the scans; the log lines show which renewed what.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from plugins.yookassa import YooKassaProvider
from plugins.yookassa.settings import NOTIFICATION_NETWORKS
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import load_settings
from runtime.storage import Database
from runtime.storage.renewals import renewal_charge_id
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.fakes.yookassa import IP_HEADER, FakeYooKassa
from runtime.testing.telegram import TelegramEmulator

from .processes import (
    PANEL_PASSWORD,
    PANEL_USER,
    PATIENCE,
    TOKEN,
    Vpnbot,
    log_records,
    rows,
    until,
    value,
    write_config,
)
from .test_process import free_port

SHOP, SECRET = "607080", "test_TwoProcessCardRenewals_01"
USERS = 30
DECLINED = 5
FIRST_USER = 5_400_001
CARD_PRICE = 29900
BALANCE_PRICE = 19900
BALANCE = 50000
EXTENDED = "Your VPN access is extended"
FROM_BALANCE = "Your subscription was renewed from your balance"


def card_config(yookassa: str) -> str:
    return f"""
[reminders]
auto_renew_lead_hours = 1

[plans.card_month]
title = {{ en = "Card month" }}
duration_days = 30
backend = "marzban"
prices = {{ yookassa = {{ RUB = {CARD_PRICE} }}, card = {{ RUB = {BALANCE_PRICE} }} }}

[plugins.settings.yookassa]
shop_id = "{SHOP}"
secret_key = "{SECRET}"
base_url = "{yookassa}/v3/"
saved_methods = true

[actors.auto_renewal]
interval_seconds = 1
"""


class _Alerts:
    def submit(self, alert: object) -> None:
        pass


async def buy_with_saved_cards(db: Database, config: Path, fake: FakeYooKassa) -> None:
    """What the bot's "save card" purchase does, for every user: bought, paid, notified."""
    provider = YooKassaProvider(
        SHOP,
        SECRET,
        base_url=f"{fake.url}/v3/",
        client_ip_header=IP_HEADER,
        networks=NOTIFICATION_NETWORKS,
        saved_methods=True,
    )
    billing = Billing(
        db,
        Catalog.from_settings(load_settings(config, environ={})),
        {"yookassa": provider},
        _Alerts(),
        balance_currency="RUB",
    )
    try:
        for user_id in range(FIRST_USER, FIRST_USER + USERS):
            checkout = await billing.buy(user_id, "card_month", "yookassa", save_method=True)
            payment_id = checkout.invoice.external_id or ""
            fake.pay(payment_id, last4=f"{user_id % 10_000:04d}")
            await billing.webhook("yookassa", *fake.notification(payment_id))
    finally:
        await provider.aclose()
    await value(
        db,
        "update users set balance_minor = $1 where telegram_id >= $2 returning 1",
        BALANCE,
        FIRST_USER,
    )


def saved_charges(fake: FakeYooKassa) -> list[dict[str, Any]]:
    return [p for p in fake.payments.values() if "_method_id" in p]


async def test_two_processes_charge_each_saved_card_once_per_period(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    fake = FakeYooKassa(SHOP, SECRET)
    async with emulator.running(), panel.running(), fake.running() as yookassa:
        for user_id in range(FIRST_USER, FIRST_USER + USERS):
            emulator.create_user(user_id, first_name="Card")
        ports = [free_port(), free_port()]
        configs = [
            write_config(
                tmp_path / f"p{i}.toml",
                port=port,
                dsn=database_dsn,
                telegram=emulator.url,
                panel=panel.url,
                crypto="http://127.0.0.1:9",
                instance=f"card-{i}",
                extra=card_config(yookassa),
            )
            for i, port in enumerate(ports)
        ]
        await buy_with_saved_cards(db, configs[0], fake)
        methods = await rows(
            db, "select user_id, method_ref from saved_payment_methods where revoked_at is null"
        )
        assert len(methods) == USERS
        owner_of = {m["method_ref"]: m["user_id"] for m in methods}
        processes = [
            Vpnbot(config, tmp_path / f"p{i}.log", port)
            for i, (config, port) in enumerate(zip(configs, ports, strict=True))
        ]
        try:

            async def both_ready() -> bool:
                return all([await p.ready() for p in processes])

            try:
                await until(both_ready, seconds=PATIENCE, what="both processes ready")
            except AssertionError:
                raise AssertionError("\n".join(p.tail() for p in processes)) from None

            async def bought_active() -> bool:
                active = await value(
                    db,
                    "select count(*) from subscriptions where activation_status = 'active'",
                )
                return bool(active == USERS)

            await until(bought_active, seconds=PATIENCE, what="the purchases activated")

            for _ in range(DECLINED):
                fake.script_charge("canceled", reason="insufficient_funds")
            due = await rows(
                db,
                "update subscriptions set expires_at = now() + interval '30 minutes'"
                " returning id, user_id, expires_at",
            )
            assert len(due) == USERS

            async def renewed() -> bool:
                done = await value(
                    db,
                    "select count(*) from subscriptions s join unnest($1::bigint[],"
                    " $2::timestamptz[]) as d(id, was) on d.id = s.id"
                    " where s.expires_at > d.was and s.activation_status = 'active'",
                    [d["id"] for d in due],
                    [d["expires_at"] for d in due],
                )
                pending = await value(db, "select count(*) from outbox where status <> 'done'")
                return bool(done == USERS and pending == 0)

            try:
                await until(renewed, seconds=PATIENCE, what="every subscription renewed")
            except AssertionError:
                charges = await rows(db, "select * from renewal_charges")
                raise AssertionError(f"{charges}\n{processes[0].tail()}") from None
            await trio.sleep(3)  # time for a second charge or message to show up
            await emulator.wait_drained(timeout=PATIENCE)
        finally:
            codes = [await process.stop() for process in processes]
        assert codes == [0, 0], "\n".join(p.tail() for p in processes)

    # at the peer: one charge per subscription, each under its period's key
    charges = saved_charges(fake)
    assert len(charges) == USERS
    charged = Counter(owner_of[c["_method_id"]] for c in charges)
    assert charged == {d["user_id"]: 1 for d in due}
    declined = {owner_of[c["_method_id"]] for c in charges if c["status"] == "canceled"}
    assert len(declined) == DECLINED
    assert all(
        c["status"] == "succeeded" for c in charges if owner_of[c["_method_id"]] not in declined
    )
    keys = Counter(
        r.headers["idempotence-key"]
        for r in fake.calls("POST", "/v3/payments")
        if "payment_method_id" in r.json()
    )
    assert set(keys) == {renewal_charge_id(d["id"], d["expires_at"]) for d in due}

    # in the database: each subscription one period longer, paid once
    for d in due:
        (sub,) = await rows(db, "select expires_at from subscriptions where id = $1", d["id"])
        assert sub["expires_at"] - d["expires_at"] == timedelta(days=30), d
    renewals = await rows(
        db,
        "select user_id, provider, status, amount_minor from payments where purpose = 'renewal'",
    )
    finalized = Counter(
        (r["user_id"], r["provider"], r["amount_minor"])
        for r in renewals
        if r["status"] == "finalized"
    )
    for d in due:
        user_id = d["user_id"]
        if user_id in declined:
            assert finalized[(user_id, "balance", BALANCE_PRICE)] == 1
            assert (user_id, "yookassa", CARD_PRICE) not in finalized
        else:
            assert finalized[(user_id, "yookassa", CARD_PRICE)] == 1
            assert (user_id, "balance", BALANCE_PRICE) not in finalized
    assert sum(finalized.values()) == USERS
    balances = {
        r["telegram_id"]: r["balance_minor"]
        for r in await rows(db, "select telegram_id, balance_minor from users")
    }
    for d in due:
        paid = BALANCE_PRICE if d["user_id"] in declined else 0
        assert balances[d["user_id"]] == BALANCE - paid, d
    states = Counter(r["status"] for r in await rows(db, "select status from renewal_charges"))
    assert states == {"succeeded": USERS - DECLINED, "failed": DECLINED}

    # one renewal message each
    for d in due:
        texts = [m.content or "" for m in emulator.messages(d["user_id"], from_bot=True)]
        by_card = sum(t.startswith(EXTENDED) for t in texts)
        by_balance = sum(t.startswith(FROM_BALANCE) for t in texts)
        # the balance renewal says so, and its activation then says "extended" too
        expected = (1, 1) if d["user_id"] in declined else (1, 0)
        assert (by_card, by_balance) == expected, texts

    # who renewed what: both processes scanned the same subscriptions
    renewing = ("renewed by the saved card", "renewed from the balance")
    work = {
        i: sum(r.get("event") in renewing for r in log_records(p.log.read_text()))
        for i, p in enumerate(processes)
    }
    print(f"\nrenewals by process: {work}")
    assert sum(work.values()) == USERS
