"""Traffic reminders: once per subscription, period and threshold, also after a restart
and with two scanners; the panel's usage read through the cache (time on a MockClock)."""

from __future__ import annotations

import trio
import trio.testing

from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Database, job_kinds
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.traffic import Traffic
from runtime.workers.traffic_reminders import scan

from .conftest import GIB, OWNER, SETTINGS, USER, rows, subscribe

PERCENTS = [80, 100]


async def reminders(db: Database) -> list[tuple[str, int]]:
    found = await rows(
        db,
        "select payload->>'template' as template, (payload->'params'->>'percent')::int as p"
        " from outbox where kind = $1 and dedup_key like 'notify:traffic:%' order by id",
        job_kinds.NOTIFY,
    )
    return [(r["template"], r["p"]) for r in found]


def fresh(traffic: Traffic) -> Traffic:
    """What a restarted process builds: the same services, an empty cache."""
    return Traffic(
        traffic._db,
        traffic._terms_of,
        traffic._backends,
        traffic._providers,
        SETTINGS.traffic,
        balance_currency="RUB",
    )


async def test_each_threshold_is_reminded_once_per_period(
    db: Database,
    billing: Billing,
    access: Access,
    traffic: Traffic,
    panel: FakeRemnawave,
    catalog: Catalog,
    mock_clock: trio.testing.MockClock,
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 0

    panel.use_traffic(name, 79 * GIB)
    mock_clock.jump(61)
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 0
    panel.use_traffic(name, 2 * GIB)
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 0, "cached for a TTL"
    mock_clock.jump(61)
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 1
    assert await reminders(db) == [("limits_traffic_warning", 80)]

    restarted = fresh(traffic)
    results: list[int] = []

    async def one(scanner: Traffic) -> None:
        results.append(await scan(db, scanner, catalog, PERCENTS, max_attempts=3))

    async with trio.open_nursery() as nursery:  # two processes scanning at once
        nursery.start_soon(one, restarted)
        nursery.start_soon(one, fresh(traffic))
    assert results == [0, 0]

    panel.use_traffic(name, 30 * GIB)  # past the limit
    mock_clock.jump(61)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, restarted)
        nursery.start_soon(one, fresh(traffic))
    assert sorted(results[2:]) == [0, 1]
    assert await reminders(db) == [
        ("limits_traffic_warning", 80),
        ("limits_traffic_used_up", 100),
    ]
    params = await rows(
        db,
        "select payload->'params' as p from outbox where dedup_key like 'notify:traffic:%'"
        " order by id",
    )
    assert (params[1]["p"]["used_gb"], params[1]["p"]["limit_gb"]) == ("111.0", "100.0")

    # a renewal starts a new period: its usage is reset, its reminders are its own
    checkout = await billing.buy(USER, "month", "stars")
    await billing.confirm(ConfirmedPayment("stars", "renew", checkout.payment.id, 150, "XTR"))
    await access.activate_batch(OWNER)
    mock_clock.jump(61)
    assert await scan(db, restarted, catalog, PERCENTS, max_attempts=3) == 0
    panel.use_traffic(name, 85 * GIB)
    mock_clock.jump(61)
    assert await scan(db, restarted, catalog, PERCENTS, max_attempts=3) == 1
    assert [r[1] for r in await reminders(db)] == [80, 100, 80]


async def test_a_top_up_moves_the_thresholds(
    db: Database,
    billing: Billing,
    access: Access,
    traffic: Traffic,
    panel: FakeRemnawave,
    catalog: Catalog,
    mock_clock: trio.testing.MockClock,
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    checkout = await traffic.buy(USER, subscription, "gb10", "stars", title="10 GB")
    await billing.confirm(ConfirmedPayment("stars", "t", checkout.payment.id, 50, "XTR"))
    panel.use_traffic(name, 85 * GIB)  # 85 of 100, but 77 of 110
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 0


async def test_unlimited_plans_and_unreadable_panels_are_skipped(
    db: Database,
    billing: Billing,
    access: Access,
    traffic: Traffic,
    panel: FakeRemnawave,
    catalog: Catalog,
) -> None:
    unlimited = await subscribe(billing, access, charge="u", plan="free")
    panel.use_traffic(unlimited.vpn_account or "", 500 * GIB)
    assert await scan(db, traffic, catalog, PERCENTS, max_attempts=3) == 0

    limited = await subscribe(billing, access, charge="l")  # the same account, now limited
    panel.use_traffic(limited.vpn_account or "", 90 * GIB)
    panel.fail_next(status=503, times=10)
    assert await scan(db, fresh(traffic), catalog, PERCENTS, max_attempts=3) == 0
    assert await reminders(db) == []
    panel.fail_next(status=200, body={"response": {"id": 1, "userTraffic": {}}}, times=10)
    assert await scan(db, fresh(traffic), catalog, PERCENTS, max_attempts=3) == 0, "no figure"
    panel._faults.clear()
    assert await scan(db, fresh(traffic), catalog, PERCENTS, max_attempts=3) == 1
