"""The operator guide's backup and restore, as an operator runs them: deploy/backup.sh dumps
a database in use, deploy/restore.sh restores it into a fresh one, and the service starts
on the copy with every invariant in place."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trio
from pgserver._commands import POSTGRES_BIN_PATH

from runtime.bridge import asyncio_loop
from runtime.storage import (
    Connection,
    Database,
    apply_migrations,
    grants,
    job_kinds,
    outbox,
    payments,
    pending_migrations,
    users,
)
from runtime.storage.payments import Charge, Verdict
from runtime.storage.subscriptions import Terms
from runtime.testing.payment_contract import money_state
from runtime.testing.postgres import TestPostgres
from tests.integration.processes import PATIENCE, Vpnbot
from tests.integration.test_process import free_port

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "deploy" / "backup.sh"
RESTORE = ROOT / "deploy" / "restore.sh"
RULES = ROOT / "deploy" / "prometheus" / "vpnbot-rules.yml"
MONTH = Terms("month", "marzban", timedelta(days=30), None, 3)
PLANS = {"month": MONTH}
USERS = range(1001, 1041)


def tools_env(dsn: str) -> dict[str, str]:
    """The scripts' environment: the database, and the client tools of the server's version
    (the embedded server's own; an operator sets these to their PostgreSQL's)."""
    return {
        **os.environ,
        "VPNBOT_DATABASE__DSN": dsn,
        "PG_DUMP": str(POSTGRES_BIN_PATH / "pg_dump"),
        "PG_RESTORE": str(POSTGRES_BIN_PATH / "pg_restore"),
        "PSQL": str(POSTGRES_BIN_PATH / "psql"),
    }


async def script(path: Path, argument: Path, dsn: str) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(PATIENCE):
        return await trio.run_process(
            ["sh", str(path), str(argument)],
            env=tools_env(dsn),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def fill(db: Database) -> list[str]:
    """A realistic mix: users, plan purchases and top-ups credited (one charge delivered
    twice), a refund, grants in the audit log, queued and finished outbox jobs. Returns the
    credited payments' ids."""
    credited: list[str] = []
    for user_id in USERS:
        await users.touch_user(db, user_id, username=f"user{user_id}", language="en")
    for number, user_id in enumerate(USERS):
        purchase = number % 3 != 0
        intent = await payments.create_intent(
            db,
            user_id=user_id,
            provider="stars" if purchase else "card",
            amount_minor=150 if purchase else 20000,
            currency="XTR" if purchase else "RUB",
            purpose="subscription" if purchase else "topup",
            plan_id="month" if purchase else None,
            ttl_minutes=60,
        )
        if number % 7 == 6:
            continue  # an open invoice, never paid
        charge = Charge(
            intent.provider,
            f"charge-{intent.id}",
            intent.id,
            intent.amount_minor,
            intent.currency,
            user_id,
        )
        assert (await payments.finalize(db, charge, PLANS)).verdict is Verdict.CREDITED
        if number % 5 == 0:  # the provider delivered it again
            assert (await payments.finalize(db, charge, PLANS)).verdict is Verdict.DUPLICATE
        credited.append(intent.id)
    assert await payments.refund(db, credited[1], plan_duration=MONTH.duration) is not None

    async def audit_and_jobs(conn: Connection) -> None:
        for user_id in USERS[:10]:
            await grants.grant_balance(
                conn,
                user_id=user_id,
                amount_minor=500,
                key=f"gift:{user_id}",
                actor=grants.admin_actor(1),
                action="gift",
                reason="backup test",
            )
            await outbox.enqueue(
                conn,
                kind=job_kinds.NOTIFY,
                dedup_key=f"hello:{user_id}",
                payload={"chat_id": user_id, "template": "hello"},
            )

    await db.transaction(audit_and_jobs)
    jobs = await outbox.claim(
        db, kinds=[job_kinds.NOTIFY], owner="backup-test", limit=3, claim_seconds=60
    )
    assert jobs
    await outbox.complete(db, jobs, owner="backup-test")
    return credited


async def table_counts(db: Database) -> dict[str, int]:
    async def unit(conn: Connection) -> dict[str, int]:
        names = [
            r["tablename"]
            for r in await conn.fetch(
                "select tablename from pg_tables where schemaname = 'public' order by 1"
            )
        ]
        return {name: await conn.fetchval(f'select count(*) from "{name}"') for name in names}

    return await db.read(unit)


async def invariants(db: Database, credited: list[str]) -> dict[str, Any]:
    async def unit(conn: Connection) -> dict[str, Any]:
        return {
            "charges credited twice": await conn.fetch(
                "select provider, external_id from payments where external_id is not null"
                " group by 1, 2 having count(*) > 1"
            ),
            "credited": sorted(
                str(r["id"])
                for r in await conn.fetch(
                    "select id from payments where status in ('finalized', 'refunded')"
                )
            ),
            "triggers": sorted(
                r["tgname"]
                for r in await conn.fetch(
                    "select tgname from pg_trigger where not tgisinternal"
                    " and tgrelid in ('audit_log'::regclass, 'payments'::regclass)"
                )
            ),
        }

    found = await db.read(unit)
    assert found["charges credited twice"] == []
    assert found["credited"] == sorted(credited)
    return found


async def test_a_dump_restores_into_a_fresh_database_the_service_starts_on(
    postgres: TestPostgres, database_dsn: str, tmp_path: Path
) -> None:
    dump = tmp_path / "vpnbot.dump"
    async with asyncio_loop():
        source = await Database.connect(database_dsn, min_size=0)
        try:
            credited = await fill(source)
            before = await money_state(source)
            counts = await table_counts(source)
            checked = await invariants(source, credited)
            done = await script(BACKUP, dump, database_dsn)
            assert done.returncode == 0, done.stderr.decode()
            refused = await script(RESTORE, dump, database_dsn)
        finally:
            await source.close()
    assert refused.returncode == 3 and b"restore into an empty one" in refused.stderr
    assert dump.stat().st_size > 0 and not dump.with_name("vpnbot.dump.partial").exists()
    assert counts["users"] == len(USERS) and counts["audit_log"] >= 10 and counts["outbox"]

    copy_dsn = postgres.new_database(migrated=False)
    done = await script(RESTORE, dump, copy_dsn)
    assert done.returncode == 0, done.stderr.decode()

    async with asyncio_loop():
        copy = await Database.connect(copy_dsn, min_size=0)
        try:
            assert await pending_migrations(copy) == []
            assert await apply_migrations(copy) == []
            assert await money_state(copy) == before
            assert await table_counts(copy) == counts
            assert await invariants(copy, credited) == checked
            assert {
                "audit_log_no_update",
                "audit_log_no_truncate",
                "payments_forward_only",
            } <= set(checked["triggers"])
            await still_enforced(copy, credited)
        finally:
            await copy.close()

    await service_starts_on(copy_dsn, tmp_path)


async def still_enforced(db: Database, credited: list[str]) -> None:
    """The copy keeps the rules, not just the rows: the audit log refuses changes, a
    charge is credited once, and new rows get ids after the restored ones."""

    async def rewrite_history(conn: Connection) -> None:
        await conn.execute("update audit_log set reason = 'rewritten'")

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.transaction(rewrite_history)

    paid = await payments.get(db, credited[0])
    assert paid is not None and paid.external_id is not None
    again = Charge(
        paid.provider, paid.external_id, paid.id, paid.amount_minor, paid.currency, paid.user_id
    )
    assert (await payments.finalize(db, again, PLANS)).verdict is Verdict.DUPLICATE
    fresh = await payments.create_intent(
        db,
        user_id=USERS[0],
        provider="card",
        amount_minor=100,
        currency="RUB",
        purpose="topup",
        plan_id=None,
        ttl_minutes=60,
    )
    charge = Charge("card", "charge-after-restore", fresh.id, 100, "RUB", USERS[0])
    assert (await payments.finalize(db, charge, PLANS)).verdict is Verdict.CREDITED

    async def gift(conn: Connection) -> int | None:
        return await grants.grant_balance(
            conn,
            user_id=USERS[0],
            amount_minor=1,
            key="after-restore",
            actor=grants.SYSTEM,
            action="gift",
        )

    assert await db.transaction(gift) is not None


async def service_starts_on(dsn: str, tmp_path: Path) -> None:
    """``vpnbot run`` accepts the copy (a schema behind or unknown is refused, exit 78),
    becomes ready and serves the metrics the shipped alert rules read."""
    port = free_port()
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f'[service]\nlog_format = "json"\n\n[telegram]\nenabled = false\n\n'
        f'[database]\ndsn = "{dsn}"\n\n[http]\nport = {port}\n\n[http.public]\nport = 0\n'
    )
    process = Vpnbot(config, tmp_path / "vpnbot.log", port)
    try:
        await process.wait_ready(PATIENCE)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=30)).text
        for name in ("vpnbot_system_state", "vpnbot_actor_state", "vpnbot_alerts_failed_total"):
            assert name in RULES.read_text() and f"\n{name}{{" in metrics, name
        assert 'vpnbot_system_state{state="unavailable"} 0.0' in metrics
        for name in ("vpnbot_inbox_pending_updates", "vpnbot_backlog_age_seconds"):
            assert name in RULES.read_text() and f"\n{name} " in metrics, name
    finally:
        code = await process.stop()
    assert code == 0, process.tail()
