"""auto_renewal: renewals from the balance, charged once also with two workers at once; a
low balance reminded once per period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio

from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, renewals
from runtime.workers import auto_renewal
from runtime.workers.auto_renewal import AutoRenewal

from .conftest import (
    Alerts,
    FlakyDatabase,
    Recorder,
    add_subscription,
    add_user,
    fast,
    fetch,
    jobs,
    make_services,
    supervised,
    wait_until,
)

PRICE = 19900  # the month plan's RUB price (the balance currency)


class _Ctx:
    """Just enough of an actor context for calling an iteration directly."""

    def __init__(self) -> None:
        self.stop_requested = trio.Event()


CTX: Any = _Ctx()


async def renewable(db: Database, user: int, *, balance: int, plan: str = "month") -> int:
    await add_user(db, user, balance=balance, auto_renew=True)
    return await add_subscription(db, user, timedelta(hours=10), plan_id=plan)


async def subscription(db: Database, sid: int) -> dict[str, Any]:
    rows = await fetch(
        db,
        "select s.expires_at, s.activation_status, u.balance_minor from subscriptions s"
        " join users u on u.telegram_id = s.user_id where s.id = $1",
        sid,
    )
    return rows[0]


async def test_a_due_subscription_is_renewed_from_the_balance(
    db: Database, services: Services
) -> None:
    sid = await renewable(db, 1, balance=50_000)
    before = await subscription(db, sid)
    await AutoRenewal(services).iteration(CTX)
    after = await subscription(db, sid)
    assert after["expires_at"] - before["expires_at"] == timedelta(days=30)
    assert after["balance_minor"] == 50_000 - PRICE
    assert after["activation_status"] == "pending"
    payment = await fetch(
        db,
        "select provider, purpose, status, amount_minor, currency, subscription_id from payments",
    )
    assert payment == [
        {
            "provider": "balance",
            "purpose": "renewal",
            "status": "finalized",
            "amount_minor": PRICE,
            "currency": "RUB",
            "subscription_id": sid,
        }
    ]
    queued = await jobs(db)
    assert [j["kind"] for j in queued] == [job_kinds.ACTIVATE, job_kinds.NOTIFY]
    paid = await fetch(db, "select id::text as id from payments")
    # the activation names the payment: its access message follows (one per payment)
    assert queued[0]["payload"] == {"subscription_id": sid, "payment_id": paid[0]["id"]}
    assert queued[1]["payload"]["template"] == "renewed"
    assert queued[1]["payload"]["params"]["balance_minor"] == 50_000 - PRICE
    await AutoRenewal(services).iteration(CTX)  # out of the lead window now
    assert (await subscription(db, sid))["balance_minor"] == 50_000 - PRICE


async def test_two_workers_at_once_charge_each_renewal_once(
    db: Database, services: Services
) -> None:
    sids = [await renewable(db, 100 + i, balance=PRICE * 3) for i in range(15)]
    before = {sid: (await subscription(db, sid))["expires_at"] for sid in sids}
    workers = [AutoRenewal(services, page=4) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for worker in workers * 2:
            nursery.start_soon(worker.iteration, CTX)
    for sid in sids:
        after = await subscription(db, sid)
        assert after["balance_minor"] == PRICE * 2
        assert after["expires_at"] - before[sid] == timedelta(days=30)
    rows = await fetch(db, "select count(*) as n from payments where purpose = 'renewal'")
    assert rows[0]["n"] == len(sids)
    assert len(await jobs(db, job_kinds.ACTIVATE)) == len(sids)


async def test_one_candidate_renewed_by_many_at_once_is_charged_once(
    db: Database, services: Services
) -> None:
    await renewable(db, 7, balance=PRICE * 5)
    [candidate] = await renewals.due(db, lead=timedelta(hours=24))
    outcomes: list[renewals.Outcome] = []

    async def renew() -> None:
        result = await renewals.renew(
            db, candidate, price_minor=PRICE, currency="RUB", duration=timedelta(days=30)
        )
        outcomes.append(result.outcome)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(renew)
    assert outcomes.count(renewals.Outcome.RENEWED) == 1
    assert outcomes.count(renewals.Outcome.SKIPPED) == 7
    rows = await fetch(db, "select balance_minor from users where telegram_id = 7")
    assert rows[0]["balance_minor"] == PRICE * 4


async def test_a_low_balance_is_reminded_once_per_period(db: Database, services: Services) -> None:
    sid = await renewable(db, 2, balance=PRICE - 1)
    worker = AutoRenewal(services)
    for _ in range(3):
        await worker.iteration(CTX)
    reminders = await jobs(db, job_kinds.NOTIFY)
    assert [j["payload"]["template"] for j in reminders] == ["renewal_insufficient"]
    assert reminders[0]["payload"]["params"]["amount_minor"] == PRICE
    assert reminders[0]["payload"]["params"]["balance_minor"] == PRICE - 1
    assert (await subscription(db, sid))["balance_minor"] == PRICE - 1
    # another period (the expiry moved, say by a purchase): one more reminder
    await fetch(db, "update subscriptions set expires_at = expires_at + interval '1 hour'")
    for _ in range(2):
        await worker.iteration(CTX)
    assert len(await jobs(db, job_kinds.NOTIFY)) == 2
    # a top-up: the next run renews
    await fetch(db, "update users set balance_minor = $1 where telegram_id = 2", PRICE)
    await worker.iteration(CTX)
    assert (await subscription(db, sid))["balance_minor"] == 0
    assert [j["payload"]["template"] for j in await jobs(db, job_kinds.NOTIFY)][-1] == "renewed"


async def test_what_cannot_be_renewed_from_the_balance(db: Database, services: Services) -> None:
    stars = await renewable(db, 3, balance=10**6, plan="stars_only")
    await renewable(db, 4, balance=10**6, plan="grant")  # granted days: not a plan
    await add_user(db, 5, balance=10**6, auto_renew=False)
    await add_subscription(db, 5, timedelta(hours=1))
    worker = AutoRenewal(services)
    for _ in range(2):
        await worker.iteration(CTX)
    notices = await jobs(db, job_kinds.NOTIFY)
    assert [
        (j["payload"]["template"], j["payload"]["params"]["subscription_id"]) for j in notices
    ] == [("renewal_unavailable", stars)]
    rows = await fetch(db, "select count(*) as n from payments")
    assert rows[0]["n"] == 0


@pytest.mark.parametrize("down_for", [0.7])
async def test_a_database_outage_fails_iterations_then_renewals_resume(
    db: Database, settings: Settings, alerts: Alerts, down_for: float
) -> None:
    flaky = FlakyDatabase(db)
    services = make_services(flaky, settings, alerts)
    sid = await renewable(db, 6, balance=PRICE)
    recorder = Recorder()
    flaky.down = True
    spec = fast(auto_renewal.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder) as supervisor:
        await trio.sleep(down_for)
        flaky.down = False

        async def renewed() -> bool:
            return bool((await subscription(db, sid))["balance_minor"] == 0)

        await wait_until(renewed)
        assert supervisor.status_of(auto_renewal.NAME).restarts == 0
    failures = [f for f in recorder.failures if f[0] == auto_renewal.NAME]
    assert 2 <= len(failures) <= 3
    assert {f[1] for f in failures} == {"infra_error"}
