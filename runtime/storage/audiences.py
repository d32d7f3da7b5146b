"""What the plans' audiences need to know of a user (``runtime.catalog.Customer``)."""

from __future__ import annotations

from runtime.catalog import Customer

from ._database import Connection, Database


async def customer(db: Database, user_id: int) -> Customer:
    async def unit(conn: Connection) -> Customer:
        paid = await conn.fetchval(
            "select exists (select 1 from payments where user_id = $1"
            " and status in ('finalized', 'refunded') and refused is null)",
            user_id,
        )
        return Customer(has_paid=bool(paid))

    return await db.read(unit)
