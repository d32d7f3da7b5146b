"""Every due scan reads its partial index (what is due), not the table.

The database is seeded with a history (expired subscriptions, finalized payments, done
jobs) next to what is live, and analyzed, so the planner chooses as it would in
production; each scan's plan must then start from its index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runtime.storage import Connection, Database, scans
from runtime.storage import reminders as reminder_store
from runtime.storage import renewals as renewal_store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime.now(UTC)
ROWS = 20_000

_SEED = [
    "insert into users (telegram_id, auto_renew) select g, g % 3 = 0"
    f" from generate_series(1, {ROWS}) g",
    # half history (expired over the last months), half live (expiring over the next weeks)
    "insert into subscriptions (user_id, plan_id, kind, status, starts_at, expires_at,"
    " activation_status, vpn_backend)"
    " select g, 'month', case when g % 10 = 0 then 'trial' else 'paid' end,"
    f" case when g <= {ROWS // 2} then 'expired' else 'active' end, now() - interval '400 days',"
    f" case when g <= {ROWS // 2} then now() - g * interval '5 minutes'"
    f" else now() + (g - {ROWS // 2}) * interval '260 seconds' end, 'active', 'marzban'"
    f" from generate_series(1, {ROWS}) g",
    "insert into payments (user_id, provider, external_id, amount_minor, currency, status,"
    " purpose, created_at)"
    " select g, 'cryptobot', g::text, 100, 'RUB',"
    " case when g <= 40 then 'invoiced' when g % 20 = 1 then 'expired' else 'finalized' end,"
    f" 'topup', now() - g * interval '30 minutes' from generate_series(1, {ROWS}) g",
    "insert into outbox (kind, dedup_key, payload, status)"
    " select 'telegram.notify', 'done:' || g, '{}'::jsonb, 'done'"
    f" from generate_series(1, {ROWS}) g",
    "insert into outbox (kind, dedup_key, payload)"
    " select 'telegram.notify', 'broadcast:1:' || g, '{}'::jsonb"
    f" from generate_series(1, {ROWS // 4}) g",
    # a third of the users saved a card, and their past periods were charged to it
    "insert into saved_payment_methods (user_id, provider, method_ref, title)"
    " select g, 'yookassa', 'pm-' || g, 'Bank card *4444'"
    f" from generate_series(1, {ROWS}) g where g % 3 = 0",
    "insert into renewal_charges (subscription_id, period, payment_id, method_id, status)"
    " select s.id, floor(extract(epoch from s.expires_at))::bigint - 2592000, p.id, m.id,"
    " 'succeeded' from subscriptions s join payments p on p.user_id = s.user_id"
    " join saved_payment_methods m on m.user_id = s.user_id",
    "analyze",
]


@pytest.fixture
async def seeded(db: Database) -> Database:
    async def unit(conn: Connection) -> None:
        for statement in _SEED:
            await conn.execute(statement)

    await db.session(unit)
    return db


async def plan(db: Database, sql: str, *args: Any) -> str:
    async def unit(conn: Connection) -> str:
        rows = await conn.fetch("explain " + sql, *args)
        return "\n".join(r[0] for r in rows)

    return str(await db.transaction(unit))


SCANS: dict[str, tuple[str, tuple[Any, ...], str]] = {
    "reminder before expiry": (
        reminder_store._BEFORE,
        ("paid", NOW + timedelta(hours=23), 0, NOW + timedelta(hours=24), 1000, NOW),
        "subscriptions_due_expiry",
    ),
    "reminder at the end": (
        reminder_store._ENDED,
        ("paid", NOW - timedelta(hours=1), 0, NOW, 1000, NOW - timedelta(days=1), NOW),
        "subscriptions_ended",
    ),
    "renewals due": (
        renewal_store._DUE,
        (timedelta(hours=24), EPOCH, 0, 200),
        "subscriptions_due_expiry",
    ),
    "users' own notifications": (
        scans._CLAIM_DIRECT,
        (50, "owner", timedelta(seconds=60), False),
        "outbox_notify_direct",
    ),
    "open invoices": (
        "select id from payments where provider = $1 and status in ('created', 'invoiced')"
        " and external_id is not null order by created_at, id limit $2",
        ("cryptobot", 1000),
        "payments_open",
    ),
    "recent unfinished intents": (
        scans._UNFINISHED,
        ("cryptobot", timedelta(hours=72), timedelta(0), 10_000),
        "payments_expired",
    ),
}


async def test_each_scan_reads_its_index(seeded: Database) -> None:
    wrong = {}
    for name, (sql, args, index) in SCANS.items():
        text = await plan(seeded, sql, *args)
        if f"using {index}" not in text or "Seq Scan" in text.split("SubPlan")[0]:
            wrong[name] = text
    assert not wrong, "\n\n".join(f"{name}:\n{text}" for name, text in wrong.items())
    assert scans.open_invoice_page  # "open invoices" is its query
