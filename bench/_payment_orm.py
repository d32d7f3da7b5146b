"""The payment benchmark's SQLAlchemy path: mapped classes, an ``async_sessionmaker`` and
``async with session.begin():``, as SQLAlchemy's documentation shows. A module of its own:
the mapped classes must be importable at module level."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from payment_bench import (
    BACKEND,
    CURRENCY,
    DURATION,
    PLAN,
    POOL_SIZE,
    PRICE,
    PROVIDER,
    Intent,
    Run,
    _each,
    _notice,
)
from sqlalchemy import BigInteger, DateTime, String, func, select
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"
    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class Payment(Base):
    __tablename__ = "payments"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    provider: Mapped[str] = mapped_column(String)
    external_id: Mapped[str | None] = mapped_column(String)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    subscription_id: Mapped[int | None] = mapped_column(BigInteger)
    paid_at: Mapped[datetime | None]
    finalized_at: Mapped[datetime | None]


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    plan_id: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, server_default="active")
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    activation_status: Mapped[str] = mapped_column(String, server_default="pending")
    vpn_backend: Mapped[str] = mapped_column(String)
    vpn_account: Mapped[str | None] = mapped_column(String)
    activation_attempts: Mapped[int] = mapped_column(server_default="0")
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String)
    period_started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Outbox(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    dedup_key: Mapped[str] = mapped_column(String)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    max_attempts: Mapped[int] = mapped_column(server_default="10")


def run(dsn: str, intents: Sequence[Intent], tasks: int) -> Run:
    """Finalize every intent from ``tasks`` tasks on a pool of ``POOL_SIZE``."""
    engine = create_async_engine(
        dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        pool_size=POOL_SIZE,
        max_overflow=0,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    def add_job(kind: str, dedup_key: str, payload: dict[str, Any], **more: Any) -> Any:
        return (
            insert(Outbox)
            .values(kind=kind, dedup_key=dedup_key, payload=payload, **more)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
        )

    async def finalize(intent: Intent, charge: str, payer: int) -> bool:
        key = uuid.UUID(intent.id)
        async with sessions() as session, session.begin():
            owner = await session.scalar(select(Payment.user_id).where(Payment.id == key))
            await session.get(User, owner, with_for_update=True)
            payment = await session.get(Payment, key, with_for_update=True)
            assert payment is not None
            used = await session.scalar(
                select(Payment.id).where(
                    Payment.provider == PROVIDER, Payment.external_id == charge, Payment.id != key
                )
            )
            if (
                used
                or payment.status not in ("created", "invoiced", "expired")
                or payer != owner
                or (payment.amount_minor, payment.currency) != (PRICE, CURRENCY)
            ):
                return False
            subscription = await session.scalar(
                select(Subscription)
                .where(
                    Subscription.user_id == owner,
                    Subscription.vpn_backend == BACKEND,
                    Subscription.kind == "paid",
                    Subscription.status == "active",
                )
                .order_by(Subscription.expires_at.desc())
                .limit(1)
                .with_for_update()
            )
            now = await session.scalar(select(func.now()))
            if subscription is not None:
                subscription.expires_at = max(now, subscription.expires_at) + DURATION
                subscription.plan_id = PLAN
                subscription.period_started_at = now
                subscription.activation_status = "pending"
                subscription.next_attempt_at = now
                subscription.activation_attempts = 0
                subscription.last_error = None
                subscription.updated_at = now
            else:
                subscription = Subscription(
                    user_id=owner,
                    plan_id=PLAN,
                    kind="paid",
                    starts_at=now,
                    expires_at=now + DURATION,
                    vpn_backend=BACKEND,
                    next_attempt_at=now,
                )
                session.add(subscription)
                await session.flush()
                subscription.vpn_account = f"u{owner}_s{subscription.id}"
            await session.flush()
            await session.execute(
                add_job(
                    "vpn.activate",
                    f"activate:{subscription.id}:payment:{intent.id}",
                    {"subscription_id": subscription.id},
                    max_attempts=10,
                )
            )
            payment.status, payment.external_id, payment.paid_at = "paid", charge, now
            await session.flush()  # through 'paid': the schema allows no shortcut
            payment.status, payment.finalized_at = "finalized", now
            payment.subscription_id = subscription.id
            await session.execute(
                add_job(
                    "telegram.notify",
                    f"notify:payment:{intent.id}",
                    _notice(owner, subscription.expires_at),
                )
            )
        return True

    async def main() -> Run:
        try:

            async def pay(intent: Intent) -> None:
                if not await finalize(intent, f"charge-{intent.id}", intent.user_id):
                    raise RuntimeError(f"not credited: {intent}")

            for _ in range(POOL_SIZE):  # open the pool's connections before timing
                async with engine.connect() as conn:
                    await conn.execute(select(1))
            return await _each(intents, tasks, pay)
        finally:
            await engine.dispose()

    return asyncio.run(main())
