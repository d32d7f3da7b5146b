"""The ``referral_rewards`` worker: it grants what a payment earns and takes it back on a
refund, completes its jobs, and dead-letters a job that names no payment."""

from __future__ import annotations

from typing import Any

from runtime.i18n import load_translator
from runtime.storage import Database, job_kinds, outbox
from runtime.storage import referrals as store
from runtime.workers import referral_rewards, worker_actors
from runtime.workers._render import Text, render
from runtime.workers.referral_rewards import ReferralRewards
from tests.storage.referral_setup import balance, chain, pay, refund

from .conftest import (
    Alerts,
    IterationContext,
    fast,
    jobs,
    make_services,
    make_settings,
    supervised,
    wait_until,
)

REFERRALS: dict[str, Any] = {
    "enabled": True,
    "levels": [
        {"reward": "fixed", "amount": 500, "payments": "every"},
        {"reward": "days", "amount": 2},
    ],
}


async def test_rewards_then_clawback_through_the_jobs(db: Database, alerts: Alerts) -> None:
    services = make_services(db, make_settings(referrals=REFERRALS), alerts)
    worker = ReferralRewards(services, "test-owner")
    ctx: Any = IterationContext()
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3)
    await worker.iteration(ctx)
    assert await balance(db, 2) == 500
    assert await store.summary(db, 1) == store.Summary(1, 0, 0, 2)  # 2 days, by level 2
    assert [j["status"] for j in await jobs(db, store.REWARD)] == ["done"]
    notes = [j["payload"]["template"] for j in await jobs(db, job_kinds.NOTIFY)]
    assert sorted(n for n in notes if n.startswith("referral")) == [
        "referral_reward_balance",
        "referral_reward_days",
    ]
    await refund(db, payment)
    await worker.iteration(ctx)
    assert await balance(db, 2) == 0
    assert await store.summary(db, 1) == store.Summary(1, 0, 0, 0)
    assert [j["status"] for j in await jobs(db, store.CLAWBACK)] == ["done"]
    notes = [j["payload"]["template"] for j in await jobs(db, job_kinds.NOTIFY)]
    assert sorted(n for n in notes if "taken_back" in n) == [
        "referral_reward_taken_back_balance",
        "referral_reward_taken_back_days",
    ]


async def test_disabled_referrals_complete_the_jobs_and_grant_nothing(
    db: Database, alerts: Alerts
) -> None:
    services = make_services(db, make_settings(referrals={**REFERRALS, "enabled": False}), alerts)
    await chain(db, 1, 2)
    await pay(db, 2)
    await ReferralRewards(services, "test-owner").iteration(IterationContext())  # type: ignore[arg-type]
    assert await balance(db, 1) == 0
    assert [j["status"] for j in await jobs(db, store.REWARD)] == ["done"]


async def test_a_job_naming_no_payment_is_dead_lettered(db: Database, alerts: Alerts) -> None:
    services = make_services(db, make_settings(referrals=REFERRALS), alerts)
    await outbox.enqueue_job(
        db, kind=store.REWARD, dedup_key="referral:reward:forged", payload={"payment_id": "x"}
    )
    await ReferralRewards(services, "test-owner").iteration(IterationContext())  # type: ignore[arg-type]
    (job,) = await jobs(db, store.REWARD)
    assert job["status"] == "dead" and "ValueError" in job["last_error"]


async def test_the_worker_runs_as_an_actor_woken_by_the_payment(
    db: Database, alerts: Alerts
) -> None:
    services = make_services(db, make_settings(referrals=REFERRALS), alerts)
    assert referral_rewards.NAME in [spec.name for spec in worker_actors(services)]
    await chain(db, 1, 2)
    async with supervised(fast(referral_rewards.spec(services))):
        await pay(db, 2)

        async def rewarded() -> bool:
            return await balance(db, 1) == 500

        await wait_until(rewarded, timeout=30)


async def test_every_referral_message_renders_in_both_languages(
    db: Database, alerts: Alerts
) -> None:
    services = make_services(db, make_settings(referrals=REFERRALS), alerts)
    worker = ReferralRewards(services, "test-owner")
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3)
    await worker.iteration(IterationContext())  # type: ignore[arg-type]
    await refund(db, payment)
    await worker.iteration(IterationContext())  # type: ignore[arg-type]
    payloads = [
        j["payload"]
        for j in await jobs(db, job_kinds.NOTIFY)
        if j["payload"]["template"].startswith("referral")
    ]
    assert len(payloads) == 4
    translator = load_translator()
    for payload in payloads:
        for language in ("en", "ru"):
            (part,) = render(translator, language, payload)
            assert isinstance(part, Text) and "{" not in part.text, part
