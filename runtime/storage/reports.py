"""What the shop did over a period (the last day, 7 or 30 days, rolling): new users,
trials, first purchases and how many came from a trial, revenue by provider and
currency, refunds, churn, and the grants of the audit log by kind (promo codes,
referral rewards, admins' gifts): the effect of each on the numbers above."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ._database import Connection, Database, fetch_one

PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}


@dataclass(frozen=True, slots=True)
class Income:
    provider: str
    currency: str
    amount_minor: int
    payments: int


@dataclass(frozen=True, slots=True)
class GrantTotals:
    kind: str
    """The family of the audit action: ``promo``, ``referral``, ``days``, ``balance``..."""
    count: int
    users: int
    days: int
    balance_minor: int


@dataclass(frozen=True, slots=True)
class Report:
    period: str
    new_users: int
    trials: int
    first_purchases: int
    from_trial: int
    """First purchases by users who had a trial before."""
    active_paid: int
    """Now, not over the period."""
    churned: int
    """Users whose paid access ended in the period and who have none now."""
    refunds: int
    income: tuple[Income, ...]
    grants: tuple[GrantTotals, ...]


_PEOPLE = """
select count(*) filter (where created_at >= now() - $1::interval) as new_users,
       count(*) filter (where trial_used_at >= now() - $1::interval) as trials
from users
"""

_FIRST = """
with first as (
    select p.user_id, min(p.finalized_at) as at
    from payments p
    where p.purpose = 'subscription' and p.finalized_at is not null
      and p.status in ('finalized', 'refunded')
    group by p.user_id
)
select count(*) as first_purchases,
       count(*) filter (where u.trial_used_at is not null and u.trial_used_at < f.at)
           as from_trial
from first f join users u on u.telegram_id = f.user_id
where f.at >= now() - $1::interval
"""

_CHURN = """
select count(distinct s.user_id) as churned
from subscriptions s
where s.kind = 'paid' and s.expires_at >= now() - $1::interval and s.expires_at <= now()
  and not exists (
      select 1 from subscriptions a
      where a.user_id = s.user_id and a.kind = 'paid' and a.status = 'active'
        and a.expires_at > now()
  )
"""

_ACTIVE = """
select count(distinct user_id) as active_paid from subscriptions
where kind = 'paid' and status = 'active' and expires_at > now()
"""

_INCOME = """
select provider, currency, sum(amount_minor) as amount, count(*) as payments
from payments
where status = 'finalized' and finalized_at >= now() - $1::interval
group by provider, currency order by provider, currency
"""

_GRANTS = """
select split_part(action, '.', 1) as kind, count(*) as count,
       count(distinct user_id) as users,
       coalesce(sum(days), 0) as days, coalesce(sum(balance_delta_minor), 0) as balance
from audit_log
where at >= now() - $1::interval and (days is not null or balance_delta_minor is not null)
group by 1 order by 1
"""


async def report(db: Database, period: str) -> Report:
    """The report for ``period`` (a key of ``PERIODS``), read in one snapshot."""
    span = PERIODS[period]

    async def unit(conn: Connection) -> Report:
        people = await fetch_one(conn, _PEOPLE, span)
        first = await fetch_one(conn, _FIRST, span)
        churn = await fetch_one(conn, _CHURN, span)
        active = await fetch_one(conn, _ACTIVE)
        refunds: int = await conn.fetchval(
            "select count(*) from payments where status = 'refunded'"
            " and refunded_at >= now() - $1::interval",
            span,
        )
        income = await conn.fetch(_INCOME, span)
        grants = await conn.fetch(_GRANTS, span)
        return Report(
            period=period,
            new_users=people["new_users"],
            trials=people["trials"],
            first_purchases=first["first_purchases"],
            from_trial=first["from_trial"],
            active_paid=active["active_paid"],
            churned=churn["churned"],
            refunds=refunds,
            income=tuple(
                Income(r["provider"], r["currency"], int(r["amount"]), r["payments"])
                for r in income
            ),
            grants=tuple(
                GrantTotals(r["kind"], r["count"], r["users"], int(r["days"]), int(r["balance"]))
                for r in grants
            ),
        )

    return await db.transaction(unit, retry=True, isolation="repeatable_read")
