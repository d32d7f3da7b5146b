"""What every payment ends in, on a real PostgreSQL, with the real Remnawave backend against
its fake panel on 127.0.0.1 (its links stay the same until the panel revokes them):

- a message saying what the user now has, once per payment: ``access_ready`` the first
  time, ``access_extended`` (the new expiry and the link) after that, and the new link with
  its QR code when the link changed;
- paying from the balance, charged once per screen, whatever clicks and reruns;
- a purchase during a trial that upgrades the trial instead of starting a second account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from plugins.remnawave import RemnawaveBackend, RemnawaveSettings
from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.i18n import load_translator
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, job_kinds, renewals, users
from runtime.storage import subscriptions as subs
from runtime.storage.balance_payments import Basis, Outcome
from runtime.storage.payments import Verdict
from runtime.storage.subscriptions import Subscription
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.workers._render import Photo, Text, render, template_params

from .conftest import Alerts, InChatProvider

USER = 3003
OWNER = "worker-a"
TOKEN = "remnawave-api-token-for-tests"
SQUAD = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
PRICE = 19900
GIB = 2**30

SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month"},
                "duration_days": 30,
                "backend": "remnawave",
                "prices": {"stars": {"XTR": 150}, "card": {"RUB": PRICE}},
                "traffic_limit_gb": 100,
            }
        },
        "trial": {"enabled": True, "backend": "remnawave", "duration_hours": 24},
    }
)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_settings(SETTINGS)


@pytest.fixture
async def panel() -> AsyncIterator[FakeRemnawave]:
    fake = FakeRemnawave(api_token=TOKEN, internal_squads={SQUAD: "Main"})
    async with fake.running():
        yield fake


@pytest.fixture
async def access(
    db: Database, catalog: Catalog, panel: FakeRemnawave, alerts: Alerts
) -> AsyncIterator[Access]:
    backend = RemnawaveBackend(
        RemnawaveSettings.model_validate(
            {"base_url": panel.url, "api_token": TOKEN, "internal_squads": [SQUAD]}
        )
    )
    yield Access(db, catalog, {"remnawave": backend}, alerts)
    await backend.aclose()


@pytest.fixture
def billing(db: Database, catalog: Catalog, alerts: Alerts) -> Billing:
    providers = {"stars": InChatProvider("stars"), "card": InChatProvider("card", "RUB")}
    return Billing(db, catalog, providers, alerts, balance_currency="RUB")


# -- helpers ---------------------------------------------------------------------------------


async def pay(billing: Billing, charge: str) -> tuple[str, Subscription]:
    """A purchase of "month" with Stars, credited: (payment id, subscription)."""
    checkout = await billing.buy(USER, "month", "stars")
    result = await billing.confirm(
        ConfirmedPayment("stars", charge, checkout.payment.id, 150, "XTR")
    )
    assert result.verdict is Verdict.CREDITED and result.subscription is not None
    return checkout.payment.id, result.subscription


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def access_notices(db: Database) -> list[dict[str, Any]]:
    """The messages that follow activations, in order: dedup key, template, params."""
    found = await rows(
        db,
        "select dedup_key, payload from outbox where kind = $1"
        " and dedup_key like 'notify:access:%' order by id",
        job_kinds.NOTIFY,
    )
    return [
        {"key": r["dedup_key"], "template": r["payload"]["template"], **r["payload"]["params"]}
        for r in found
    ]


async def current(db: Database, subscription_id: int) -> Subscription:
    found = await subs.get(db, subscription_id)
    assert found is not None
    return found


async def give_balance(db: Database, amount: int) -> None:
    async def unit(conn: Connection) -> None:
        await users.ensure_user(conn, USER)
        await users.add_balance(conn, USER, amount)

    await db.transaction(unit)


async def balance(db: Database) -> int:
    found = await users.get_user(db, USER)
    assert found is not None
    return found.balance_minor


def shown(notice: dict[str, Any]) -> list[Text | Photo]:
    """The notice as the notifier renders it, in English."""
    params = {k: v for k, v in notice.items() if k not in ("key", "template")}
    payload = {"chat_id": USER, "template": notice["template"], "params": params}
    return render(load_translator(), "en", payload)


def expires_text(moment: datetime) -> str:
    return str(template_params({"expires_at": moment.isoformat()}, "en")["expires"])


# -- one message per payment -----------------------------------------------------------------


async def test_every_payment_ends_in_a_message_with_the_new_expiry_and_the_link(
    db: Database, billing: Billing, access: Access, alerts: Alerts
) -> None:
    first_payment, first = await pay(billing, "c1")
    assert await access.activate_batch(OWNER) == 1
    link = (await current(db, first.id)).access_url
    assert link

    second_payment, extended = await pay(billing, "c2")
    assert extended.id == first.id
    assert await access.activate_batch(OWNER) == 1
    third_payment, again = await pay(billing, "c3")
    assert await access.activate_batch(OWNER) == 1

    ready, *extensions = await access_notices(db)
    assert ready["key"] == f"notify:access:{first.id}:payment:{first_payment}"
    assert ready["template"] == "access_ready"
    assert [(n["key"], n["template"]) for n in extensions] == [
        (f"notify:access:{first.id}:payment:{second_payment}", "access_extended"),
        (f"notify:access:{first.id}:payment:{third_payment}", "access_extended"),
    ]
    assert [n["expires_at"] for n in extensions] == [
        extended.expires_at.isoformat(),
        again.expires_at.isoformat(),
    ]
    [message] = shown(extensions[-1])
    assert isinstance(message, Text)
    assert expires_text(again.expires_at) in message.text
    assert link in message.text  # the link it still works with, said again
    assert alerts.alerts == []


async def test_a_changed_link_is_sent_again_with_its_qr_code(
    db: Database, billing: Billing, access: Access, panel: FakeRemnawave
) -> None:
    _, first = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    old_link = (await current(db, first.id)).access_url
    account = panel.user(first.vpn_account or "")
    assert account is not None
    account["shortUuid"] = "revokedAndNew0001"  # the panel revoked the old subscription link

    payment, extended = await pay(billing, "c2")
    await access.activate_batch(OWNER)

    new_link = (await current(db, first.id)).access_url
    assert new_link and new_link != old_link
    notice = (await access_notices(db))[-1]
    assert notice["key"] == f"notify:access:{first.id}:payment:{payment}"
    assert (notice["template"], notice["access_url"]) == ("access_extended_new_link", new_link)
    [photo] = shown(notice)
    assert isinstance(photo, Photo) and photo.png.startswith(b"\x89PNG")
    assert photo.caption is not None
    assert new_link in photo.caption and expires_text(extended.expires_at) in photo.caption


async def test_a_payments_message_is_queued_once_however_often_its_activation_runs(
    db: Database, billing: Billing, access: Access
) -> None:
    """An activation whose worker was killed after the panel call and its commit, before
    the job was completed, runs again: the user still gets one message per payment."""
    first_payment, first = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    second_payment, _ = await pay(billing, "c2")
    await access.activate_batch(OWNER)
    for _ in range(2):
        await rows(
            db,
            "update outbox set status = 'pending', next_attempt_at = now(), claimed_by = null,"
            " claim_expires_at = null where kind = $1",
            job_kinds.ACTIVATE,
        )
        assert await access.activate_batch(OWNER) == 2
    notices = await access_notices(db)
    assert [(n["key"], n["template"]) for n in notices] == [
        (f"notify:access:{first.id}:payment:{first_payment}", "access_ready"),
        (f"notify:access:{first.id}:payment:{second_payment}", "access_extended"),
    ]


# -- a purchase during a trial ---------------------------------------------------------------


async def test_a_purchase_during_a_trial_upgrades_the_trial(
    db: Database, billing: Billing, access: Access, panel: FakeRemnawave
) -> None:
    trial = await access.start_trial(USER)
    await access.activate_batch(OWNER)
    link = (await current(db, trial.id)).access_url
    assert link

    payment, paid = await pay(billing, "c1")

    assert paid.id == trial.id  # one subscription, one account
    assert (paid.kind, paid.plan_id) == ("paid", "month")
    assert paid.expires_at == trial.expires_at + timedelta(days=30)  # after the trial's end
    assert len(await subs.of_user(db, USER)) == 1
    assert await access.activate_batch(OWNER) == 1
    [account] = panel.users.values()
    assert account["username"] == trial.vpn_account
    assert account["trafficLimitBytes"] == 100 * GIB  # the plan's terms now
    upgraded = await current(db, trial.id)
    assert upgraded.access_url == link
    notices = await access_notices(db)
    assert [(n["key"], n["template"]) for n in notices] == [
        (f"notify:access:{trial.id}", "access_ready"),
        (f"notify:access:{trial.id}:payment:{payment}", "access_extended"),
    ]
    assert notices[-1]["expires_at"] == paid.expires_at.isoformat()


async def test_a_purchase_after_the_trial_ended_starts_a_subscription_of_its_own(
    db: Database, billing: Billing, access: Access
) -> None:
    trial = await access.start_trial(USER)
    await rows(db, "update subscriptions set status = 'expired' where id = $1", trial.id)
    _, paid = await pay(billing, "c1")
    assert paid.id != trial.id and paid.kind == "paid"
    remaining = paid.expires_at - datetime.now(UTC)
    assert timedelta(days=29, hours=23) < remaining <= timedelta(days=30)


# -- paying from the balance -----------------------------------------------------------------


async def test_paying_from_the_balance_charges_once_for_a_double_click_and_a_rerun(
    db: Database, billing: Billing, access: Access
) -> None:
    _, first = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    await give_balance(db, 50_000)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.covered
    assert (offer.price_minor, offer.currency, offer.balance_minor) == (PRICE, "RUB", 50_000)
    assert offer.basis.subscription_id == first.id

    outcomes: list[Outcome] = []

    async def click() -> None:
        outcomes.append((await billing.pay_from_balance(USER, "month", offer.basis)).outcome)

    async with trio.open_nursery() as nursery:  # a double (here: fivefold) click
        for _ in range(5):
            nursery.start_soon(click)
    rerun = await billing.pay_from_balance(USER, "month", offer.basis)  # the callback again

    assert sorted(outcomes) == sorted([Outcome.PAID] + [Outcome.ALREADY_PAID] * 4)
    assert rerun.outcome is Outcome.ALREADY_PAID
    assert await balance(db) == 50_000 - PRICE
    charged = await rows(
        db, "select id::text as id, amount_minor, status from payments where provider = 'balance'"
    )
    assert [(c["amount_minor"], c["status"]) for c in charged] == [(PRICE, "finalized")]
    assert rerun.payment_id == charged[0]["id"]
    extended = await current(db, first.id)
    assert extended.expires_at == first.expires_at + timedelta(days=30)
    assert rerun.subscription is not None and rerun.subscription.id == first.id

    assert await access.activate_batch(OWNER) == 1
    notice = (await access_notices(db))[-1]
    assert notice["key"] == f"notify:access:{first.id}:payment:{charged[0]['id']}"
    assert notice["template"] == "access_extended"
    assert notice["expires_at"] == extended.expires_at.isoformat()


async def test_paying_from_the_balance_needs_the_money_and_the_screen_it_was_shown(
    db: Database, billing: Billing
) -> None:
    await give_balance(db, PRICE - 1)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and not offer.covered
    short = await billing.pay_from_balance(USER, "month", offer.basis)
    assert (short.outcome, short.balance_minor) == (Outcome.INSUFFICIENT, PRICE - 1)

    await give_balance(db, 1)
    _, bought = await pay(billing, "c1")  # the screen is out of date now
    stale = await billing.pay_from_balance(USER, "month", offer.basis)
    assert stale.outcome is Outcome.CHANGED
    assert stale.basis.subscription_id == bought.id
    forged = await billing.pay_from_balance(USER, "month", Basis(bought.id, 1))
    assert forged.outcome is Outcome.CHANGED
    assert await balance(db) == PRICE
    assert await rows(db, "select 1 from payments where provider = 'balance'") == []


async def test_a_balance_payment_and_the_automatic_renewal_of_one_period_charge_once(
    db: Database, billing: Billing
) -> None:
    _, bought = await pay(billing, "c1")
    await give_balance(db, 2 * PRICE)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None
    renewed = await renewals.renew(
        db,
        renewals.Candidate(
            subscription_id=bought.id,
            user_id=USER,
            plan_id="month",
            expires_at=bought.expires_at,
            balance_minor=2 * PRICE,
            reminded_low=False,
            reminded_unavailable=False,
        ),
        price_minor=PRICE,
        currency="RUB",
        duration=timedelta(days=30),
    )
    assert renewed.outcome is renewals.Outcome.SKIPPED  # auto-renew is off: turn it on
    await users.set_auto_renew(db, USER, True)
    renewed = await renewals.renew(
        db,
        renewals.Candidate(bought.id, USER, "month", bought.expires_at, 2 * PRICE, False, False),
        price_minor=PRICE,
        currency="RUB",
        duration=timedelta(days=30),
    )
    assert renewed.outcome is renewals.Outcome.RENEWED

    late = await billing.pay_from_balance(USER, "month", offer.basis)

    assert late.outcome is Outcome.ALREADY_PAID  # that period is paid, by the renewal
    assert late.payment_id == renewed.payment_id
    assert await balance(db) == PRICE


async def test_a_first_purchase_from_the_balance_starts_or_upgrades_one_subscription(
    db: Database, billing: Billing, access: Access
) -> None:
    await give_balance(db, 3 * PRICE)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.basis == Basis(0, 0)
    bought = await billing.pay_from_balance(USER, "month", offer.basis)
    twice = await billing.pay_from_balance(USER, "month", offer.basis)
    assert (bought.outcome, twice.outcome) == (Outcome.PAID, Outcome.ALREADY_PAID)
    assert bought.subscription is not None and bought.subscription.kind == "paid"
    assert await balance(db) == 2 * PRICE

    # that subscription ends: the next purchase has a basis of its own, after the ended one
    await rows(db, "update subscriptions set status = 'expired'")
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.basis == Basis(0, bought.subscription.id)
    again = await billing.pay_from_balance(USER, "month", offer.basis)
    assert again.outcome is Outcome.PAID
    assert again.subscription is not None and again.subscription.id != bought.subscription.id
    assert await balance(db) == PRICE


async def test_paying_from_the_balance_during_a_trial_upgrades_it(
    db: Database, billing: Billing, access: Access
) -> None:
    trial = await access.start_trial(USER)
    await give_balance(db, PRICE)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.basis.subscription_id == trial.id
    paid = await billing.pay_from_balance(USER, "month", offer.basis)
    assert paid.outcome is Outcome.PAID and paid.subscription is not None
    assert (paid.subscription.id, paid.subscription.kind) == (trial.id, "paid")
    assert paid.subscription.expires_at == trial.expires_at + timedelta(days=30)
    assert len(await subs.of_user(db, USER)) == 1
    assert await balance(db) == 0
