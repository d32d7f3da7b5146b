"""``activation_worker``: every VPN panel call, through the outbox.

It runs the activation jobs (a purchase, a renewal, a trial) and then the revocation jobs
(queued by ``fast_expiry_cleanup`` and by refunds; those that delete an account after its
retention too): one actor owns both kinds, so one actor talks to the panels and one
degraded mark says that a panel is down. An activation that leaves the account unusable
fails like one the panel refused (see ``runtime.access``). The jobs
themselves are ``Access.activate_batch`` / ``revoke_batch``: claimed with SKIP LOCKED,
idempotent on the panel, retried with backoff, failed for good after their attempts
(the subscription marked failed, its user told, admins alerted).

A panel that is down must not turn into lost activations, so the worker keeps a circuit
per backend:

- after a batch, it asks the database which backends' jobs just failed and are waiting
  for a retry; for each, it checks the panel's ``health()``. A panel that fails it is
  *down*: the worker marks itself degraded (status and metrics show it), holds that
  backend's waiting jobs back (they spend no attempts while it is down), and stops
  claiming at all when every backend is down;
- while a panel is down, its health is checked every ``probe_every`` seconds; when it
  answers again, its held and backed-off jobs are made due at once, the degraded mark is
  cleared, and the backlog drains at full batches.

The worker itself never crashes for a panel: only a failing database fails an iteration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import trio

from runtime.failures import Outcome
from runtime.logs import get_logger, log_failure
from runtime.plugin_api import Services, VpnBackend
from runtime.storage import job_kinds, scans
from runtime.supervision import ActorContext, ActorSpec, Budget, OnExhausted

from ._common import effective_interval, owner_id, worker_spec
from ._common import items as items_counter
from ._wakeups import wakeups_of

NAME = "activation_worker"
INTERVAL = 1.0
MIN_SLEEP_ON_FAILURE = 10.0
BUDGET = Budget(max_failures=30, window=600.0, on_exhausted=OnExhausted.PARK, park_cooldown=300.0)


class ActivationWorker:
    def __init__(
        self,
        services: Services,
        owner: str,
        *,
        batch: int = 20,
        revoke_batch: int = 50,
        claim_seconds: float = 120.0,
        probe_every: float = 10.0,
        probe_timeout: float = 15.0,
        hold_seconds: float = 30.0,
        interval: float = INTERVAL,
    ) -> None:
        self.services = services
        self.owner = owner
        self.batch = batch
        self.revoke_batch = revoke_batch
        self.claim_seconds = claim_seconds
        self.probe_every = probe_every
        self.probe_timeout = probe_timeout
        self.hold_seconds = hold_seconds
        self.interval = interval
        self.wakeups = wakeups_of(services)
        self.wakeup = self.wakeups.subscribe(scans.VPN_JOB_KINDS)
        self.down: dict[str, str] = {}
        """Backends whose panel failed its health check, with the reason."""
        self._next_probe = -math.inf
        self._log = get_logger(NAME)
        self._items = items_counter(services.metrics)

    async def iteration(self, ctx: ActorContext) -> float | None:
        started = trio.current_time()
        if self.wakeups.listening and not self.wakeup.called() and not self.down:
            # the fallback pause ended, no wake-up: look whether anything is due first
            due_in = await scans.next_job_due(self.services.db, scans.VPN_JOB_KINDS)
            if due_in is None or due_in > 0:
                return self.wakeups.idle_pause(self.interval, due_in=due_in)
        access = self.services.access
        backends = access.backends
        if self.down and started >= self._next_probe:
            await self._recheck(backends)
        if self.down and backends and set(backends) <= set(self.down):
            self._mark(ctx)  # every panel is down: claim nothing, spend no attempt
            return self._until_probe()
        activated = await access.activate_batch(
            self.owner, limit=self.batch, claim_seconds=self.claim_seconds
        )
        revoked = await access.revoke_batch(
            self.owner, limit=self.revoke_batch, claim_seconds=self.claim_seconds
        )
        if activated:
            self.wakeups.poke(job_kinds.NOTIFY)  # "access ready" messages were queued
            self._items.labels(NAME, "activation_claimed").inc(activated)
        if revoked:
            self._items.labels(NAME, "revocation_claimed").inc(revoked)
        if activated or revoked:
            await self._look_for_trouble(backends, within=trio.current_time() - started + 2.0)
        self._mark(ctx)
        if activated >= self.batch or revoked >= self.revoke_batch:
            return 0.0
        return await self._pause()

    async def _pause(self) -> float:
        """Until woken, or the next job is due (a retry's backoff, a held backend's jobs),
        or the next probe of a down panel, or the fallback."""
        due_in = None
        if self.wakeups.listening:  # else the pause is short: no need to ask
            due_in = await scans.next_job_due(self.services.db, scans.VPN_JOB_KINDS)
        return self.wakeups.idle_pause(self.interval, due_in=due_in, at_most=self._until_probe())

    def _until_probe(self) -> float:
        if not self.down:
            return math.inf
        return max(0.0, self._next_probe - trio.current_time())

    async def close(self) -> None:
        return None

    # -- the circuit ----------------------------------------------------------------------

    async def _look_for_trouble(self, backends: Mapping[str, VpnBackend], *, within: float) -> None:
        failing = await scans.recent_failures(self.services.db, within_seconds=within)
        fresh = [f for f in failing if f.backend in backends and f.backend not in self.down]
        newly_down: list[str] = []
        for failure in fresh:
            problem = await self._probe(backends[failure.backend])
            if problem is None:
                continue  # the panel answers: these jobs failed for their own reasons
            self.down[failure.backend] = problem
            newly_down.append(failure.backend)
            self._log.warning(
                "VPN panel down: holding its jobs back",
                operation="panel_health",
                backend=failure.backend,
                failed_jobs=failure.failures,
                last_error=failure.last_error[:300],
                reason=problem,
                outcome=Outcome.DEGRADED,
            )
        if newly_down:
            self._next_probe = trio.current_time() + self.probe_every
            await self._hold(backends)

    async def _recheck(self, backends: Mapping[str, VpnBackend]) -> None:
        for name in list(self.down):
            backend = backends.get(name)
            problem = None if backend is None else await self._probe(backend)
            if problem is None:
                del self.down[name]
                released = await scans.release_backend_jobs(self.services.db, [name])
                self._log.info(
                    "VPN panel back: its jobs are due again",
                    operation="panel_health",
                    backend=name,
                    released_jobs=released,
                    outcome=Outcome.SUCCESS,
                )
            else:
                self.down[name] = problem
        self._next_probe = trio.current_time() + self.probe_every
        await self._hold(backends)

    async def _hold(self, backends: Mapping[str, VpnBackend]) -> None:
        """Keep the jobs of down panels back while other panels are served (when every
        panel is down nothing is claimed, so nothing needs holding)."""
        if self.down and not set(backends) <= set(self.down):
            await scans.hold_backend_jobs(
                self.services.db, self.down, seconds=max(self.hold_seconds, self.probe_every)
            )

    async def _probe(self, backend: VpnBackend) -> str | None:
        """None when the panel passes its health check, else why not."""
        with trio.move_on_after(self.probe_timeout) as scope:
            try:
                await backend.health()
            except Exception as exc:
                failure = log_failure(
                    self._log,
                    exc,
                    operation="panel_health",
                    backend=backend.name,
                    outcome=Outcome.DEGRADED,
                )
                return f"{failure.exception_type}: {failure.message}"[:300]
            return None
        if scope.cancelled_caught:
            return f"health check timed out after {self.probe_timeout:g}s"
        return None  # pragma: no cover - the block returns or times out

    def _mark(self, ctx: ActorContext) -> None:
        if not self.down:
            ctx.set_degraded(None)
            return
        ctx.set_degraded(
            "; ".join(
                f"VPN backend {name} is down: {why}" for name, why in sorted(self.down.items())
            ),
            cause=next(iter(self.down)) if len(self.down) == 1 else None,
        )


def spec(services: Services, **options: Any) -> ActorSpec:
    """The ``activation_worker`` actor; ``options`` go to ``ActivationWorker``."""

    def make(ctx: ActorContext) -> ActivationWorker:
        interval = effective_interval(ctx, INTERVAL)
        return ActivationWorker(
            services, owner_id(services, NAME), **{"interval": interval, **options}
        )

    return worker_spec(
        NAME, make, interval=INTERVAL, min_sleep_on_failure=MIN_SLEEP_ON_FAILURE, budget=BUDGET
    )
