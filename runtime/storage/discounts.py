"""Discounts: a personal percentage, and next-purchase percentages used up by one purchase.

They do not stack: a purchase gets the largest one the user has (a personal one on a tie,
since it is not used up). The price is the list price less the percent, rounded up to a
whole minor unit (Stars are whole units already), never below the currency's floor (a
provider's minimum) and never above the list price; a discount that would not lower the
price is not applied.

A next-purchase discount prices one payment at a time (a unique index on
``payments.next_discount_id``): a newer intent takes it over, and the intent that held it
is priced back to its list price in the same transaction (its invoice, if paid at the old
amount, is then refused as a mismatch and recorded for a refund, as any wrong amount is).
The purchase that is credited with it marks it used, in the crediting transaction (a
trigger on ``payments``); a credited or refunded payment keeps it, so a refund does not
give it back. Money is serialised per user: every function here runs under the caller's
lock of the user's row, which ``finalize_charge`` takes too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._database import Connection, Database, fetch_one

MAX_SOURCE = 64


@dataclass(frozen=True, slots=True)
class Discount:
    kind: str
    """``personal`` or ``next_purchase``."""
    percent: int
    source: str
    """Where it came from: ``promo:<code id>`` or ``admin:<telegram id>``."""
    next_discount_id: int | None = None


@dataclass(frozen=True, slots=True)
class Priced:
    amount_minor: int
    original_minor: int
    discount: Discount | None
    """The discount applied, None when the list price stands."""


def discounted_amount(original_minor: int, percent: int, floor_minor: int = 1) -> int:
    """``original_minor`` less ``percent``, rounded up, not below ``floor_minor`` nor above
    the original."""
    if not 0 <= percent < 100:
        raise ValueError("a discount is 0 to 99 percent")
    reduced = -(-original_minor * (100 - percent) // 100)
    return min(original_minor, max(reduced, floor_minor, 1))


def price(original_minor: int, discount: Discount | None, floor_minor: int = 1) -> Priced:
    if discount is None:
        return Priced(original_minor, original_minor, None)
    amount = discounted_amount(original_minor, discount.percent, floor_minor)
    if amount >= original_minor:
        return Priced(original_minor, original_minor, None)
    return Priced(amount, original_minor, discount)


_BEST = """
select kind, percent, source, next_id from (
    select 'personal' as kind, percent, source, null::bigint as next_id, 1 as rank
    from promo_personal_discounts where user_id = $1
    union all
    select 'next_purchase', percent, source, id, 0
    from promo_next_discounts where user_id = $1 and used_by is null
) as offered
order by percent desc, rank desc, next_id
limit 1
"""


async def best(conn: Connection, user_id: int) -> Discount | None:
    """The largest discount the user has now, inside the caller's unit of work."""
    row = await conn.fetchrow(_BEST, user_id)
    if row is None:
        return None
    return Discount(row["kind"], row["percent"], row["source"], row["next_id"])


async def offered(db: Database, user_id: int) -> Discount | None:
    """The discount a purchase by the user would get now (for the prices on screen)."""

    async def unit(conn: Connection) -> Discount | None:
        return await best(conn, user_id)

    return await db.read(unit)


async def take_over(conn: Connection, next_discount_id: int) -> None:
    """Free a next-purchase discount for a new payment: the open intent holding it goes
    back to its list price; a refused charge holding it (it bought nothing) lets go."""
    await conn.execute(
        "update payments set amount_minor = original_amount_minor,"
        " original_amount_minor = null, discount_percent = null, discount_source = null,"
        " next_discount_id = null where next_discount_id = $1"
        " and status in ('created', 'invoiced', 'expired', 'failed')",
        next_discount_id,
    )
    await conn.execute(
        "update payments set next_discount_id = null where next_discount_id = $1"
        " and status = 'paid' and refused is not null",
        next_discount_id,
    )


def source_of(discount: Discount) -> str:
    return f"{discount.kind}:{discount.source}"[:80]


def recorded(priced: Priced) -> tuple[int | None, int | None, str | None, int | None]:
    """What a payment row records of its price: ``original_amount_minor``,
    ``discount_percent``, ``discount_source`` and ``next_discount_id`` (all None at the
    list price)."""
    discount = priced.discount
    if discount is None:
        return None, None, None, None
    return priced.original_minor, discount.percent, source_of(discount), discount.next_discount_id


async def priced_for(
    conn: Connection, user_id: int, original_minor: int, min_price: int | None
) -> Priced:
    """The price of a purchase for the user, whose row the caller has locked: with their
    discount when ``min_price`` is given (discounts are on), else the list price. Nothing
    is taken over yet (see ``take_over``)."""
    if min_price is None:
        return Priced(original_minor, original_minor, None)
    return price(original_minor, await best(conn, user_id), min_price)


async def claim(conn: Connection, priced: Priced) -> None:
    """Free the next-purchase discount ``priced`` uses (if any) for the payment the caller
    records next."""
    if priced.discount is not None and priced.discount.next_discount_id is not None:
        await take_over(conn, priced.discount.next_discount_id)


async def set_personal(conn: Connection, user_id: int, percent: int, source: str) -> None:
    """Set the user's personal discount (0 removes it), inside the caller's unit."""
    if percent <= 0:
        await conn.execute("delete from promo_personal_discounts where user_id = $1", user_id)
        return
    await conn.execute(
        "insert into promo_personal_discounts (user_id, percent, source) values ($1, $2, $3)"
        " on conflict (user_id) do update set percent = $2, source = $3, updated_at = now()",
        user_id,
        percent,
        source[:MAX_SOURCE],
    )


async def raise_personal(conn: Connection, user_id: int, percent: int, source: str) -> int:
    """Raise the user's personal discount to ``percent`` (a smaller one stays as it is);
    returns the discount the user has now."""
    kept: int = await conn.fetchval(
        "insert into promo_personal_discounts (user_id, percent, source) values ($1, $2, $3)"
        " on conflict (user_id) do update set"
        " percent = greatest(promo_personal_discounts.percent, excluded.percent),"
        " source = case when excluded.percent > promo_personal_discounts.percent"
        " then excluded.source else promo_personal_discounts.source end, updated_at = now()"
        " returning percent",
        user_id,
        percent,
        source[:MAX_SOURCE],
    )
    return kept


async def add_next_purchase(conn: Connection, user_id: int, percent: int, source: str) -> int:
    """Give the user a next-purchase discount; returns its id."""
    row = await fetch_one(
        conn,
        "insert into promo_next_discounts (user_id, percent, source) values ($1, $2, $3)"
        " returning id",
        user_id,
        percent,
        source[:MAX_SOURCE],
    )
    return int(row["id"])


@dataclass(frozen=True, slots=True)
class PaymentDiscount:
    """What a payment row says of its price."""

    amount_minor: int
    original_amount_minor: int | None
    discount_percent: int | None
    discount_source: str | None
    next_discount_id: int | None


async def of_payment(db: Database, payment_id: str) -> PaymentDiscount | None:
    async def unit(conn: Connection) -> PaymentDiscount | None:
        row = await conn.fetchrow(
            "select amount_minor, original_amount_minor, discount_percent, discount_source,"
            " next_discount_id from payments where id = $1::uuid",
            payment_id,
        )
        return PaymentDiscount(**dict(row)) if row is not None else None

    return await db.read(unit)
