"""``referral_rewards``: the rewards a payment earns its payer's inviters, and their
clawback when it is refunded.

A trigger on ``payments`` queues the jobs in the payment's own transaction (see
``runtime.storage.referrals``): a process killed after the payment committed leaves the
job due, and whoever claims it next (this process restarted, or another) grants the
rewards. Each job is one unit of work whose grants are keyed per (payment, level), so a
job run twice (a claim that expired while its worker was still busy, a crash between the
grant and the job's completion) grants nothing the second time. The inviters' messages
are queued in the same unit; the notifier sends them.
"""

from __future__ import annotations

from typing import Any

from runtime.catalog import Catalog
from runtime.failures import Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import Services
from runtime.referrals import rules
from runtime.storage import Database, job_kinds, outbox, scans
from runtime.storage import referrals as store
from runtime.storage.outbox import Job
from runtime.storage.referrals import Reward, Rules
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import effective_interval, items, owner_id, worker_spec
from ._wakeups import wakeups_of

NAME = "referral_rewards"
INTERVAL = 5.0
MIN_SLEEP_ON_FAILURE = 10.0
BUDGET = Budget(max_failures=30, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=300.0)


async def run_job(db: Database, job: Job, reward_rules: Rules) -> list[Reward]:
    """Grant (``referral.reward``) or take back (``referral.clawback``) what the job's
    payment earned; returns what changed. ``ValueError`` for a job that names no payment."""
    payment_id = str(job.payload.get("payment_id", ""))
    store.payment_key(payment_id)  # a malformed payload fails here, for good
    if job.kind == store.REWARD:
        return await store.reward_payment(db, payment_id, reward_rules)
    return await store.claw_back(
        db,
        payment_id,
        balance_currency=reward_rules.balance_currency,
        activation_attempts=reward_rules.activation_attempts,
    )


class ReferralRewards:
    def __init__(
        self,
        services: Services,
        owner: str,
        *,
        batch: int = 20,
        claim_seconds: float = 60.0,
        interval: float = INTERVAL,
    ) -> None:
        self.services = services
        self.owner = owner
        self.batch = batch
        self.claim_seconds = claim_seconds
        self.interval = interval
        self.rules = rules(services.settings, Catalog.from_settings(services.settings))
        self.wakeups = wakeups_of(services)
        self.wakeup = self.wakeups.subscribe(store.KINDS)
        self.log = get_logger(NAME)
        self.items = items(services.metrics)

    async def iteration(self, ctx: ActorContext) -> float | None:
        db = self.services.db
        claimed = await outbox.claim(
            db,
            kinds=store.KINDS,
            owner=self.owner,
            limit=self.batch,
            claim_seconds=self.claim_seconds,
        )
        changed = False
        for job in claimed:
            changed |= await self._run(db, job)
        if changed:
            self.wakeups.poke(job_kinds.NOTIFY, job_kinds.ACTIVATE, job_kinds.REVOKE)
        if len(claimed) >= self.batch:
            return 0.0
        due_in = None
        if self.wakeups.listening:
            due_in = await scans.next_job_due(db, store.KINDS)
        return self.wakeups.idle_pause(self.interval, due_in=due_in)

    async def _run(self, db: Database, job: Job) -> bool:
        try:
            done = await run_job(db, job, self.rules)
        except Exception as exc:
            failure = log_failure(
                self.log, exc, operation=job.kind, job_id=job.id, outcome=Outcome.FAILED
            )
            await outbox.fail(
                db,
                job,
                owner=self.owner,
                error=f"{failure.exception_type}: {failure.message}",
                permanent=isinstance(exc, ValueError),
            )
            self.items.labels(NAME, "failed").inc()
            return False
        await outbox.complete(db, job, owner=self.owner)
        self.items.labels(NAME, "granted" if job.kind == store.REWARD else "taken_back").inc(
            len(done)
        )
        return bool(done)

    async def close(self) -> None:
        return None


def spec(services: Services, **options: Any) -> ActorSpec:
    def make(ctx: ActorContext) -> ReferralRewards:
        interval = effective_interval(ctx, INTERVAL)
        return ReferralRewards(
            services, owner_id(services, NAME), **{"interval": interval, **options}
        )

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
