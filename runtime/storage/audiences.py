"""What the plans' audiences need to know of a user (``runtime.catalog.Customer``)."""

from __future__ import annotations

from runtime.catalog import Customer

from ._database import Connection, Database


async def customer(db: Database, user_id: int) -> Customer:
    async def unit(conn: Connection) -> Customer:
        row = await conn.fetchrow(
            "select exists (select 1 from payments where user_id = $1"
            " and status in ('finalized', 'refunded') and refused is null) as paid,"
            " exists (select 1 from user_origins where user_id = $1"
            " and (invited_by is not null or ad_link_id is not null)) as invited",
            user_id,
        )
        assert row is not None
        return Customer(has_paid=bool(row["paid"]), invited=bool(row["invited"]))

    return await db.read(unit)
