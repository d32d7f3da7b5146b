"""Renewal charges of saved methods: at most one per subscription period, across processes.

``begin`` runs under the user's lock and the subscription's, like a balance renewal
(``runtime.storage.renewals``), and decides what the caller does for the period:

- ``CHARGE``: a ``renewal_charges`` row keyed by (subscription, period) and its intent (a
  ``payments`` row, purpose ``renewal``) were stored in this transaction, before any
  provider call; or a charge whose claim expired (its process died or the provider did not
  answer) is claimed again, with the same intent. The caller charges with the period's
  idempotence key, so a repeated call makes no second charge at the provider.
- ``WAIT``: another process holds the charge, or the provider has not decided it yet
  (a pending charge is credited by the webhook or the payment watcher like any invoice).
- ``FALLBACK``: the card was tried this period and failed: renew from the balance.
- ``NONE``: nothing to do (renewed meanwhile, auto-renew off, no method in use).

``settle`` records what the charge did, so a failed card is not charged again within
the period. Crediting is not done here: a succeeded charge goes through the billing core
(``finalize_charge``), exactly once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import payments, saved_methods
from ._database import Connection, Database
from .payments import Payment, insert_intent
from .renewals import Candidate, period_of
from .saved_methods import SavedMethod
from .users import lock_user

PURPOSE = "renewal"
CLAIM = timedelta(minutes=10)
"""How long a process holds a charge before another may try it again (same key)."""


class Step(enum.StrEnum):
    CHARGE = "charge"
    WAIT = "wait"
    FALLBACK = "fallback"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    intent: Payment | None = None
    method: SavedMethod | None = None
    retry: bool = False
    """CHARGE: a charge tried before (its claim expired): the provider is asked again."""
    reason: str = ""


async def begin(
    db: Database,
    candidate: Candidate,
    *,
    provider: str,
    amount_minor: int,
    currency: str,
    ttl_minutes: int,
    discount_floor: int | None = None,
    claim: timedelta = CLAIM,
) -> Decision:
    """Claim the card charge of ``candidate``'s period (see the module docstring)."""
    period = period_of(candidate.expires_at)

    async def unit(conn: Connection) -> Decision:
        user = await lock_user(conn, candidate.user_id)
        row = await conn.fetchrow(
            "select status, kind, expires_at from subscriptions where id = $1 for update",
            candidate.subscription_id,
        )
        if user is None or row is None or row["status"] != "active" or row["kind"] != "paid":
            return Decision(Step.NONE, reason="not an active paid subscription")
        if row["expires_at"] != candidate.expires_at:
            return Decision(Step.NONE, reason="renewed meanwhile")
        if not user.auto_renew:
            return Decision(Step.NONE, reason="auto-renew is off")
        charge = await conn.fetchrow(
            "select c.status, c.claim_expires_at < now() as claim_expired, c.method_id,"
            " p.status as payment_status, p.id::text as payment_id"
            " from renewal_charges c join payments p on p.id = c.payment_id"
            " where c.subscription_id = $1 and c.period = $2 for update of c",
            candidate.subscription_id,
            period,
        )
        if charge is not None:
            return await _known(conn, candidate, period, charge, claim)
        method = await _method_in_use(conn, candidate.user_id, provider)
        if method is None:
            return Decision(Step.FALLBACK, reason="no saved method of this provider")
        intent = await insert_intent(
            conn,
            user_id=candidate.user_id,
            provider=provider,
            amount_minor=amount_minor,
            currency=currency,
            purpose=PURPOSE,
            plan_id=candidate.plan_id,
            ttl_minutes=ttl_minutes,
            discount_floor=discount_floor,
            subscription_id=candidate.subscription_id,
        )
        await conn.execute(
            "insert into renewal_charges (subscription_id, period, payment_id, method_id,"
            " claim_expires_at) values ($1, $2, $3::uuid, $4, now() + $5::interval)",
            candidate.subscription_id,
            period,
            intent.id,
            method.id,
            claim,
        )
        return Decision(Step.CHARGE, intent, method)

    return await db.transaction(unit)


async def _known(
    conn: Connection,
    candidate: Candidate,
    period: int,
    charge: asyncpg.Record,
    claim: timedelta,
) -> Decision:
    status = charge["status"]
    payment_status = charge["payment_status"]
    if status in ("failed", "refused"):
        return Decision(Step.FALLBACK, reason=f"the card charge {status} this period")
    if status == "succeeded" or payment_status in ("paid", "finalized", "refunded"):
        return Decision(Step.NONE, reason="charged this period")
    if payment_status in ("expired", "failed"):
        await _set(conn, candidate.subscription_id, period, "failed", "not paid in time")
        return Decision(Step.FALLBACK, reason="the card charge was not paid in time")
    if status == "pending" or not charge["claim_expired"]:
        return Decision(Step.WAIT, reason=f"the card charge is {status}")
    method = await conn.fetchrow(
        f"select {saved_methods.COLUMNS} from saved_payment_methods where id = $1",
        charge["method_id"],
    )
    if method is None or method["revoked_at"] is not None:
        # the charge may have reached the provider before the card was removed: it is
        # asked again only with a method in use; an expired intent then falls back
        return Decision(Step.WAIT, reason="the card was removed during its charge")
    await conn.execute(
        "update renewal_charges set claim_expires_at = now() + $3::interval, updated_at = now()"
        " where subscription_id = $1 and period = $2",
        candidate.subscription_id,
        period,
        claim,
    )
    intent = await payments.locked(conn, charge["payment_id"])
    return Decision(Step.CHARGE, intent, saved_methods.method_of(method), retry=True)


async def _method_in_use(conn: Connection, user_id: int, provider: str) -> SavedMethod | None:
    row = await conn.fetchrow(
        f"select {saved_methods.COLUMNS} from saved_payment_methods"
        " where user_id = $1 and provider = $2 and revoked_at is null",
        user_id,
        provider,
    )
    return saved_methods.method_of(row) if row else None


async def _set(
    conn: Connection, subscription_id: int, period: int, status: str, reason: str
) -> None:
    await conn.execute(
        "update renewal_charges set status = $3, reason = $4, claim_expires_at = null,"
        " updated_at = now() where subscription_id = $1 and period = $2"
        " and status in ('charging', 'pending')",
        subscription_id,
        period,
        status,
        reason[:200],
    )


async def settle(
    db: Database,
    subscription_id: int,
    expires_at: datetime,
    status: str,
    *,
    reason: str = "",
    payment_id: str | None = None,
) -> None:
    """Record what the period's charge did (``pending``, ``succeeded``, ``failed``,
    ``refused``). A failed charge's intent is marked failed with it."""
    period = period_of(expires_at)

    async def unit(conn: Connection) -> None:
        await _set(conn, subscription_id, period, status, reason)
        if status == "failed" and payment_id is not None:
            await conn.execute(
                "update payments set status = 'failed' where id = $1::uuid"
                " and status in ('created', 'invoiced')",
                payment_id,
            )

    await db.transaction(unit, retry=True)
