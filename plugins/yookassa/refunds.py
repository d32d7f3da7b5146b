"""A part of a credited YooKassa payment given back, through the API, recorded once.

``Billing.refund`` gives a whole payment back and takes back what it bought. A part has no
such undo: what is recorded is the refund itself, in the append-only audit log under the
key ``yookassa_refund:<refund id>``, and for a balance top-up the refunded part is taken
back from the balance (never below zero) in the same entry. YooKassa's refund id is stable
for a request (the idempotence key is the caller's ``key``), so a retried or repeated
request records nothing more and refunds nothing more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from runtime.failures import DomainError
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, grants
from runtime.storage import payments as store

from .provider import YooKassaProvider

ACTION = "payment.partial_refund"


@dataclass(frozen=True, slots=True)
class PartialRefund:
    refund_id: str
    amount_minor: int
    recorded: bool
    """False when this refund was recorded before (a repeated request)."""
    taken_from_balance: int | None = None


async def refund_part(
    db: Database,
    provider: YooKassaProvider,
    payment_id: str,
    amount_minor: int,
    *,
    key: str,
    actor: str,
    reason: str | None = None,
) -> PartialRefund:
    """Refund ``amount_minor`` of the credited payment ``payment_id``, once per ``key``
    (name the request for good: an admin's update id...)."""
    payment = await store.get(db, payment_id)
    if payment is None or payment.provider != provider.name or payment.external_id is None:
        raise DomainError(f"payment {payment_id} is not a YooKassa payment")
    if payment.status != "finalized":
        raise DomainError(f"payment {payment_id} is not credited ({payment.status})")
    if not 0 < amount_minor < payment.amount_minor:
        raise DomainError("a part is more than nothing and less than the whole payment")
    idempotence = "part:" + hashlib.sha256(f"{payment_id}:{key}".encode()).hexdigest()[:40]
    refund = await provider.refund_amount(
        ConfirmedPayment(
            provider=payment.provider,
            external_id=payment.external_id,
            intent_id=payment.id,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
        ),
        user_id=payment.user_id,
        amount_minor=amount_minor,
        key=idempotence,
    )
    refund_id = str(refund.get("id"))[:64]
    audit_key = f"yookassa_refund:{refund_id}"
    details = {"payment_id": payment_id, "amount_minor": amount_minor, "refund_id": refund_id}

    async def unit(conn: Connection) -> PartialRefund:
        if payment.purpose == "topup":
            taken = await grants.take_balance(
                conn,
                user_id=payment.user_id,
                amount_minor=amount_minor,
                key=audit_key,
                actor=actor,
                action=ACTION,
                reason=reason,
                details=details,
            )
            return PartialRefund(refund_id, amount_minor, taken is not None, taken)
        written = await grants.note(
            conn,
            actor=actor,
            action=ACTION,
            user_id=payment.user_id,
            key=audit_key,
            reason=reason,
            details=details,
        )
        return PartialRefund(refund_id, amount_minor, written)

    return await db.transaction(unit, retry=True)
