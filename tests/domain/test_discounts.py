"""Discounted purchases on a real PostgreSQL: the price, what the intent records, no
stacking, and a next-purchase discount credited at most once."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
import trio

from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, discounts, grants, renewals, users
from runtime.storage import promo as store
from runtime.storage.balance_payments import Outcome
from runtime.storage.discounts import discounted_amount
from runtime.storage.payments import Verdict
from runtime.storage.promo import Kind, NewCode

from .conftest import Alerts, InChatProvider

USER = 2001


@pytest.fixture
def billing(db: Database, catalog: Catalog, alerts: Alerts) -> Billing:
    providers = {"stars": InChatProvider("stars"), "card": InChatProvider("card", "RUB")}
    return Billing(
        db,
        catalog,
        providers,
        alerts,
        balance_currency="RUB",
        discounts_enabled=True,
        min_prices={"RUB": 10000},
    )


async def give(db: Database, code: str, kind: Kind, percent: int, user_id: int = USER) -> None:
    await store.create(db, NewCode(code, kind, percent), actor=grants.admin_actor(1))
    result = await store.activate(db, code, user_id, plans={}, backend="marzban")
    assert result.refusal is None


def paid(payment_id: str, amount: int, *, charge: str, provider: str = "stars") -> ConfirmedPayment:
    currency = "XTR" if provider == "stars" else "RUB"
    return ConfirmedPayment(provider, charge, payment_id, amount, currency)


async def row(db: Database, query: str, *args: object) -> dict[str, object]:
    async def unit(conn: Connection) -> dict[str, object]:
        found = await conn.fetchrow(query, *args)
        return dict(found) if found else {}

    return await db.read(unit)


def test_rounding_is_up_to_a_whole_minor_unit_and_never_below_the_floor() -> None:
    assert discounted_amount(150, 10) == 135
    assert discounted_amount(150, 33) == 101  # 100.5 Stars: whole Stars, rounded up
    assert discounted_amount(19900, 15) == 16915
    assert discounted_amount(19900, 99, 10000) == 10000
    assert discounted_amount(5000, 50, 10000) == 5000  # below the floor already: list price
    assert discounted_amount(1, 99) == 1


async def test_without_a_discount_the_list_price_stands(billing: Billing, db: Database) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    assert checkout.payment.amount_minor == 150
    recorded = await discounts.of_payment(db, checkout.payment.id)
    assert recorded is not None and recorded.discount_percent is None


async def test_the_invoice_and_the_intent_carry_the_discounted_price(
    billing: Billing, db: Database
) -> None:
    await give(db, "TWENTY", Kind.DISCOUNT, 20)
    offered = await billing.discount(USER)
    assert offered is not None and offered.percent == 20
    assert billing.discounted(150, "XTR", offered) == 120
    checkout = await billing.buy(USER, "month", "stars")
    assert checkout.payment.amount_minor == 120
    recorded = await discounts.of_payment(db, checkout.payment.id)
    assert recorded is not None
    assert (recorded.original_amount_minor, recorded.discount_percent) == (150, 20)
    assert recorded.discount_source is not None
    assert recorded.discount_source.startswith("personal:promo:")
    card = await billing.buy(USER, "month", "card")
    assert card.payment.amount_minor == 15920  # 19900 less 20%
    result = await billing.confirm(paid(checkout.payment.id, 120, charge="c1"))
    assert result.verdict is Verdict.CREDITED
    assert await billing.discount(USER) == offered  # a personal discount stays


async def test_discounts_do_not_stack_the_largest_applies(billing: Billing, db: Database) -> None:
    await give(db, "TEN", Kind.DISCOUNT, 10)
    await give(db, "NEXT25", Kind.NEXT_DISCOUNT, 25)
    await give(db, "NEXT5", Kind.NEXT_DISCOUNT, 5)
    checkout = await billing.buy(USER, "month", "stars")
    assert checkout.payment.amount_minor == 113  # 25% off 150, rounded up: not 35%
    recorded = await discounts.of_payment(db, checkout.payment.id)
    assert recorded is not None and recorded.discount_percent == 25
    assert recorded.next_discount_id is not None


async def test_a_next_purchase_discount_is_used_by_the_credited_purchase_only(
    billing: Billing, db: Database
) -> None:
    await give(db, "NEXT30", Kind.NEXT_DISCOUNT, 30)
    checkout = await billing.buy(USER, "month", "stars")
    assert checkout.payment.amount_minor == 105
    unused = await row(db, "select used_by from promo_next_discounts")
    assert unused == {"used_by": None}  # an unpaid invoice uses nothing
    result = await billing.confirm(paid(checkout.payment.id, 105, charge="c1"))
    assert result.verdict is Verdict.CREDITED
    used = await row(db, "select used_by::text as used_by from promo_next_discounts")
    assert used == {"used_by": checkout.payment.id}
    again = await billing.buy(USER, "month", "stars")
    assert again.payment.amount_minor == 150


async def test_a_newer_invoice_takes_the_discount_and_the_older_goes_back_to_list_price(
    billing: Billing, db: Database, alerts: Alerts
) -> None:
    await give(db, "NEXT30", Kind.NEXT_DISCOUNT, 30)
    first = await billing.buy(USER, "month", "stars")
    second = await billing.buy(USER, "month", "card")
    assert (first.payment.amount_minor, second.payment.amount_minor) == (105, 13930)
    older = await discounts.of_payment(db, first.payment.id)
    assert older is not None
    assert (older.amount_minor, older.discount_percent, older.next_discount_id) == (150, None, None)
    # the old invoice paid at the old discounted amount buys nothing: a mismatch, recorded
    late = await billing.confirm(paid(first.payment.id, 105, charge="late"))
    assert late.verdict is Verdict.MISMATCH
    credited = await billing.confirm(paid(second.payment.id, 13930, charge="c2", provider="card"))
    assert credited.verdict is Verdict.CREDITED
    assert await row(
        db, "select count(*) as n from promo_next_discounts where used_by is null"
    ) == {"n": 0}


async def test_two_discounted_payments_at_once_credit_one_discount_once(
    billing: Billing, db: Database
) -> None:
    """Whatever the order, at most one purchase is credited at the discount, enforced by
    the database: a second payment carrying the discount cannot exist."""
    await give(db, "NEXT50", Kind.NEXT_DISCOUNT, 50)
    checkouts = []

    async def buy(provider: str) -> None:
        checkouts.append(await billing.buy(USER, "month", provider))

    async with trio.open_nursery() as nursery:
        for provider in ("stars", "card", "stars", "card"):
            nursery.start_soon(buy, provider)
    verdicts = []

    async def pay(index: int) -> None:
        checkout = checkouts[index]
        confirmed = paid(
            checkout.payment.id,
            checkout.payment.amount_minor,
            charge=f"c{index}",
            provider=checkout.payment.provider,
        )
        verdicts.append((await billing.confirm(confirmed)).verdict)

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(pay, index)
    discounted = await row(
        db,
        "select count(*) as n from payments where status = 'finalized'"
        " and discount_percent is not null",
    )
    assert discounted == {"n": 1}
    assert verdicts.count(Verdict.CREDITED) + verdicts.count(Verdict.MISMATCH) == 4
    used = await row(db, "select count(*) as n from promo_next_discounts where used_by is not null")
    assert used == {"n": 1}


async def test_the_database_refuses_a_second_payment_with_one_next_discount(
    billing: Billing, db: Database
) -> None:
    await give(db, "NEXT10", Kind.NEXT_DISCOUNT, 10)
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id, 135, charge="c1"))

    async def forge(conn: Connection) -> None:
        await conn.execute(
            "insert into payments (user_id, provider, amount_minor, currency, purpose,"
            " plan_id, original_amount_minor, discount_percent, discount_source,"
            " next_discount_id) select $1, 'stars', 135, 'XTR', 'subscription', 'month', 150,"
            " 10, 'next_purchase:forged', id from promo_next_discounts",
            USER,
        )

    with pytest.raises(asyncpg.UniqueViolationError):
        await db.transaction(forge)


async def test_a_refund_does_not_give_the_discount_back(billing: Billing, db: Database) -> None:
    await give(db, "NEXT40", Kind.NEXT_DISCOUNT, 40)
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id, 90, charge="c1"))
    await billing.refund(checkout.payment.id)
    assert await billing.discount(USER) is None
    assert (await billing.buy(USER, "month", "stars")).payment.amount_minor == 150


async def test_paying_from_the_balance_gets_the_same_discount_and_uses_it_up(
    billing: Billing, db: Database
) -> None:
    async def top_up(conn: Connection) -> None:
        await users.ensure_user(conn, USER)
        await users.add_balance(conn, USER, 50000)

    await db.transaction(top_up)
    await give(db, "NEXT25", Kind.NEXT_DISCOUNT, 25)
    stale = await billing.buy(USER, "month", "card")  # an open invoice holds it first
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.price_minor == 14925 and offer.discount is not None
    result = await billing.pay_from_balance(USER, "month", offer.basis)
    assert result.outcome is Outcome.PAID and result.price_minor == 14925
    assert result.balance_minor == 50000 - 14925
    assert result.payment_id is not None
    recorded = await discounts.of_payment(db, result.payment_id)
    assert recorded is not None and recorded.original_amount_minor == 19900
    held = await discounts.of_payment(db, stale.payment.id)
    assert held is not None and (held.amount_minor, held.next_discount_id) == (19900, None)
    assert await billing.discount(USER) is None
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.price_minor == 19900


async def test_the_balance_floor_is_the_currencys_least_price(
    billing: Billing, db: Database
) -> None:
    await give(db, "HUGE", Kind.DISCOUNT, 90)
    offer = await billing.balance_offer(USER, "month")
    assert offer is not None and offer.price_minor == 10000
    assert (await billing.buy(USER, "month", "stars")).payment.amount_minor == 15


async def test_an_automatic_renewal_gets_the_discount_and_uses_a_next_purchase_one(
    billing: Billing, db: Database
) -> None:
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(paid(checkout.payment.id, 150, charge="c1"))

    async def top_up(conn: Connection) -> None:
        await users.add_balance(conn, USER, 50000)

    await db.transaction(top_up)
    await users.set_auto_renew(db, USER, True)
    await give(db, "NEXT10", Kind.NEXT_DISCOUNT, 10)
    [candidate] = await renewals.due(db, lead=timedelta(days=31))
    result = await renewals.renew(
        db,
        candidate,
        price_minor=19900,
        currency="RUB",
        duration=timedelta(days=30),
        min_price=10000,
    )
    assert result.outcome is renewals.Outcome.RENEWED and result.payment_id is not None
    assert result.balance_minor == 50000 - 17910
    recorded = await discounts.of_payment(db, result.payment_id)
    assert recorded is not None
    assert (recorded.amount_minor, recorded.original_amount_minor) == (17910, 19900)
    assert recorded.next_discount_id is not None
    assert await billing.discount(USER) is None  # used up by the renewal
