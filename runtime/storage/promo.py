"""Promo codes: created and disabled by admins, activated by users, each once per user.

``activate`` is one transaction. It locks the user's row (a user's activations, payments
and discounts are serialised there), checks the code's dates and conditions, inserts the
activation row (unique per code and user), takes a slot with one conditional update
(``activations < max_activations``: a thousand users racing for the last slot queue on the
code's row and exactly one finds it free), then grants what the code gives through
``grants`` under the key ``promo:<code id>:<user>``. Any refusal after a write rolls the
whole transaction back, so a refused activation leaves nothing behind.

Conditions, checked under the user's lock:
- ``new_users_only``: the user has never paid, i.e. no payment of theirs was ever credited
  (finalized or refunded; refused charges and open invoices do not count);
- ``without_subscription``: the user has no running paid subscription (a trial does not
  count).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from runtime.failures import DomainError

from . import discounts, grants
from ._database import Connection, Database
from .subscriptions import Subscription, Terms
from .users import ensure_user, lock_user


class Kind(enum.StrEnum):
    DAYS = "days"
    BALANCE = "balance"
    PLAN = "plan"
    DISCOUNT = "discount"
    """A personal discount, in percent, on every purchase."""
    NEXT_DISCOUNT = "next_discount"
    """A discount, in percent, on the next paid purchase."""


class Refusal(enum.StrEnum):
    UNKNOWN = "unknown"
    DISABLED = "disabled"
    NOT_YET = "not_yet"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    ALREADY_USED = "already_used"
    NOT_NEW = "not_new"
    HAS_SUBSCRIPTION = "has_subscription"
    PLAN_GONE = "plan_gone"
    """The code's plan is no longer on sale."""


@dataclass(frozen=True, slots=True)
class PromoCode:
    id: int
    code: str
    kind: Kind
    amount: int | None
    plan_id: str | None
    max_activations: int | None
    activations: int
    valid_from: datetime | None
    valid_until: datetime | None
    new_users_only: bool
    without_subscription: bool
    disabled_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewCode:
    code: str
    kind: Kind
    amount: int | None = None
    plan_id: str | None = None
    max_activations: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    new_users_only: bool = False
    without_subscription: bool = False


@dataclass(frozen=True, slots=True)
class Activated:
    code: PromoCode
    subscription: Subscription | None = None
    balance_minor: int | None = None
    """The balance after a balance code."""
    percent: int | None = None
    """The discount the user has now after a discount code."""


@dataclass(frozen=True, slots=True)
class Activation:
    refusal: Refusal | None
    activated: Activated | None = None
    code: PromoCode | None = None


_COLUMNS = (
    "id, code, kind, amount, plan_id, max_activations, activations, valid_from, valid_until,"
    " new_users_only, without_subscription, disabled_at, created_by, created_at"
)


def _code(row: asyncpg.Record | dict[str, Any]) -> PromoCode:
    values = dict(row)
    values["kind"] = Kind(values["kind"])
    return PromoCode(**values)


def grant_key(code_id: int, user_id: int) -> str:
    return f"promo:{code_id}:{user_id}"


def _details(code: PromoCode) -> dict[str, Any]:
    return {"code": code.code, "code_id": code.id, "kind": code.kind.value}


def _described(new: NewCode) -> dict[str, Any]:
    return {
        "code": new.code,
        "kind": new.kind.value,
        "amount": new.amount,
        "plan_id": new.plan_id,
        "max_activations": new.max_activations,
        "valid_from": new.valid_from.isoformat() if new.valid_from else None,
        "valid_until": new.valid_until.isoformat() if new.valid_until else None,
        "new_users_only": new.new_users_only,
        "without_subscription": new.without_subscription,
    }


async def insert(conn: Connection, new: NewCode, *, actor: str) -> PromoCode | None:
    """Create the code inside the caller's unit, written to the audit log; None when a
    code of that name exists (it is left as it is)."""
    row = await conn.fetchrow(
        "insert into promo_codes (code, kind, amount, plan_id, max_activations, valid_from,"
        " valid_until, new_users_only, without_subscription, created_by)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        f" on conflict (code) do nothing returning {_COLUMNS}",
        new.code,
        new.kind.value,
        new.amount,
        new.plan_id,
        new.max_activations,
        new.valid_from,
        new.valid_until,
        new.new_users_only,
        new.without_subscription,
        actor,
    )
    if row is None:
        return None
    await grants.note(conn, actor=actor, action="promo.create", details=_described(new))
    return _code(row)


async def create(db: Database, new: NewCode, *, actor: str) -> PromoCode | None:
    async def unit(conn: Connection) -> PromoCode | None:
        return await insert(conn, new, actor=actor)

    return await db.transaction(unit, retry=True)


async def disable(db: Database, code: str, *, actor: str) -> PromoCode | None:
    """Disable the code (once; a disabled code stays as it was); None when unknown."""

    async def unit(conn: Connection) -> PromoCode | None:
        row = await conn.fetchrow(
            "update promo_codes set disabled_at = now() where code = $1"
            f" and disabled_at is null returning {_COLUMNS}",
            code,
        )
        if row is None:
            row = await conn.fetchrow(f"select {_COLUMNS} from promo_codes where code = $1", code)
            return _code(row) if row is not None else None
        found = _code(row)
        await grants.note(conn, actor=actor, action="promo.disable", details=_details(found))
        return found

    return await db.transaction(unit, retry=True)


async def find(db: Database, code: str) -> PromoCode | None:
    async def unit(conn: Connection) -> PromoCode | None:
        row = await conn.fetchrow(f"select {_COLUMNS} from promo_codes where code = $1", code)
        return _code(row) if row is not None else None

    return await db.read(unit)


async def newest(db: Database, *, limit: int = 30) -> list[PromoCode]:
    async def unit(conn: Connection) -> list[PromoCode]:
        rows = await conn.fetch(
            f"select {_COLUMNS} from promo_codes order by id desc limit $1", limit
        )
        return [_code(r) for r in rows]

    return await db.read(unit)


@dataclass(frozen=True, slots=True)
class ActivationRow:
    user_id: int
    activated_at: datetime


async def activations(db: Database, code_id: int, *, limit: int = 20) -> list[ActivationRow]:
    """The code's latest activations, newest first."""

    async def unit(conn: Connection) -> list[ActivationRow]:
        rows = await conn.fetch(
            "select user_id, activated_at from promo_activations where code_id = $1"
            " order by activated_at desc, user_id limit $2",
            code_id,
            limit,
        )
        return [ActivationRow(r["user_id"], r["activated_at"]) for r in rows]

    return await db.read(unit)


class _Refused(DomainError):
    """Raised inside the unit to roll back whatever it wrote."""

    def __init__(self, refusal: Refusal, code: PromoCode | None) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.code = code


_FIND_AND_CHECK = f"""
select {_COLUMNS},
    case when c.disabled_at is not null then 'disabled'
         when c.valid_from is not null and c.valid_from > now() then 'not_yet'
         when c.valid_until is not null and c.valid_until <= now() then 'expired'
         when exists (select 1 from promo_activations a
                      where a.code_id = c.id and a.user_id = $2) then 'already_used'
         when c.new_users_only and exists (
             select 1 from payments p where p.user_id = $2
             and p.status in ('finalized', 'refunded') and p.refused is null) then 'not_new'
         when c.without_subscription and exists (
             select 1 from subscriptions s where s.user_id = $2 and s.kind = 'paid'
             and s.status = 'active' and s.expires_at > now()) then 'has_subscription'
    end as refusal
from promo_codes c where c.code = $1
"""


async def activate(
    db: Database,
    code: str,
    user_id: int,
    *,
    plans: Mapping[str, Terms],
    backend: str,
    max_attempts: int = 10,
) -> Activation:
    """Activate ``code`` (normalised already) for the user, once; see the module
    docstring. ``plans``: the terms of the plans on sale, for a plan code; ``backend``:
    where granted days go for a user with no subscription."""

    async def unit(conn: Connection) -> Activated:
        await ensure_user(conn, user_id)
        await lock_user(conn, user_id)
        row = await conn.fetchrow(_FIND_AND_CHECK, code, user_id)
        if row is None:
            raise _Refused(Refusal.UNKNOWN, None)
        values = dict(row)
        why = values.pop("refusal")
        found = _code(values)
        if why is not None:
            raise _Refused(Refusal(why), found)
        terms = plans.get(found.plan_id) if found.plan_id else None
        if found.kind is Kind.PLAN and terms is None:
            raise _Refused(Refusal.PLAN_GONE, found)
        inserted = await conn.fetchval(
            "insert into promo_activations (code_id, user_id) values ($1, $2)"
            " on conflict do nothing returning code_id",
            found.id,
            user_id,
        )
        if inserted is None:
            raise _Refused(Refusal.ALREADY_USED, found)
        taken = await conn.fetchrow(
            "update promo_codes set activations = activations + 1 where id = $1"
            " and disabled_at is null and (max_activations is null"
            " or activations < max_activations)"
            " and (valid_until is null or valid_until > now())"
            f" returning {_COLUMNS}",
            found.id,
        )
        if taken is None:
            raise _Refused(Refusal.EXHAUSTED, found)
        return await _grant(conn, _code(taken), user_id, terms, backend, max_attempts)

    try:
        activated = await db.transaction(unit, retry=True)
    except _Refused as refused:
        return Activation(refused.refusal, code=refused.code)
    return Activation(None, activated, activated.code)


async def _grant(
    conn: Connection,
    code: PromoCode,
    user_id: int,
    terms: Terms | None,
    backend: str,
    max_attempts: int,
) -> Activated:
    key = grant_key(code.id, user_id)
    actor = grants.user_actor(user_id)
    details = _details(code)
    if code.kind is Kind.DAYS:
        assert code.amount is not None
        subscription = await grants.grant_days(
            conn,
            user_id=user_id,
            days=int(code.amount),
            backend=backend,
            key=key,
            actor=actor,
            action="promo.days",
            details=details,
            max_attempts=max_attempts,
        )
        if subscription is None:
            raise _Refused(Refusal.ALREADY_USED, code)
        return Activated(code, subscription=subscription)
    if code.kind is Kind.BALANCE:
        assert code.amount is not None
        balance = await grants.grant_balance(
            conn,
            user_id=user_id,
            amount_minor=int(code.amount),
            key=key,
            actor=actor,
            action="promo.balance",
            details=details,
        )
        if balance is None:
            raise _Refused(Refusal.ALREADY_USED, code)
        return Activated(code, balance_minor=balance)
    if code.kind is Kind.PLAN:
        assert terms is not None
        subscription = await grants.grant_plan(
            conn,
            user_id=user_id,
            terms=terms,
            key=key,
            actor=actor,
            action="promo.plan",
            details=details,
            max_attempts=max_attempts,
        )
        if subscription is None:
            raise _Refused(Refusal.ALREADY_USED, code)
        return Activated(code, subscription=subscription)
    assert code.amount is not None
    percent = int(code.amount)
    await _noted(conn, code, user_id, percent=percent)
    origin = f"promo:{code.id}"
    if code.kind is Kind.DISCOUNT:
        percent = await discounts.raise_personal(conn, user_id, percent, origin)
    else:
        await discounts.add_next_purchase(conn, user_id, percent, origin)
    return Activated(code, percent=percent)


async def _noted(
    conn: Connection, code: PromoCode, user_id: int, *, days: int | None = None, **more: Any
) -> None:
    """The audit entry of a grant made here (a discount), under the code's grant
    key; a key taken before means this user had it."""
    if not await grants.note(
        conn,
        actor=grants.user_actor(user_id),
        action=f"promo.{code.kind.value}",
        user_id=user_id,
        key=grant_key(code.id, user_id),
        days=days,
        details={**_details(code), **more},
    ):
        raise _Refused(Refusal.ALREADY_USED, code)
