"""Traffic top-ups: credited once, raising the panel's limit for the current period once,
whatever duplicates, races and crashes happen in between."""

from __future__ import annotations

import trio

from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Database, job_kinds, outbox, users
from runtime.storage import traffic as store
from runtime.storage.payments import Verdict
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.traffic import NotOnSale, Traffic
from tests.domain.conftest import Alerts

from .conftest import GIB, OWNER, USER, make_backend, rows, subscribe


def limit_on_panel(panel: FakeRemnawave, name: str) -> int:
    user = panel.user(name)
    assert user is not None
    return int(user["trafficLimitBytes"])


async def notices(db: Database) -> list[tuple[str, str]]:
    found = await rows(
        db,
        "select dedup_key, payload->>'template' as template from outbox where kind = $1"
        " and dedup_key like 'notify:payment:%' order by id",
        job_kinds.NOTIFY,
    )
    return [(r["dedup_key"], r["template"]) for r in found]


async def balance(db: Database) -> int:
    user = await users.get_user(db, USER)
    assert user is not None
    return user.balance_minor


async def test_duplicate_concurrent_deliveries_credit_a_top_up_once(
    db: Database, billing: Billing, access: Access, traffic: Traffic, panel: FakeRemnawave
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    assert limit_on_panel(panel, name) == 100 * GIB
    panel.use_traffic(name, 60 * GIB)
    checkout = await traffic.buy(USER, subscription, "gb10", "stars", title="10 GB")
    verdicts: list[Verdict] = []

    async def deliver() -> None:
        result = await billing.confirm(
            ConfirmedPayment("stars", "charge-t1", checkout.payment.id, 50, "XTR")
        )
        verdicts.append(result.verdict)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(deliver)
    assert sorted(verdicts, key=str) == sorted(
        [Verdict.CREDITED] + [Verdict.DUPLICATE] * 5, key=str
    )
    assert await store.credit(db, checkout.payment.id) == "duplicate"
    topups = await rows(db, "select subscription_id, bytes, period_started_at from traffic_topups")
    assert topups == [
        {
            "subscription_id": subscription.id,
            "bytes": 10 * GIB,
            "period_started_at": subscription.period_started_at,
        }
    ]
    assert await balance(db) == 0, "the top-up's credit was spent on the traffic"
    audit = await rows(db, "select grant_key, action from audit_log where action = 'traffic_topup'")
    assert audit == [{"grant_key": f"traffic:{checkout.payment.id}", "action": "traffic_topup"}]
    key = f"notify:payment:{checkout.payment.id}"
    assert (key, "limits_traffic_added") in await notices(db)

    assert await access.activate_batch(OWNER) == 1
    assert limit_on_panel(panel, name) == 110 * GIB
    found = await make_backend(panel).get_account(name)
    assert found is not None and found.used_bytes == 60 * GIB, "the period goes on"
    assert await access.activate_batch(OWNER) == 0


async def test_a_worker_killed_between_credit_and_panel_call_leaves_the_job_to_another(
    db: Database,
    billing: Billing,
    access: Access,
    traffic: Traffic,
    panel: FakeRemnawave,
    catalog: Catalog,
    alerts: Alerts,
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    checkout = await traffic.buy(USER, subscription, "gb10", "stars", title="10 GB")
    await billing.confirm(ConfirmedPayment("stars", "charge-t2", checkout.payment.id, 50, "XTR"))
    # a worker claims the job and dies before the panel call: its claim lapses
    claimed = await outbox.claim(
        db, kinds=[job_kinds.ACTIVATE], owner="dead-worker", limit=10, claim_seconds=120
    )
    await rows(
        db,
        "update outbox set claim_expires_at = now() - interval '1 second',"
        " next_attempt_at = now() - interval '1 second' where claimed_by = 'dead-worker'",
    )
    assert len(claimed) == 1
    assert limit_on_panel(panel, name) == 100 * GIB
    restarted = make_backend(panel)
    try:
        after = Access(db, catalog, {"remnawave": restarted}, alerts)
        assert await after.activate_batch("worker-b") == 1
        assert limit_on_panel(panel, name) == 110 * GIB
        # the dead worker's run, had it happened too, sets the same absolute value
        await rows(
            db,
            "update outbox set status = 'pending', next_attempt_at = now(), claimed_by = null,"
            " claim_expires_at = null where kind = $1",
            job_kinds.ACTIVATE,
        )
        await after.activate_batch("worker-c")
        assert limit_on_panel(panel, name) == 110 * GIB
    finally:
        await restarted.aclose()


async def test_a_renewal_starts_a_period_without_the_top_up(
    db: Database, billing: Billing, access: Access, traffic: Traffic, panel: FakeRemnawave
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    checkout = await traffic.buy(USER, subscription, "gb10", "card", title="10 GB")
    await billing.confirm(ConfirmedPayment("card", "charge-t3", checkout.payment.id, 9900, "RUB"))
    await access.activate_batch(OWNER)
    assert limit_on_panel(panel, name) == 110 * GIB
    await subscribe(billing, access, charge="c-renewal")
    assert limit_on_panel(panel, name) == 100 * GIB


async def test_a_top_up_paid_after_its_subscription_ended_is_not_lost(
    db: Database, billing: Billing, access: Access, traffic: Traffic
) -> None:
    subscription = await subscribe(billing, access)
    in_rubles = await traffic.buy(USER, subscription, "gb10", "card", title="10 GB")
    in_stars = await traffic.buy(USER, subscription, "gb10", "stars", title="10 GB")
    await rows(db, "update subscriptions set status = 'expired' where id = $1", subscription.id)
    await billing.confirm(ConfirmedPayment("card", "late-rub", in_rubles.payment.id, 9900, "RUB"))
    await billing.confirm(ConfirmedPayment("stars", "late-xtr", in_stars.payment.id, 50, "XTR"))
    assert await balance(db) == 9900, "paid in the balance currency: it stays on the balance"
    assert (await notices(db))[1:] == [
        (f"notify:payment:{in_rubles.payment.id}", "topup_credited"),
        (f"notify:payment:{in_stars.payment.id}", "limits_traffic_unapplied"),
    ]
    unapplied = await rows(db, "select period_started_at, payment_id::text from traffic_topups")
    assert unapplied == [{"period_started_at": None, "payment_id": in_stars.payment.id}]
    assert await rows(db, "select id from outbox where dedup_key like '%:traffic:%'") == []


async def test_top_ups_are_sold_for_limited_running_subscriptions_only(
    db: Database, billing: Billing, access: Access, traffic: Traffic
) -> None:
    unlimited = await subscribe(billing, access, plan="free")
    for package, provider in (("gb10", "stars"), ("gb99", "stars"), ("gb10", "nope")):
        subscription = unlimited if package == "gb10" and provider == "stars" else None
        try:
            await traffic.buy(USER, subscription or unlimited, package, provider, title="t")
        except NotOnSale:
            continue
        raise AssertionError(f"{package} via {provider} was sold")
    other = await rows(db, "select count(*) as n from payments where purpose = 'topup'")
    assert other == [{"n": 0}]
