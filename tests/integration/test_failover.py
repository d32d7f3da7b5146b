"""PostgreSQL failover loses nothing: a commit whose answer is lost is resolved by an
idempotent retry, a server that stops taking writes is left, and a primary killed under a
payment load is followed to its promoted synchronous standby with every payment credited
once, one subscription extension per payment and every activation and notification queued.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import trio

from runtime.billing import Billing
from runtime.bridge import asyncio_loop, run_asyncio
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.failures import FailureType, classify
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, apply_migrations
from runtime.storage import payments as store
from runtime.storage.payments import Finalized, Verdict

from .replication import Node, standby_of
from .test_process import free_port

PATIENCE = 120.0
"""Generous deadline for what a starved machine does in a second or two."""
DURATION = timedelta(days=30)
SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month"},
                "duration_days": DURATION.days,
                "backend": "marzban",
                "prices": {"stars": {"XTR": 150}},
            }
        }
    }
)
PRICE = 150


class Alerts:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def submit(self, alert: object) -> None:
        self.keys.append(getattr(alert, "key", ""))


def billing_on(db: Database, alerts: Alerts) -> Billing:
    return Billing(db, Catalog.from_settings(SETTINGS), {}, alerts, balance_currency="XTR")


async def open_intent(db: Database, user_id: int) -> str:
    intent = await store.create_intent(
        db,
        user_id=user_id,
        provider="stars",
        amount_minor=PRICE,
        currency="XTR",
        purpose="subscription",
        plan_id="month",
        ttl_minutes=60,
    )
    return intent.id


def paid(intent_id: str, user_id: int) -> ConfirmedPayment:
    return ConfirmedPayment(
        "stars", f"charge-{intent_id}", intent_id, PRICE, "XTR", payer_id=user_id
    )


async def admin(dsn: str, *statements: str) -> list[asyncpg.Record]:
    """Run statements on a connection of their own; the last one's rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[asyncpg.Record] = []
            for statement in statements:
                rows = await conn.fetch(statement)
            return rows
        finally:
            await conn.close()

    return await run_asyncio(run)


async def wait_until(query: str, dsn: str) -> None:
    """Until ``query`` returns a row: an observable state, with a starved machine's patience."""
    with trio.fail_after(PATIENCE):
        while True:
            if await admin(dsn, query):
                return
            await trio.sleep(0.05)


async def credits_of(db: Database, user_ids: list[int]) -> dict[str, list[asyncpg.Record]]:
    """What the database holds for these users: payments, subscriptions, outbox jobs."""

    async def unit(conn: Connection) -> dict[str, list[asyncpg.Record]]:
        return {
            "payments": await conn.fetch(
                "select id::text as id, user_id, status, external_id from payments"
                " where user_id = any($1::bigint[])",
                user_ids,
            ),
            "subscriptions": await conn.fetch(
                "select user_id, expires_at - starts_at as span from subscriptions"
                " where user_id = any($1::bigint[])",
                user_ids,
            ),
            "activations": await conn.fetch(
                "select payload->>'payment_id' as payment_id from outbox"
                " where kind = 'vpn.activate'"
            ),
            "notifications": await conn.fetch(
                "select dedup_key from outbox where kind = 'telegram.notify'"
            ),
        }

    return await db.read(unit)


def assert_each_credited_once(
    found: dict[str, list[asyncpg.Record]], intents: dict[str, int], payments_per_user: int
) -> None:
    payments = {row["id"]: row for row in found["payments"]}
    assert set(payments) == set(intents), "a payment row too many or missing"
    for intent_id, row in payments.items():
        assert row["status"] == "finalized", (intent_id, row["status"])
        assert row["external_id"] == f"charge-{intent_id}"
    spans = {row["user_id"]: row["span"] for row in found["subscriptions"]}
    assert len(spans) == len(found["subscriptions"]), "a user got two subscriptions"
    assert set(spans) == set(intents.values())
    assert all(span == payments_per_user * DURATION for span in spans.values()), spans
    activations = Counter(row["payment_id"] for row in found["activations"])
    assert {i: activations[i] for i in intents} == dict.fromkeys(intents, 1)
    notified = Counter(row["dedup_key"] for row in found["notifications"])
    assert {i: notified[f"notify:payment:{i}"] for i in intents} == dict.fromkeys(intents, 1)


@pytest.fixture
def home() -> Iterator[Path]:
    """The servers' directories, outside pytest's temporary root: concurrent pytest runs
    on the machine prune each other's old roots there, servers' files included."""
    root = Path(tempfile.mkdtemp(prefix="vpnbot-failover-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def lone(home: Path) -> Iterator[Node]:
    """A server of its own with synchronous commits, for the tests that change its settings."""
    node = Node(home / "lone", free_port())
    node.initdb(synchronous_commit="on", fsync="off")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def lone_db(lone: Node) -> AsyncIterator[Database]:
    async with asyncio_loop():
        db = await Database.connect(
            lone.dsn() + "?target_session_attrs=read-write",
            min_size=1,
            max_size=1,
            connect_timeout=PATIENCE,
        )
        try:
            await apply_migrations(db)
            yield db
        finally:
            await db.close()


async def test_a_payment_whose_commit_answer_is_lost_is_credited_once_by_the_retry(
    lone: Node, lone_db: Database
) -> None:
    """The connection dies during COMMIT after the server committed: the caller cannot
    know. The server is made to wait at commit for a synchronous standby that never comes,
    and the waiting backend is terminated, which is the ambiguous outcome exactly ("the
    transaction has already committed locally"). The retry must not credit again."""
    billing = billing_on(lone_db, Alerts())
    intent_id = await open_intent(lone_db, 7001)
    dsn = lone.dsn()
    await admin(
        dsn, "alter system set synchronous_standby_names = 'absent'", "select pg_reload_conf()"
    )
    results: list[Finalized] = []

    async def confirm() -> None:
        results.append(await billing.confirm(paid(intent_id, 7001)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(confirm)
        await wait_until("select 1 from pg_stat_activity where wait_event = 'SyncRep'", dsn)
        await admin(
            dsn,
            "select pg_terminate_backend(pid) from pg_stat_activity where wait_event = 'SyncRep'",
        )
        # the retry may already wait at its own commit: releasing the wait lets it finish
        await admin(dsn, "alter system reset synchronous_standby_names", "select pg_reload_conf()")

    [result] = results
    assert result.verdict is Verdict.DUPLICATE
    assert_each_credited_once(await credits_of(lone_db, [7001]), {intent_id: 7001}, 1)


async def test_a_server_that_stops_taking_writes_is_left_for_one_that_does(
    lone: Node, lone_db: Database
) -> None:
    """The pooled connection's server turns read-only (a demoted primary): the write fails
    as a transient database failure, the pool drops its connections, a new one is refused
    while no host takes writes, and once one does the next write runs on a new backend."""

    async def write(conn: Connection) -> int:
        await conn.execute("insert into users (telegram_id) values (7002) on conflict do nothing")
        return int(await conn.fetchval("select pg_backend_pid()"))

    first = await lone_db.transaction(write)
    dsn = lone.dsn()
    await admin(
        dsn, "alter system set default_transaction_read_only = on", "select pg_reload_conf()"
    )
    with trio.fail_after(PATIENCE):  # until the pooled backend has read the new setting
        while True:
            try:
                assert await lone_db.transaction(write) == first
            except asyncpg.ReadOnlySQLTransactionError as exc:
                failure = classify(exc)
                break
            await trio.sleep(0.05)
    assert (failure.type, failure.transient, failure.dependency) == (
        FailureType.INFRA,
        True,
        "database",
    )
    with pytest.raises(Exception) as refused:
        await lone_db.transaction(write)
    failure = classify(refused.value)
    assert (failure.type, failure.transient, failure.dependency) == (
        FailureType.INFRA,
        True,
        "database",
    )
    assert "no database host accepts writes" in failure.message
    await admin(dsn, "alter system reset default_transaction_read_only", "select pg_reload_conf()")
    assert await lone_db.transaction(write, retry=True) != first


@pytest.fixture
async def cluster(home: Path) -> AsyncIterator[tuple[Node, Node]]:
    """A migrated primary and a synchronous streaming standby; every commit the primary
    confirms is on the standby. The schema is made before the standby exists (a copy of
    it), so its DDL does not wait on replication. fsync is off: the test kills server
    processes, not the machine, so the page cache keeps what was written."""
    primary = Node(home / "primary", free_port())
    standby: Node | None = None
    try:
        primary.initdb(synchronous_commit="on", fsync="off")
        primary.start()
        async with asyncio_loop():
            db = await Database.connect(primary.dsn(), min_size=0)
            try:
                await apply_migrations(db)
            finally:
                await db.close()
            standby = await trio.to_thread.run_sync(standby_of, primary, home / "standby")
            await admin(
                primary.dsn(),
                "alter system set synchronous_standby_names = '*'",
                "select pg_reload_conf()",
            )
            await wait_until(
                "select 1 from pg_stat_replication where sync_state = 'sync'", primary.dsn()
            )
            yield primary, standby
    finally:
        for node in (standby, primary):
            if node is not None:
                node.stop()


USERS = 24
PAYMENTS_PER_USER = 4
WORKERS = 8


async def test_a_primary_killed_under_payment_load_loses_and_doubles_nothing(
    cluster: tuple[Node, Node],
) -> None:
    primary, standby = cluster
    dsn = (
        f"postgresql://postgres@{primary.dsn_host},{standby.dsn_host}/postgres"
        "?target_session_attrs=read-write"
    )
    db = await Database.connect(dsn, min_size=2, max_size=WORKERS, connect_timeout=5)
    try:
        await load_through_failover(db, primary, standby)
    finally:
        await db.close()


async def load_through_failover(db: Database, primary: Node, standby: Node) -> None:
    alerts = Alerts()
    billing = billing_on(db, alerts)
    users = [8000 + n for n in range(USERS)]
    intents = {
        await open_intent(db, user): user for user in users for _ in range(PAYMENTS_PER_USER)
    }
    verdicts: dict[str, list[Verdict]] = {intent_id: [] for intent_id in intents}
    confirmed_before_kill: set[str] = set()
    killed, a_third_confirmed = trio.Event(), trio.Event()
    third = len(intents) // 3
    send, receive = trio.open_memory_channel[str](len(intents))
    for intent_id in intents:
        send.send_nowait(intent_id)
    send.close()

    in_flight: set[str] = set()
    in_flight_at_kill: set[str] = set()

    async def deliver(intent_id: str) -> None:
        """As a provider does: deliver again until the bot answers."""
        while True:
            in_flight.add(intent_id)
            if sum(map(len, verdicts.values())) >= third:
                a_third_confirmed.set()  # and this one is on its way: kill now
            try:
                result = await billing.confirm(paid(intent_id, intents[intent_id]))
            except Exception as exc:
                failure = classify(exc)
                assert failure.type is FailureType.INFRA and failure.transient, failure
                await trio.sleep(0.05)
                continue
            finally:
                in_flight.discard(intent_id)
            verdicts[intent_id].append(result.verdict)
            if not killed.is_set():
                confirmed_before_kill.add(intent_id)
            return

    async def worker() -> None:
        async for intent_id in receive:
            await deliver(intent_id)

    async def fail_over() -> None:
        await a_third_confirmed.wait()
        primary.kill()
        killed.set()
        in_flight_at_kill.update(in_flight)
        await trio.to_thread.run_sync(standby.promote)

    with trio.fail_after(PATIENCE * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_over)
            for _ in range(WORKERS):
                nursery.start_soon(worker)

    assert alerts.keys == []
    assert all(
        len(v) == 1 and v[0] in (Verdict.CREDITED, Verdict.DUPLICATE) for v in verdicts.values()
    )
    assert confirmed_before_kill and len(confirmed_before_kill) < len(intents)
    assert in_flight_at_kill, "no payment was being credited when the primary died"
    [where] = await admin(
        standby.dsn(), "select pg_is_in_recovery() as standby, inet_server_port() as port"
    )
    assert not where["standby"]
    found = await credits_of(db, users)
    finalized = {row["id"] for row in found["payments"] if row["status"] == "finalized"}
    assert confirmed_before_kill <= finalized, "a payment confirmed before the kill was lost"
    assert_each_credited_once(found, intents, PAYMENTS_PER_USER)

    async def server_port(conn: Connection) -> int:
        return int(await conn.fetchval("select inet_server_port()"))

    assert await db.read(server_port) == standby.port
