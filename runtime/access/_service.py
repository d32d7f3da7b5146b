from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

import trio

from runtime.alerts import Alert, Severity
from runtime.catalog import Catalog
from runtime.failures import DependencyError, DomainError, Outcome, classify
from runtime.logs import correlation, get_logger, log_failure
from runtime.plugin_api.vpn import Account, AccountSpec, VpnBackend
from runtime.storage import Database, job_kinds, outbox, traffic
from runtime.storage import subscriptions as subs
from runtime.storage.outbox import DeadLetter, FailOutcome, Job
from runtime.storage.subscriptions import Subscription, Terms, account_name


class AlertSubmitter(Protocol):
    def submit(self, alert: Alert) -> None: ...


class TrialUnavailable(DomainError):
    """No trial is offered, or this user has had theirs."""


class AccountUnusable(DependencyError):
    """The panel took the activation but the account cannot connect: a failed activation,
    retried like a panel that failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


def unusable_because(subscription: Subscription, account: Account) -> str | None:
    """Why ``account`` fails ``subscription``'s activation, or None when it does not.

    A usable account passes. So does one whose traffic is used up, when it was provisioned
    for this period before (days granted within the period, a refund): its limit is the
    period's, and a new period resets it. Anything else right after the panel call is a
    failed activation: disabled, expired, or out of traffic in a period that just began.
    """
    if account.enabled:
        return None
    same_period = subscription.account_period_started_at == subscription.period_started_at
    if account.limited and same_period:
        return None
    if account.limited:
        return "its traffic is used up in a period that has just begun"
    return "the panel reports it cannot connect (disabled or expired)"


class Access:
    """Turns subscriptions into VPN accounts and back, through the outbox.

    Every panel call is idempotent (deterministic account name, absolute expiry), so a job
    that runs twice after a crash adopts what the first run created. A transient failure is
    retried with backoff; any other (a refused request, a backend that is not loaded) is
    dead-lettered at once, as the failure policy says: only transient failures are retried.
    A dead activation marks the subscription failed, tells its user (once) and alerts under
    a key stable per subscription, so the alert pipeline throttles repeats. An account the
    panel reports unusable after the call is a failed activation too (``unusable_because``):
    the user is never told it is ready.

    Ended subscriptions' accounts are disabled (revocation jobs) and, after a retention,
    deleted (``queue_deletions``, then revocation jobs that delete).
    """

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        backends: Mapping[str, VpnBackend],
        alerts: AlertSubmitter,
        *,
        max_attempts: int = 8,
        concurrency: int = 4,
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._backends = dict(backends)
        self._alerts = alerts
        self._max_attempts = max_attempts
        self._limiter = trio.CapacityLimiter(concurrency)
        self._log = get_logger("access")

    @property
    def backends(self) -> Mapping[str, VpnBackend]:
        return self._backends

    async def start_trial(self, user_id: int, *, duration: timedelta | None = None) -> Subscription:
        """The user's one trial; ``duration`` replaces the trial's own (an invited user's)."""
        terms = self._catalog.trial
        if terms is None:
            raise TrialUnavailable("no trial is offered")
        if duration is not None:
            terms = dataclasses.replace(terms, duration=duration)
        subscription = await subs.start_trial(
            self._db, user_id, terms, max_attempts=self._max_attempts
        )
        if subscription is None:
            raise TrialUnavailable("the trial was used already")
        return subscription

    def terms_of(self, subscription: Subscription) -> Terms | None:
        """The limits a subscription runs under: its plan's, or the trial's."""
        if subscription.kind == "trial":
            return self._catalog.trial
        plan = self._catalog.find(subscription.plan_id)
        return plan.terms if plan else None

    async def _spec(self, subscription: Subscription) -> AccountSpec:
        """The account's values; a limited plan's traffic grows by the current period's
        top-ups (``runtime.storage.traffic``)."""
        terms = self.terms_of(subscription)
        limit = terms.traffic_limit_bytes if terms else None
        if limit is not None:
            limit += await traffic.extra_bytes(
                self._db, subscription.id, subscription.period_started_at
            )
        return AccountSpec(
            name=subscription.vpn_account or account_name(subscription.user_id, subscription.id),
            expires_at=subscription.expires_at,
            telegram_id=subscription.user_id,
            period_start=subscription.period_started_at,
            traffic_limit_bytes=limit,
            device_limit=terms.device_limit if terms else None,
        )

    # -- activation ---------------------------------------------------------------------

    async def activate_batch(
        self, owner: str, *, limit: int = 20, claim_seconds: float = 120
    ) -> int:
        """Claim and run activation jobs; returns how many were claimed."""
        return await self._run_batch(job_kinds.ACTIVATE, owner, limit, claim_seconds)

    async def revoke_batch(self, owner: str, *, limit: int = 50, claim_seconds: float = 120) -> int:
        """Claim and run revocation jobs; returns how many were claimed."""
        return await self._run_batch(job_kinds.REVOKE, owner, limit, claim_seconds)

    async def _run_batch(self, kind: str, owner: str, limit: int, claim_seconds: float) -> int:
        claimed = await outbox.claim(
            self._db, kinds=[kind], owner=owner, limit=limit, claim_seconds=claim_seconds
        )
        for dead in claimed.buried:
            await self._buried(dead)
        run = self._activate if kind == job_kinds.ACTIVATE else self._revoke
        async with trio.open_nursery() as nursery:
            for job in claimed:
                nursery.start_soon(self._guarded, run, job, owner)
        return len(claimed)

    async def _buried(self, dead: DeadLetter) -> None:
        """A job whose claims kept expiring until no attempt was left ends like one that
        failed for the last time: alerted, and a subscription still waiting for its account
        is marked failed and its user told (once)."""
        subscription_id = dead.payload.get("subscription_id")
        deleting = dead.payload.get("delete") is True
        self._alert_dead(dead.kind, subscription_id, dead.last_error, deleting=deleting)
        if dead.kind != job_kinds.ACTIVATE or subscription_id is None:
            return
        subscription = await subs.get(self._db, int(subscription_id))
        if (
            subscription is not None
            and subscription.status == "active"
            and subscription.activation_status != "active"
        ):
            await subs.activation_failed(
                self._db, subscription.id, dead.last_error or "attempts exhausted", final=True
            )

    async def _guarded(
        self, run: Callable[[Job, str], Awaitable[None]], job: Job, owner: str
    ) -> None:
        async with self._limiter:
            with correlation(None, job_id=job.id, kind=job.kind):
                await run(job, owner)

    async def _activate(self, job: Job, owner: str) -> None:
        subscription = await subs.get(self._db, int(job.payload["subscription_id"]))
        if (
            subscription is None
            or subscription.status != "active"
            or subscription.expires_at <= datetime.now(UTC)
        ):
            await outbox.complete(self._db, job, owner=owner)
            return
        backend = self._backends.get(subscription.vpn_backend)
        spec = await self._spec(subscription)
        try:
            if backend is None:
                raise DomainError(f"VPN backend {subscription.vpn_backend!r} is not loaded")
            account = await backend.ensure_account(spec)
            problem = unusable_because(subscription, account)
            if problem is not None:
                raise AccountUnusable(
                    f"{subscription.vpn_backend}: account {spec.name} is not usable after "
                    f"activation: {problem}"
                )
        except Exception as exc:
            await self._failed(job, owner, subscription, exc)
            return
        still_active = await subs.activation_succeeded(
            self._db,
            subscription.id,
            reference=account.reference,
            access_url=account.access_url,
            period_started_at=subscription.period_started_at,
            payment_id=_payment_of(job),
        )
        await outbox.complete(self._db, job, owner=owner)
        self._log.info(
            "access provisioned",
            operation="activation",
            subscription_id=subscription.id,
            backend=subscription.vpn_backend,
            traffic_used_up=account.limited,
            outcome=Outcome.SUCCESS if still_active else Outcome.SKIPPED,
        )

    async def _failed(
        self, job: Job, owner: str, subscription: Subscription, exc: Exception
    ) -> None:
        failure = classify(exc)
        log_failure(
            self._log,
            exc,
            operation="activation",
            subscription_id=subscription.id,
            attempt=job.attempts,
            outcome=Outcome.DEGRADED if failure.transient else Outcome.FAILED,
        )
        outcome = await outbox.fail(
            self._db,
            job,
            owner=owner,
            error=f"{failure.exception_type}: {failure.message}",
            retry_after=failure.retry_after,
            permanent=not failure.transient,
        )
        if outcome is FailOutcome.LOST:
            return
        final = outcome is FailOutcome.DEAD
        await subs.activation_failed(self._db, subscription.id, failure.message, final=final)
        if final:
            self._alert_dead(job.kind, subscription.id, failure.message)

    def _alert_dead(
        self, kind: str, subscription_id: object, error: str | None, *, deleting: bool = False
    ) -> None:
        action = (
            "activation" if kind == job_kinds.ACTIVATE else "deletion" if deleting else "revocation"
        )
        self._alerts.submit(
            Alert(
                severity=Severity.CRITICAL,
                key=f"{action}_failed:{subscription_id}",
                component="access",
                title=f"VPN {action} gave up",
                text=f"subscription {subscription_id}: {error or 'attempts exhausted'}",
            )
        )

    # -- revocation and deletion -------------------------------------------------------

    async def expire_due(self, *, limit: int = 500) -> int:
        """Mark lapsed subscriptions expired and queue the revocation of their accounts."""
        return len(await subs.expire_due(self._db, limit=limit))

    async def queue_deletions(self, *, retention: timedelta, limit: int = 500) -> int:
        """Queue the deletion of accounts revoked longer than ``retention`` ago."""
        return len(await subs.queue_deletions(self._db, retention=retention, limit=limit))

    async def _revoke(self, job: Job, owner: str) -> None:
        subscription = await subs.get(self._db, int(job.payload["subscription_id"]))
        deleting = job.payload.get("delete") is True
        if subscription is None or not _revocable(subscription, deleting=deleting):
            await outbox.complete(self._db, job, owner=owner)  # extended, or done meanwhile
            return
        backend = self._backends.get(subscription.vpn_backend)
        name = subscription.vpn_account or account_name(subscription.user_id, subscription.id)
        operation = "deletion" if deleting else "revocation"
        try:
            if backend is None:
                raise DomainError(f"VPN backend {subscription.vpn_backend!r} is not loaded")
            await (backend.delete(name) if deleting else backend.disable(name))
        except Exception as exc:
            failure = classify(exc)
            log_failure(self._log, exc, operation=operation, subscription_id=subscription.id)
            outcome = await outbox.fail(
                self._db,
                job,
                owner=owner,
                error=f"{failure.exception_type}: {failure.message}",
                retry_after=failure.retry_after,
                permanent=not failure.transient,
            )
            if outcome is FailOutcome.DEAD:
                self._alert_dead(job.kind, subscription.id, failure.message, deleting=deleting)
            return
        await (subs.deleted if deleting else subs.revoked)(self._db, subscription.id)
        await outbox.complete(self._db, job, owner=owner)
        self._log.info(
            "access deleted" if deleting else "access revoked",
            operation=operation,
            subscription_id=subscription.id,
            outcome=Outcome.SUCCESS,
        )


def _payment_of(job: Job) -> str | None:
    """The payment an activation job does (queued by a purchase or a balance payment)."""
    payment_id = job.payload.get("payment_id")
    return payment_id if isinstance(payment_id, str) and payment_id else None


def _revocable(subscription: Subscription, *, deleting: bool) -> bool:
    if deleting:
        return subscription.activation_status == "deleting"
    return subscription.status != "active" and subscription.activation_status not in (
        "deleting",
        "deleted",
    )
