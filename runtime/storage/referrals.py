"""Referrals and acquisition links: where users came from, and what their payments earn.

A user's origin (``user_origins``) is written once, at their first ``/start``: the
primary key lets one start win, the table refuses changes, and an inviter must have an
origin of their own already, so invitations never form a cycle (see the migration). A
payment that reaches ``finalized`` queues its rewards (``referral.reward``), one refunded
after that their clawback (``referral.clawback``), both by a trigger in the payment's own
transaction; ``reward_payment`` and ``claw_back`` are those jobs' units of work.

Every reward is a grant (``runtime.storage.grants``) under ``referral:<payment>:<level>``,
every clawback under ``referral-clawback:<payment>:<level>``: once each, whoever runs the
job, however often.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import asyncpg

from . import grants, job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .subscriptions import _COLUMNS as _SUBSCRIPTION_COLUMNS
from .users import _COLUMNS as _USER_COLUMNS
from .users import TOUCH, User, ensure_user

REWARD = "referral.reward"
"""Outbox kind: grant the rewards of a finalized payment (payload: payment_id)."""
CLAWBACK = "referral.clawback"
"""Outbox kind: take back the rewards of a refunded payment (payload: payment_id)."""
KINDS = (REWARD, CLAWBACK)

CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
CODE_LENGTH = 8
MAX_NAME = 64

ACTION_DAYS = "referral.reward_days"
ACTION_BALANCE = "referral.reward_balance"
ACTION_TAKE_DAYS = "referral.clawback_days"
ACTION_TAKE_BALANCE = "referral.clawback_balance"
ACTIONS = (ACTION_DAYS, ACTION_BALANCE, ACTION_TAKE_DAYS, ACTION_TAKE_BALANCE)


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def payment_key(payment_id: str) -> uuid.UUID:
    """The payment id a job names; ``ValueError`` when it is not one."""
    return uuid.UUID(payment_id)


def reward_key(payment_id: str, level: int) -> str:
    return f"referral:{payment_id}:{level}"


def clawback_key(payment_id: str, level: int) -> str:
    return f"referral-clawback:{payment_id}:{level}"


# -- origins --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """What a first start recorded."""

    invited_by: int | None
    ad_link_id: int | None


async def record_start(
    db: Database,
    user_id: int,
    *,
    referral_code: str | None = None,
    ad_code: str | None = None,
) -> Origin | None:
    """Record the user's first start, with its source when the code names one (an
    unknown code, or the user's own, records a start with no source). None when the user
    had started before: nothing changes."""

    async def unit(conn: Connection) -> Origin | None:
        await ensure_user(conn, user_id)
        row = await conn.fetchrow(
            "insert into user_origins (user_id, invited_by, ad_link_id)"
            " select $1,"
            " (select c.user_id from referral_codes c join user_origins o using (user_id)"
            "  where c.code = $2 and c.user_id <> $1),"
            " (select a.id from ad_links a where a.code = $3)"
            " on conflict (user_id) do nothing returning invited_by, ad_link_id",
            user_id,
            referral_code,
            ad_code,
        )
        return Origin(row["invited_by"], row["ad_link_id"]) if row else None

    return await db.transaction(unit, retry=True)


_TOUCH_AT_START = f"""
with touched as ({TOUCH}),
started as (
    insert into user_origins (user_id, invited_by, ad_link_id)
    select $1,
        (select c.user_id from referral_codes c join user_origins o using (user_id)
         where c.code = $6 and c.user_id <> $1),
        (select a.id from ad_links a where a.code = $7)
    from touched
    on conflict (user_id) do nothing
    returning user_id
)
select {_USER_COLUMNS} from touched
"""


async def touch_at_start(
    db: Database,
    user_id: int,
    *,
    username: str | None,
    language: str | None,
    name: str | None,
    admit: bool,
    referral_code: str | None = None,
    ad_code: str | None = None,
) -> User:
    """``users.touch_user`` and ``record_start`` in one statement, for a ``/start``: a
    user's first start costs no round trip of its own."""

    async def unit(conn: Connection) -> User:
        row = await fetch_one(
            conn,
            _TOUCH_AT_START,
            user_id,
            username,
            language,
            name,
            admit,
            referral_code,
            ad_code,
        )
        return User(**dict(row))

    return await db.statement(unit, retry=True)


async def inviter_of(db: Database, user_id: int) -> int | None:
    async def unit(conn: Connection) -> int | None:
        found: int | None = await conn.fetchval(
            "select invited_by from user_origins where user_id = $1", user_id
        )
        return found

    return await db.read(unit)


async def code_of(db: Database, user_id: int) -> str:
    """The user's referral code, made on first use. Asking for it counts as having
    started (an origin with no source): whoever shares a link can no longer be invited."""

    async def unit(conn: Connection) -> str:
        await ensure_user(conn, user_id)
        await conn.execute(
            "insert into user_origins (user_id) values ($1) on conflict do nothing", user_id
        )
        while True:
            code: str | None = await conn.fetchval(
                "insert into referral_codes (user_id, code) values ($1, $2)"
                " on conflict do nothing returning code",
                user_id,
                new_code(),
            )
            if code is None:
                code = await conn.fetchval(
                    "select code from referral_codes where user_id = $1", user_id
                )
            if code is not None:  # else the new code was another user's: draw again
                return code

    return await db.transaction(unit, retry=True)


# -- rewards --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Level:
    """What one level of inviters earns per payment (see ``[referrals] levels``)."""

    reward: Literal["days", "percent", "fixed"]
    amount: int
    every_payment: bool = False

    def balance_for(self, amount_minor: int, currency: str, balance_currency: str) -> int:
        """The balance this level earns for a payment (0 for a ``days`` level, and for a
        percentage of a payment in another currency)."""
        if self.reward == "fixed":
            return self.amount
        if self.reward == "percent" and currency == balance_currency:
            return amount_minor * self.amount // 100
        return 0


@dataclass(frozen=True, slots=True)
class Rules:
    levels: tuple[Level, ...]
    balance_currency: str
    backend: str | None
    """Where granted days go for a referrer with no subscription."""
    activation_attempts: int = 10


@dataclass(frozen=True, slots=True)
class Reward:
    level: int
    user_id: int
    days: int = 0
    balance_minor: int = 0


async def reward_payment(db: Database, payment_id: str, rules: Rules) -> list[Reward]:
    """Grant the rewards of a finalized payment to its payer's inviters, each once, and
    queue each inviter's message. Nothing for a payment that is not (or no longer)
    finalized: its row is share-locked first, so a refund waits for the rewards to commit
    (its clawback then takes them back) or commits first (and nothing is granted)."""
    key = payment_key(payment_id)

    async def unit(conn: Connection) -> list[Reward]:
        payment = await conn.fetchrow(
            "select id::text as id, user_id, amount_minor, currency, status, finalized_at"
            " from payments where id = $1 and provider <> 'balance' and refused is null"
            " for share",
            key,
        )
        if payment is None or payment["status"] != "finalized":
            return []
        chain = await conn.fetchrow(
            "select o1.invited_by as first, o2.invited_by as second from user_origins o1"
            " left join user_origins o2 on o2.user_id = o1.invited_by where o1.user_id = $1",
            payment["user_id"],
        )
        inviters = [chain["first"], chain["second"]] if chain else []
        first_payment = await conn.fetchval(
            "select not exists (select 1 from payments q where q.user_id = $1"
            " and q.provider <> 'balance' and q.refused is null and q.finalized_at is not null"
            " and (q.finalized_at, q.id) < ($2, $3))",
            payment["user_id"],
            payment["finalized_at"],
            key,
        )
        granted = []
        for number, (level, inviter) in enumerate(zip(rules.levels, inviters, strict=False), 1):
            if inviter is None or not (first_payment or level.every_payment):
                continue
            reward = await _grant(conn, payment, number, level, inviter, rules)
            if reward is not None:
                granted.append(reward)
        return granted

    return await db.transaction(unit, retry=True)


async def _grant(
    conn: Connection,
    payment: asyncpg.Record,
    number: int,
    level: Level,
    inviter: int,
    rules: Rules,
) -> Reward | None:
    key = reward_key(payment["id"], number)
    details = {"payment_id": payment["id"], "level": number, "referred": payment["user_id"]}
    params: dict[str, object]
    if level.reward == "days":
        if rules.backend is None:
            return None
        subscription = await grants.grant_days(
            conn,
            user_id=inviter,
            days=level.amount,
            backend=rules.backend,
            key=key,
            actor=grants.SYSTEM,
            action=ACTION_DAYS,
            details=details,
            max_attempts=rules.activation_attempts,
        )
        if subscription is None:
            return None
        reward = Reward(number, inviter, days=level.amount)
        template = "referral_reward_days"
        params = {"count": level.amount, "level": number}
    else:
        amount = level.balance_for(
            payment["amount_minor"], payment["currency"], rules.balance_currency
        )
        if amount <= 0:
            return None
        balance = await grants.grant_balance(
            conn,
            user_id=inviter,
            amount_minor=amount,
            key=key,
            actor=grants.SYSTEM,
            action=ACTION_BALANCE,
            details=details,
        )
        if balance is None:
            return None
        reward = Reward(number, inviter, balance_minor=amount)
        template = "referral_reward_balance"
        params = {
            "amount_minor": amount,
            "currency": rules.balance_currency,
            "balance_minor": balance,
            "level": number,
        }
    await enqueue(
        conn,
        kind=job_kinds.NOTIFY,
        dedup_key=f"notify:{key}",
        payload={"chat_id": inviter, "template": template, "params": params},
    )
    return reward


async def claw_back(
    db: Database, payment_id: str, *, balance_currency: str, activation_attempts: int = 10
) -> list[Reward]:
    """Take back what a refunded payment's rewards gave, each once: the balance as far as
    it goes (never below zero), the days from the inviter's running subscription (revoked
    when that leaves no time), and queue each inviter's message. Returns what was taken,
    as positive amounts."""

    async def unit(conn: Connection) -> list[Reward]:
        rows = await conn.fetch(
            "select grant_key, user_id, days, balance_delta_minor from audit_log"
            " where grant_key = any($1::text[]) order by grant_key",
            [reward_key(payment_id, n) for n in (1, 2)],
        )
        taken = []
        for row in rows:
            number = int(row["grant_key"].rsplit(":", 1)[1])
            key = clawback_key(payment_id, number)
            details = {"payment_id": payment_id, "level": number}
            if row["balance_delta_minor"]:
                amount = await grants.take_balance(
                    conn,
                    user_id=row["user_id"],
                    amount_minor=row["balance_delta_minor"],
                    key=key,
                    actor=grants.SYSTEM,
                    action=ACTION_TAKE_BALANCE,
                    details=details,
                )
                if amount is not None:
                    taken.append(Reward(number, row["user_id"], balance_minor=amount))
            elif row["days"] and await _take_days(
                conn, row["user_id"], row["days"], key, details, activation_attempts
            ):
                taken.append(Reward(number, row["user_id"], days=row["days"]))
        for reward in taken:
            await _tell_taken_back(conn, payment_id, reward, balance_currency)
        return taken

    return await db.transaction(unit, retry=True)


async def _tell_taken_back(
    conn: Connection, payment_id: str, reward: Reward, balance_currency: str
) -> None:
    if reward.days:
        template = "referral_reward_taken_back_days"
        params: dict[str, object] = {"count": reward.days, "level": reward.level}
    elif reward.balance_minor:
        template = "referral_reward_taken_back_balance"
        params = {
            "amount_minor": reward.balance_minor,
            "currency": balance_currency,
            "level": reward.level,
        }
    else:
        return  # the reward was spent already: nothing was taken
    await enqueue(
        conn,
        kind=job_kinds.NOTIFY,
        dedup_key=f"notify:{clawback_key(payment_id, reward.level)}",
        payload={"chat_id": reward.user_id, "template": template, "params": params},
    )


async def _take_days(
    conn: Connection,
    user_id: int,
    days: int,
    key: str,
    details: dict[str, object],
    max_attempts: int,
) -> bool:
    if not await grants.note(
        conn,
        actor=grants.SYSTEM,
        action=ACTION_TAKE_DAYS,
        user_id=user_id,
        key=key,
        days=-days,
        details=details,
    ):
        return False
    current = await conn.fetchrow(
        "select id from subscriptions where user_id = $1 and status = 'active'"
        " and expires_at > now() order by (kind = 'paid') desc, expires_at desc limit 1"
        " for update",
        user_id,
    )
    if current is None:
        return True  # the days ran out already
    row = await fetch_one(
        conn,
        "update subscriptions set"
        " status = case when expires_at - $2::interval <= now() then 'revoked' else status end,"
        " expires_at = greatest(expires_at - $2::interval, starts_at + interval '1 second'),"
        " activation_status = case when expires_at - $2::interval <= now()"
        " then activation_status else 'pending' end,"
        f" updated_at = now() where id = $1 returning {_SUBSCRIPTION_COLUMNS}",
        current["id"],
        timedelta(days=days),
    )
    revoked = row["status"] == "revoked"
    await enqueue(
        conn,
        kind=job_kinds.REVOKE if revoked else job_kinds.ACTIVATE,
        dedup_key=f"{'revoke' if revoked else 'activate'}:{row['id']}:{key}",
        payload={"subscription_id": row["id"]},
        max_attempts=max_attempts,
    )
    return True


# -- what users and admins see ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """A referrer's own figures."""

    invited: int
    paying: int
    earned_minor: int
    """Balance earned, net of what refunds took back."""
    earned_days: int


_PAYING = (
    "exists (select 1 from payments p where p.user_id = o.user_id and p.provider <> 'balance'"
    " and p.refused is null and p.status = 'finalized')"
)
_EARNED = (
    "coalesce(sum(balance_delta_minor), 0) as earned_minor, coalesce(sum(days), 0) as earned_days"
)


async def summary(db: Database, user_id: int) -> Summary:
    async def unit(conn: Connection) -> Summary:
        counts = await fetch_one(
            conn,
            f"select count(*) as invited, count(*) filter (where {_PAYING}) as paying"
            " from user_origins o where o.invited_by = $1",
            user_id,
        )
        earned = await fetch_one(
            conn,
            f"select {_EARNED} from audit_log where user_id = $1 and action = any($2::text[])",
            user_id,
            list(ACTIONS),
        )
        return Summary(
            int(counts["invited"]),
            int(counts["paying"]),
            int(earned["earned_minor"]),
            int(earned["earned_days"]),
        )

    return await db.read(unit)


@dataclass(frozen=True, slots=True)
class KindTotal:
    action: str
    count: int
    balance_minor: int
    days: int


@dataclass(frozen=True, slots=True)
class TopReferrer:
    user_id: int
    username: str | None
    invited: int
    paying: int


@dataclass(frozen=True, slots=True)
class Statistics:
    invited: int
    paying: int
    by_kind: tuple[KindTotal, ...]
    top: tuple[TopReferrer, ...]


async def statistics(db: Database, *, top: int = 10) -> Statistics:
    """Invited users, those who paid, the rewards by kind (clawbacks apart), the top
    referrers by users invited."""

    async def unit(conn: Connection) -> Statistics:
        counts = await fetch_one(
            conn,
            f"select count(*) as invited, count(*) filter (where {_PAYING}) as paying"
            " from user_origins o where o.invited_by is not null",
        )
        kinds = await conn.fetch(
            "select action, count(*) as n, coalesce(sum(balance_delta_minor), 0) as minor,"
            " coalesce(sum(days), 0) as days from audit_log where action = any($1::text[])"
            " group by action order by action",
            list(ACTIONS),
        )
        leaders = await conn.fetch(
            f"select o.invited_by as user_id, u.username, count(*) as invited,"
            f" count(*) filter (where {_PAYING}) as paying"
            " from user_origins o join users u on u.telegram_id = o.invited_by"
            " where o.invited_by is not null group by o.invited_by, u.username"
            " order by invited desc, o.invited_by limit $1",
            top,
        )
        return Statistics(
            int(counts["invited"]),
            int(counts["paying"]),
            tuple(
                KindTotal(r["action"], int(r["n"]), int(r["minor"]), int(r["days"])) for r in kinds
            ),
            tuple(
                TopReferrer(r["user_id"], r["username"], int(r["invited"]), int(r["paying"]))
                for r in leaders
            ),
        )

    return await db.read(unit)


# -- acquisition links ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdLink:
    id: int
    code: str
    name: str


async def create_ad_link(db: Database, name: str, *, by: int, operation_key: str) -> AdLink:
    """A new tracked link named ``name``, created once per ``operation_key`` (a handler run
    again finds the link it made) and written to the audit log as ``by``'s action."""
    key = f"adlink:{operation_key}"

    async def unit(conn: Connection) -> AdLink:
        while True:
            row = await conn.fetchrow(
                "insert into ad_links (code, name, created_by, operation_key)"
                " values ($1, $2, $3, $4) on conflict do nothing returning id, code, name",
                new_code(),
                name[:MAX_NAME],
                by,
                key,
            )
            if row is not None:
                break
            seen = await conn.fetchrow(
                "select id, code, name from ad_links where operation_key = $1", key
            )
            if seen is not None:
                return AdLink(seen["id"], seen["code"], seen["name"])
            # else the new code was another link's: draw again
        await grants.note(
            conn,
            actor=grants.admin_actor(by),
            action="adlink.create",
            key=key,
            details={"ad_link_id": row["id"], "code": row["code"], "name": row["name"]},
        )
        return AdLink(row["id"], row["code"], row["name"])

    return await db.transaction(unit, retry=True)


@dataclass(frozen=True, slots=True)
class AdLinkTotals:
    link: AdLink
    started: int
    trials: int
    paying: int


async def ad_links(db: Database, *, limit: int = 50) -> list[AdLinkTotals]:
    """The newest links with their totals."""

    async def unit(conn: Connection) -> list[AdLinkTotals]:
        rows = await conn.fetch(
            "select a.id, a.code, a.name, count(o.user_id) as started,"
            " count(u.trial_used_at) as trials,"
            f" count(o.user_id) filter (where {_PAYING}) as paying"
            " from ad_links a left join user_origins o on o.ad_link_id = a.id"
            " left join users u on u.telegram_id = o.user_id"
            " group by a.id order by a.id desc limit $1",
            limit,
        )
        return [
            AdLinkTotals(
                AdLink(r["id"], r["code"], r["name"]),
                int(r["started"]),
                int(r["trials"]),
                int(r["paying"]),
            )
            for r in rows
        ]

    return await db.read(unit)


@dataclass(frozen=True, slots=True)
class Revenue:
    currency: str
    amount_minor: int
    payments: int


@dataclass(frozen=True, slots=True)
class AdDay:
    day: date
    started: int
    trials: int
    payments: int
    revenue: tuple[Revenue, ...]


@dataclass(frozen=True, slots=True)
class AdLinkReport:
    totals: AdLinkTotals
    revenue: tuple[Revenue, ...]
    days: tuple[AdDay, ...]
    """The last days with anything to show, newest first (UTC days)."""


async def ad_link_report(db: Database, code: str, *, days: int = 14) -> AdLinkReport | None:
    """A link's users who started, took a trial and paid, its revenue per currency
    (finalized payments, refunds left out), and the same by day: starts by the day of
    the start, trials by the day of the trial, payments by the day they were credited."""

    async def unit(conn: Connection) -> AdLinkReport | None:
        link = await conn.fetchrow("select id, code, name from ad_links where code = $1", code)
        if link is None:
            return None
        totals = await fetch_one(
            conn,
            "select count(*) as started, count(u.trial_used_at) as trials,"
            f" count(*) filter (where {_PAYING}) as paying"
            " from user_origins o join users u on u.telegram_id = o.user_id"
            " where o.ad_link_id = $1",
            link["id"],
        )
        revenue = await conn.fetch(
            f"{_AD_PAYMENTS} select currency, sum(amount_minor) as minor, count(*) as n"
            " from paid group by currency order by currency",
            link["id"],
        )
        daily = await conn.fetch(_AD_DAYS, link["id"], days)
        by_day: dict[date, list[Revenue]] = {}
        for row in await conn.fetch(
            f"{_AD_PAYMENTS} select (finalized_at at time zone 'UTC')::date as day, currency,"
            " sum(amount_minor) as minor, count(*) as n from paid"
            " where finalized_at >= now() - make_interval(days => $2)"
            " group by 1, 2 order by 1, 2",
            link["id"],
            days,
        ):
            by_day.setdefault(row["day"], []).append(
                Revenue(row["currency"], int(row["minor"]), int(row["n"]))
            )
        ad = AdLink(link["id"], link["code"], link["name"])
        return AdLinkReport(
            AdLinkTotals(ad, int(totals["started"]), int(totals["trials"]), int(totals["paying"])),
            tuple(Revenue(r["currency"], int(r["minor"]), int(r["n"])) for r in revenue),
            tuple(
                AdDay(
                    r["day"],
                    int(r["started"]),
                    int(r["trials"]),
                    int(r["payments"]),
                    tuple(by_day.get(r["day"], ())),
                )
                for r in daily
            ),
        )

    return await db.read(unit)


_AD_PAYMENTS = (
    "with paid as (select p.amount_minor, p.currency, p.finalized_at from payments p"
    " join user_origins o on o.user_id = p.user_id where o.ad_link_id = $1"
    " and p.status = 'finalized' and p.provider <> 'balance' and p.refused is null)"
)

_AD_DAYS = """
with events as (
    select (o.started_at at time zone 'UTC')::date as day, 1 as started, 0 as trials,
           0 as payments
    from user_origins o where o.ad_link_id = $1
    union all
    select (u.trial_used_at at time zone 'UTC')::date, 0, 1, 0
    from user_origins o join users u on u.telegram_id = o.user_id
    where o.ad_link_id = $1 and u.trial_used_at is not null
    union all
    select (p.finalized_at at time zone 'UTC')::date, 0, 0, 1
    from user_origins o join payments p on p.user_id = o.user_id
    where o.ad_link_id = $1 and p.status = 'finalized' and p.provider <> 'balance'
      and p.refused is null
)
select day, sum(started) as started, sum(trials) as trials, sum(payments) as payments
from events where day > (now() at time zone 'UTC')::date - $2::int
group by day order by day desc
"""
