"""The workers as actors: their names and default policies, config overrides, and a
degraded mark that outlives successful iterations."""

from __future__ import annotations

import trio
import trio.testing

from runtime.app._policy import apply_policy
from runtime.config import ActorPolicyOverride
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.supervision import ActorContext, Budget, Supervisor
from runtime.workers import NAMES, worker_actors
from runtime.workers._common import worker_spec

from .conftest import make_settings

MIN_SLEEP = {
    "activation_worker": 10.0,
    "fast_expiry_cleanup": 10.0,
    "crypto_payment_watcher": 15.0,
    "auto_renewal": 300.0,
    "trial_notifications": 60.0,
}


def services() -> Services:
    return Services(make_settings(), Metrics(), instance_id="test")


def test_every_worker_is_a_non_critical_permanent_actor_with_its_own_policy() -> None:
    specs = {s.name: s for s in worker_actors(services())}
    assert list(specs) == list(NAMES)
    for name, seconds in MIN_SLEEP.items():
        assert specs[name].min_sleep_on_failure == seconds
    assert all(not s.critical for s in specs.values())
    assert {s.restart.value for s in specs.values()} == {"permanent"}
    assert all(s.budget.park_cooldown for s in specs.values())


def test_actors_sections_override_the_defaults() -> None:
    spec = {s.name: s for s in worker_actors(services())}["activation_worker"]
    changed = apply_policy(
        spec,
        ActorPolicyOverride(
            min_sleep_on_failure_seconds=3, interval_seconds=2, budget_max_failures=7
        ),
    )
    assert changed.min_sleep_on_failure == 3
    assert changed.extra["interval"] == 2
    assert changed.budget.max_failures == 7


class Degrading:
    """An iteration script: 'down' marks the worker degraded, 'up' clears it, 'fail' raises."""

    def __init__(self, script: list[str]) -> None:
        self.script = script

    async def iteration(self, ctx: ActorContext) -> float | None:
        step = self.script.pop(0) if self.script else "idle"
        if step == "down":
            ctx.set_degraded("panel down")
        elif step == "up":
            ctx.set_degraded(None)
        elif step == "fail":
            raise ConnectionError("database gone")
        return None

    async def close(self) -> None:
        return None


async def test_degraded_outlives_successful_iterations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Degrading(["down", "idle", "fail", "idle", "idle", "up"])
    spec = worker_spec("w", lambda ctx: worker, interval=1, min_sleep_on_failure=1, budget=Budget())
    supervisor = Supervisor([spec])
    seen: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(0.5)
        for _ in range(6):
            seen.append(supervisor.status_of("w").degraded_reason)
            await trio.sleep(1)
        supervisor.request_shutdown()
    assert seen == [
        "panel down",  # marked
        "panel down",  # a successful iteration keeps it
        "database gone",  # a failed one reports its own reason
        "panel down",  # the next success puts the worker's back
        "panel down",
        None,  # cleared by the worker
    ]
