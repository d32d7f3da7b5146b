"""Crediting exactly once, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from runtime.billing import Billing, ProviderUnavailable
from runtime.catalog import Catalog
from runtime.failures import DomainError
from runtime.plugin_api.payments import ConfirmedPayment, TelegramPayment
from runtime.storage import Connection, Database, job_kinds, users
from runtime.storage import subscriptions as subs
from runtime.storage.payments import Verdict

from .conftest import Alerts, InChatProvider

USER = 1001


@pytest.fixture
def billing(db: Database, catalog: Catalog, alerts: Alerts) -> Billing:
    providers = {"stars": InChatProvider("stars"), "card": InChatProvider("card", "RUB")}
    return Billing(db, catalog, providers, alerts, balance_currency="RUB")


def paid(
    payment_id: str,
    *,
    charge: str = "charge-1",
    amount: int = 150,
    currency: str = "XTR",
    provider: str = "stars",
) -> ConfirmedPayment:
    return ConfirmedPayment(provider, charge, payment_id, amount, currency)


async def outbox_rows(db: Database) -> list[tuple[str, str]]:
    async def unit(conn: Connection) -> list[tuple[str, str]]:
        rows = await conn.fetch("select kind, dedup_key from outbox order by id")
        return [(r["kind"], r["dedup_key"]) for r in rows]

    return await db.read(unit)


async def test_checkout_stores_the_intent_before_the_invoice(billing: Billing) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    assert checkout.payment.amount_minor == 150 and checkout.payment.currency == "XTR"
    assert checkout.invoice.send_in_chat == {"payload": checkout.payment.id}


async def test_unknown_plan_or_provider_is_a_domain_error(billing: Billing) -> None:
    with pytest.raises(DomainError):
        await billing.buy(USER, "year", "stars")
    with pytest.raises(ProviderUnavailable):
        await billing.buy(USER, "month", "cryptobot")


async def test_a_payment_credits_a_subscription_and_queues_its_side_effects(
    billing: Billing, db: Database
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    result = await billing.confirm(paid(checkout.payment.id))
    assert result.verdict is Verdict.CREDITED
    assert result.subscription is not None
    remaining = result.subscription.expires_at - datetime.now(UTC)
    assert timedelta(days=29, hours=23) < remaining <= timedelta(days=30)
    assert await outbox_rows(db) == [
        (job_kinds.ACTIVATE, f"activate:{result.subscription.id}:payment:{checkout.payment.id}"),
        (job_kinds.NOTIFY, f"notify:payment:{checkout.payment.id}"),
    ]


async def test_concurrent_double_finalization_credits_once(billing: Billing, db: Database) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    verdicts: list[Verdict] = []

    async def deliver() -> None:
        verdicts.append((await billing.confirm(paid(checkout.payment.id))).verdict)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(deliver)
    for _ in range(10):
        await deliver()
    assert verdicts.count(Verdict.CREDITED) == 1
    assert verdicts.count(Verdict.DUPLICATE) == 19
    owned = await subs.of_user(db, USER)
    assert len(owned) == 1
    assert owned[0].expires_at - owned[0].starts_at == timedelta(days=30)
    kinds = [kind for kind, _ in await outbox_rows(db)]
    assert kinds.count(job_kinds.ACTIVATE) == 1
    assert kinds.count(job_kinds.NOTIFY) == 1


async def test_two_payments_of_one_user_at_once_extend_one_subscription_twice(
    billing: Billing, db: Database
) -> None:
    first = await billing.buy(USER, "month", "stars")
    second = await billing.buy(USER, "month", "stars")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(billing.confirm, paid(first.payment.id, charge="c1"))
        nursery.start_soon(billing.confirm, paid(second.payment.id, charge="c2"))
    owned = await subs.of_user(db, USER)
    assert len(owned) == 1
    assert owned[0].expires_at - owned[0].starts_at == pytest.approx(
        timedelta(days=60), abs=timedelta(seconds=5)
    )


async def test_extension_starts_from_the_later_of_now_and_the_expiry(
    billing: Billing, db: Database
) -> None:
    first = await billing.buy(USER, "month", "stars")
    credited = await billing.confirm(paid(first.payment.id, charge="c1"))
    assert credited.subscription is not None
    second = await billing.buy(USER, "month", "stars")
    extended = await billing.confirm(paid(second.payment.id, charge="c2"))
    assert extended.subscription is not None
    assert extended.subscription.id == credited.subscription.id
    assert extended.subscription.expires_at - credited.subscription.expires_at == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )


@pytest.mark.parametrize(
    ("amount", "currency", "provider"),
    [(1, "XTR", "stars"), (150, "USD", "stars"), (150, "XTR", "card")],
)
async def test_tampered_payments_are_refused_and_alerted(
    billing: Billing, db: Database, alerts: Alerts, amount: int, currency: str, provider: str
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    result = await billing.confirm(
        paid(checkout.payment.id, amount=amount, currency=currency, provider=provider)
    )
    assert result.verdict is Verdict.MISMATCH
    assert await subs.of_user(db, USER) == []
    assert await outbox_rows(db) == []
    assert alerts.keys() == [f"payment_mismatch:{provider}:{checkout.payment.id}"]
    assert result.recorded is not None and result.recorded.refused == "mismatch"
    # the same refused charge again: a logged skip, no second alert
    again = await billing.confirm(
        paid(checkout.payment.id, amount=amount, currency=currency, provider=provider)
    )
    assert again.verdict is Verdict.DUPLICATE
    assert len(alerts.keys()) == 1


async def test_a_refusal_whose_commit_answer_was_lost_is_alerted_by_the_retry(
    billing: Billing, db: Database, catalog: Catalog, alerts: Alerts
) -> None:
    """The first attempt recorded the refusal and its COMMIT's answer never came (a
    failover): the retry sees a duplicate, and the admin is still told, once."""
    from runtime.storage import payments

    checkout = await billing.buy(USER, "month", "stars")
    tampered = paid(checkout.payment.id, amount=1)
    terms = {plan.id: plan.terms for plan in catalog.plans}
    charge = payments.Charge("stars", tampered.external_id, checkout.payment.id, 1, "XTR")
    first = await payments.finalize(db, charge, terms)  # committed, never alerted
    assert first.verdict is Verdict.MISMATCH and alerts.keys() == []

    retried = await billing.confirm(tampered)
    assert retried.verdict is Verdict.DUPLICATE
    assert alerts.keys() == [f"payment_mismatch:stars:{checkout.payment.id}"]
    assert first.recorded is not None
    assert f"/refund {first.recorded.id}" in alerts.alerts[0].text
    await billing.confirm(tampered)  # another delivery: alerted already
    assert len(alerts.keys()) == 1


async def test_unknown_intents_are_alerted_under_one_key_of_our_own(
    billing: Billing, alerts: Alerts
) -> None:
    for payload in ("4b1d7a0e-0000-4000-8000-000000000000", "not-a-uuid", "x" * 5000):
        result = await billing.confirm(paid(payload, charge=f"{payload[:20]}-charge"))
        assert result.verdict is Verdict.UNKNOWN_INTENT
        assert result.recorded is None  # no payer known: nobody to record it against
    assert alerts.keys() == ["payment_unknown_intent:stars"] * 3


async def test_alert_keys_never_carry_what_the_sender_chose(
    billing: Billing, alerts: Alerts
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    chosen = "chosen-by-sender:<b>key</b>"
    await billing.confirm(paid(checkout.payment.id, charge=chosen, amount=1))
    await billing.confirm(paid(checkout.payment.id, charge="c-ok"))
    await billing.confirm(paid(checkout.payment.id, charge=chosen + "2"))
    await billing.confirm(paid(chosen, charge=chosen + "3"))
    assert alerts.keys() == [
        f"payment_mismatch:stars:{checkout.payment.id}",
        f"payment_extra_charge:stars:{checkout.payment.id}",
        "payment_unknown_intent:stars",
    ]


async def test_amounts_a_row_cannot_hold_are_refused_not_crashed(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    for amount in (2**63, 0, -150):
        result = await billing.confirm(paid(checkout.payment.id, amount=amount))
        assert result.verdict is Verdict.MISMATCH and result.recorded is None
    long_id = await billing.confirm(paid(checkout.payment.id, charge="c" * 300))
    assert long_id.verdict is Verdict.MISMATCH
    assert await subs.of_user(db, USER) == []
    assert (await billing.confirm(paid(checkout.payment.id))).verdict is Verdict.CREDITED


def sent(
    payment_id: str,
    *,
    payer: int = USER,
    charge: str = "charge-1",
    amount: int = 150,
    currency: str = "XTR",
) -> TelegramPayment:
    return TelegramPayment(payer, currency, amount, payment_id, charge)


async def test_a_payer_who_is_not_the_owner_is_recorded_and_refunded_to_the_payer(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    stranger = USER + 1
    checkout = await billing.buy(USER, "month", "stars")

    result = await billing.confirm_telegram(sent(checkout.payment.id, payer=stranger))

    assert result.verdict is Verdict.FOREIGN_PAYER
    assert await subs.of_user(db, USER) == [] and await subs.of_user(db, stranger) == []
    assert await outbox_rows(db) == []
    recorded = result.recorded
    assert recorded is not None
    assert (recorded.user_id, recorded.status, recorded.refused, recorded.paid_for) == (
        stranger,
        "paid",
        "foreign_payer",
        checkout.payment.id,
    )
    assert alerts.keys() == [f"payment_foreign_payer:stars:{checkout.payment.id}"]
    assert f"/refund {recorded.id}" in alerts.alerts[0].text
    again = await billing.confirm_telegram(sent(checkout.payment.id, payer=stranger))
    assert again.verdict is Verdict.DUPLICATE and len(alerts.keys()) == 1

    # the money goes back to whoever paid it, and the owner loses nothing
    refunded = await billing.refund(recorded.id)
    stars = billing.providers["stars"]
    assert isinstance(stars, InChatProvider) and stars.refunds == [("charge-1", stranger)]
    assert (refunded.payment.status, refunded.access_revoked, refunded.balance_taken_minor) == (
        "refunded",
        False,
        0,
    )
    assert await outbox_rows(db) == [(job_kinds.NOTIFY, f"notify:refund:{recorded.id}")]
    # the owner's own invoice is still theirs to pay
    own = await billing.confirm_telegram(sent(checkout.payment.id, charge="charge-2"))
    assert own.verdict is Verdict.CREDITED


async def test_a_telegram_payment_in_another_currency_is_a_mismatch(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    result = await billing.confirm_telegram(sent(checkout.payment.id, currency="RUB"))
    assert result.verdict is Verdict.MISMATCH
    assert "RUB" in result.reason
    assert result.recorded is not None and result.recorded.provider == "stars"
    assert await subs.of_user(db, USER) == []
    again = await billing.confirm_telegram(sent(checkout.payment.id, currency="RUB"))
    assert again.verdict is Verdict.DUPLICATE
    assert alerts.keys() == [f"payment_mismatch:stars:{checkout.payment.id}"]


async def test_a_telegram_payment_for_no_intent_is_recorded_against_its_payer(
    billing: Billing, alerts: Alerts
) -> None:
    result = await billing.confirm_telegram(sent("no-such-intent", payer=4444, currency="RUB"))
    assert result.verdict is Verdict.UNKNOWN_INTENT
    assert result.recorded is not None
    assert (result.recorded.user_id, result.recorded.provider) == (4444, "card")  # by currency
    again = await billing.confirm_telegram(sent("no-such-intent", payer=4444, currency="RUB"))
    assert again.verdict is Verdict.DUPLICATE
    assert alerts.keys() == ["payment_unknown_intent:card"]


async def test_a_second_charge_for_a_paid_intent_is_recorded_not_credited(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id, charge="c1"))
    result = await billing.confirm(paid(checkout.payment.id, charge="c2"))
    assert result.verdict is Verdict.EXTRA_CHARGE
    owned = await subs.of_user(db, USER)
    assert owned[0].expires_at - owned[0].starts_at == timedelta(days=30)

    async def unit(conn: Connection) -> str:
        return str(await conn.fetchval("select status from payments where external_id = 'c2'"))

    assert await db.read(unit) == "paid"
    assert alerts.keys() == [f"payment_extra_charge:stars:{checkout.payment.id}"]
    assert result.recorded is not None and result.recorded.paid_for == checkout.payment.id


async def test_top_up_credits_the_balance(billing: Billing, db: Database) -> None:
    checkout = await billing.top_up(USER, 30000, "card")
    result = await billing.confirm(
        paid(checkout.payment.id, amount=30000, currency="RUB", provider="card")
    )
    assert result.verdict is Verdict.CREDITED and result.balance_minor == 30000
    user = await users.get_user(db, USER)
    assert user is not None and user.balance_minor == 30000


async def test_concurrent_spending_never_goes_negative(db: Database) -> None:
    async def setup(conn: Connection) -> None:
        await users.ensure_user(conn, USER)
        await users.add_balance(conn, USER, 100)

    await db.transaction(setup)
    results: list[int | None] = []

    async def spend() -> None:
        async def unit(conn: Connection) -> int | None:
            return await users.spend_balance(conn, USER, 60)

        results.append(await db.transaction(unit))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(spend)
    assert sorted(results, key=lambda r: r is None) == [40, None, None, None, None]


async def test_refund_through_stars_revokes_a_fresh_subscription(
    billing: Billing, db: Database
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id))
    refunded = await billing.refund(checkout.payment.id)
    assert refunded.access_revoked
    stars = billing.providers["stars"]
    assert isinstance(stars, InChatProvider) and stars.refunds == [("charge-1", USER)]
    owned = await subs.of_user(db, USER)
    assert owned[0].status == "revoked"
    kinds = [kind for kind, _ in await outbox_rows(db)]
    assert job_kinds.REVOKE in kinds
    with pytest.raises(DomainError):
        await billing.refund(checkout.payment.id)


async def test_refund_of_an_extension_shortens_the_subscription(
    billing: Billing, db: Database
) -> None:
    first = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(first.payment.id, charge="c1"))
    second = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(second.payment.id, charge="c2"))
    refunded = await billing.refund(second.payment.id)
    assert not refunded.access_revoked
    owned = await subs.of_user(db, USER)
    assert owned[0].status == "active"
    assert owned[0].expires_at - owned[0].starts_at == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )


async def test_a_manual_refund_records_without_the_provider(billing: Billing) -> None:
    checkout = await billing.buy(USER, "month", "card")
    await billing.confirm(paid(checkout.payment.id, amount=19900, currency="RUB", provider="card"))
    with pytest.raises(DomainError):
        await billing.refund(checkout.payment.id)  # cards cannot refund through the API
    refunded = await billing.refund(checkout.payment.id, through_provider=False)
    assert refunded.payment.status == "refunded"


async def outbox_payloads(db: Database) -> dict[str, dict[str, object]]:
    async def unit(conn: Connection) -> dict[str, dict[str, object]]:
        rows = await conn.fetch("select dedup_key, payload, max_attempts from outbox")
        return {r["dedup_key"]: {**r["payload"], "max_attempts": r["max_attempts"]} for r in rows}

    return await db.read(unit)


async def test_a_credit_writes_the_jobs_the_workers_read(
    db: Database, catalog: Catalog, alerts: Alerts
) -> None:
    billing = Billing(
        db,
        catalog,
        {"stars": InChatProvider("stars"), "card": InChatProvider("card", "RUB")},
        alerts,
        balance_currency="RUB",
        activation_max_attempts=4,
    )
    bought = await billing.buy(USER, "month", "stars")
    credited = await billing.confirm(paid(bought.payment.id))
    topped = await billing.top_up(USER, 500, "card")
    balance = await billing.confirm(
        paid(topped.payment.id, charge="t1", amount=500, currency="RUB", provider="card")
    )
    subscription = credited.subscription
    assert subscription is not None and balance.balance_minor == 500
    assert credited.payment is not None and credited.payment.status == "finalized"
    assert credited.payment.subscription_id == subscription.id
    assert subscription.vpn_account == subs.account_name(USER, subscription.id)
    payloads = await outbox_payloads(db)
    assert payloads[f"activate:{subscription.id}:payment:{bought.payment.id}"] == {
        "subscription_id": subscription.id,
        "payment_id": bought.payment.id,
        "max_attempts": 4,
    }
    notice = payloads[f"notify:payment:{bought.payment.id}"]
    assert notice == {
        "chat_id": USER,
        "template": "payment_received",
        "params": {
            "amount_minor": 150,
            "currency": "XTR",
            "balance_minor": None,
            "plan_id": "month",
            "expires_at": subscription.expires_at.isoformat(),
        },
        "max_attempts": 10,
    }
    assert payloads[f"notify:payment:{topped.payment.id}"]["params"] == {
        "amount_minor": 500,
        "currency": "RUB",
        "balance_minor": 500,
        "plan_id": None,
        "expires_at": None,
    }


async def test_concurrent_deliveries_of_a_refused_charge_record_it_once(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    verdicts: list[Verdict] = []

    async def deliver() -> None:
        result = await billing.confirm_telegram(sent(checkout.payment.id, payer=USER + 7))
        verdicts.append(result.verdict)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(deliver)
    assert sorted(verdicts) == sorted([Verdict.FOREIGN_PAYER] + [Verdict.DUPLICATE] * 7)

    async def unit(conn: Connection) -> list[tuple[int, str | None]]:
        rows = await conn.fetch(
            "select user_id, refused from payments where external_id = $1", "charge-1"
        )
        return [(r["user_id"], r["refused"]) for r in rows]

    assert await db.read(unit) == [(USER + 7, "foreign_payer")]
    assert await outbox_rows(db) == [] and len(alerts.keys()) == 1


async def test_two_charges_racing_for_one_intent_credit_one_and_record_the_other(
    billing: Billing, db: Database
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    verdicts: list[Verdict] = []

    async def deliver(charge: str) -> None:
        verdicts.append((await billing.confirm(paid(checkout.payment.id, charge=charge))).verdict)

    async with trio.open_nursery() as nursery:
        for charge in ("c1", "c2"):
            nursery.start_soon(deliver, charge)
    assert sorted(verdicts) == sorted([Verdict.CREDITED, Verdict.EXTRA_CHARGE])
    owned = await subs.of_user(db, USER)
    assert len(owned) == 1 and owned[0].expires_at - owned[0].starts_at == timedelta(days=30)


async def test_a_purchase_whose_plan_left_the_catalog_fails_and_changes_nothing(
    db: Database, alerts: Alerts
) -> None:
    from runtime.storage import payments

    intent = await payments.create_intent(
        db,
        user_id=USER,
        provider="stars",
        amount_minor=150,
        currency="XTR",
        purpose="subscription",
        plan_id="gone",
        ttl_minutes=60,
    )
    charge = payments.Charge("stars", "c1", intent.id, 150, "XTR")
    with pytest.raises(LookupError, match="gone"):
        await payments.finalize(db, charge, {})
    stored = await payments.get(db, intent.id)
    assert stored is not None and stored.status == "created"
    assert await outbox_rows(db) == [] and await subs.of_user(db, USER) == []


async def test_a_refund_telegram_made_elsewhere_is_recorded_once_and_told(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    """Telegram's support gave the Stars back: access goes, the user is told, the admins are
    alerted; the same notice again (a redelivered update) changes nothing."""
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id))
    refunded = await billing.refunded_by_provider("stars", "charge-1", payer_id=USER)
    assert refunded is not None and refunded.access_revoked
    assert await billing.refunded_by_provider("stars", "charge-1", payer_id=USER) is None
    stars = billing.providers["stars"]
    assert isinstance(stars, InChatProvider) and stars.refunds == []  # nothing sent back again
    assert (await subs.of_user(db, USER))[0].status == "revoked"
    notices = [key for kind, key in await outbox_rows(db) if key.startswith("notify:refund:")]
    assert notices == [f"notify:refund:{checkout.payment.id}"]
    assert alerts.keys() == [f"refund_outside:{checkout.payment.id}"]


async def test_a_refund_notice_counts_only_for_a_credited_payment_of_its_payer(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    """Another user's charge, an unknown charge, a payment we refunded ourselves: nothing
    is recorded, nothing taken back, nobody alerted."""
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id))
    assert await billing.refunded_by_provider("stars", "charge-1", payer_id=USER + 1) is None
    assert await billing.refunded_by_provider("stars", "no-such-charge", payer_id=USER) is None
    assert (await subs.of_user(db, USER))[0].status == "active"
    await billing.refund(checkout.payment.id)  # ours: Telegram's notice of it follows
    assert await billing.refunded_by_provider("stars", "charge-1", payer_id=USER) is None
    notices = [key for kind, key in await outbox_rows(db) if key.startswith("notify:refund:")]
    assert len(notices) == 1
    assert alerts.keys() == []


async def test_a_refusal_alert_claim_retried_after_a_lost_commit_is_still_its_own(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    """The claim's own COMMIT answer lost, and the statement run again: the retry finds
    its token, so the alert is not lost; another claimer's token is not its own."""
    import uuid

    from runtime.storage import payments

    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id, amount=1))  # recorded, claimed, alerted
    token = uuid.uuid4()

    async def unclaim(conn: Connection) -> None:
        await conn.execute(
            "update payments set refusal_alerted_at = null where refused is not null"
        )

    await db.transaction(unclaim)
    first = await payments.claim_refusal_alert(
        db, provider="stars", external_id="charge-1", token=token
    )
    again = await payments.claim_refusal_alert(
        db, provider="stars", external_id="charge-1", token=token
    )
    other = await payments.claim_refusal_alert(db, provider="stars", external_id="charge-1")
    assert first[1] and again[1] and not other[1]
    assert first[0] is not None and first[0].refused == "mismatch"
    assert await payments.claim_refusal_alert(
        db, provider="stars", external_id="no-such-charge"
    ) == (None, False)
