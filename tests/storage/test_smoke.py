from runtime.storage import Connection, Database


async def test_a_unit_of_work_runs(db: Database) -> None:
    async def unit(conn: Connection) -> int:
        await conn.execute("insert into users (telegram_id) values (1)")
        return int(await conn.fetchval("select count(*) from users"))

    assert await db.transaction(unit) == 1
