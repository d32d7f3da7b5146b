"""activation_worker against the real Marzban backend and the fake panel: the backlog drains
after an outage with no activation lost, and a panel that is down degrades the worker
instead of spending its jobs' attempts."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import trio

from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.access import Access
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, outbox
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.workers import activation

from .conftest import (
    Alerts,
    FlakyDatabase,
    Recorder,
    add_subscription,
    fast,
    fetch,
    jobs,
    make_services,
    supervised,
    wait_until,
)


class Panel(FakeMarzban):
    stuck_status: str | None = None
    """Every user answered with this status: a panel that does not apply what it is sent."""

    def _answer(self, user: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(user)
        if self.stuck_status is not None:
            answer["status"] = self.stuck_status
        return answer

    def go_down(self) -> None:
        self.fail_next(503, body={"detail": "Service Unavailable"}, times=1_000_000)

    def come_back(self) -> None:
        self._faults.clear()


@pytest.fixture
async def panel() -> AsyncIterator[Panel]:
    fake = Panel()
    async with fake.running():
        yield fake


def backend(panel: Panel, name: str = "marzban") -> MarzbanBackend:
    return MarzbanBackend(
        MarzbanSettings(base_url=panel.url, username="admin", password="admin-password"),
        name=name,
        transport=None,
    )


def wire(
    db: Any, settings: Settings, alerts: Alerts, backends: dict[str, MarzbanBackend]
) -> Services:
    services = make_services(db, settings, alerts)
    access = Access(db, Catalog.from_settings(settings), backends, alerts, max_attempts=8)
    services.provide_domain(None, access)
    return services


async def start_trials(services: Services, users: range) -> list[int]:
    return [(await services.access.start_trial(user)).id for user in users]


async def activation_states(db: Database) -> dict[str, int]:
    rows = await fetch(db, "select activation_status, count(*) as n from subscriptions group by 1")
    return {r["activation_status"]: r["n"] for r in rows}


def worker(services: Services, **options: Any) -> Any:
    return fast(activation.spec(services, **options), interval=0.05)


async def test_pending_activations_are_provisioned_and_announced(
    db: Database, settings: Settings, alerts: Alerts, panel: Panel
) -> None:
    services = wire(db, settings, alerts, {"marzban": backend(panel)})
    ids = await start_trials(services, range(100, 125))
    async with supervised(worker(services, batch=10)) as supervisor:

        async def all_active() -> bool:
            return await activation_states(db) == {"active": len(ids)}

        await wait_until(all_active)
        assert supervisor.status_of(activation.NAME).degraded_reason is None
    assert len(panel.users) == len(ids)
    notices = [j for j in await jobs(db, job_kinds.NOTIFY)]
    assert sorted(j["payload"]["params"]["subscription_id"] for j in notices) == sorted(ids)
    assert {j["payload"]["template"] for j in notices} == {"access_ready"}
    assert all(j["status"] == "done" for j in await jobs(db, job_kinds.ACTIVATE))


async def test_a_panel_outage_degrades_the_worker_and_loses_no_activation(
    db: Database, settings: Settings, alerts: Alerts, panel: Panel
) -> None:
    services = wire(db, settings, alerts, {"marzban": backend(panel)})
    panel.go_down()
    ids = await start_trials(services, range(200, 230))
    spec = worker(services, batch=10, probe_every=0.3)
    async with supervised(spec) as supervisor:
        status = supervisor.status_of(activation.NAME)

        async def degraded() -> bool:
            return status.degraded_reason is not None

        await wait_until(degraded)
        assert "marzban is down" in (status.degraded_reason or "")
        await trio.sleep(1.0)  # a long outage: the held jobs spend no attempts
        attempts = [j["attempts"] for j in await jobs(db, job_kinds.ACTIVATE)]
        assert max(attempts) <= 1
        assert status.degraded_reason is not None
        assert status.failures == 0  # degraded, not failing: the database is fine

        panel.come_back()

        async def drained() -> bool:
            return await activation_states(db) == {"active": len(ids)}

        await wait_until(drained)
        await wait_until(lambda: _cleared(status))
    done = await jobs(db, job_kinds.ACTIVATE)
    assert [j["status"] for j in done] == ["done"] * len(ids)
    assert max(j["attempts"] for j in done) <= 2
    assert len(panel.users) == len(ids)
    assert not [k for k in alerts.seen() if k.startswith("activation_failed")]


async def test_accounts_left_unusable_are_retried_without_calling_the_panel_down(
    db: Database, settings: Settings, alerts: Alerts, panel: Panel
) -> None:
    """The panel answers (its health check passes) but leaves the accounts disabled: each
    activation fails and is retried, nobody is told access is ready, and the worker does
    not hold the panel's jobs back as if it were down."""
    services = wire(db, settings, alerts, {"marzban": backend(panel)})
    panel.stuck_status = "disabled"
    ids = await start_trials(services, range(300, 305))
    async with supervised(worker(services, batch=10, probe_every=0.1)) as supervisor:

        async def all_failed_once() -> bool:
            rows = await jobs(db, job_kinds.ACTIVATE)
            return len(rows) == len(ids) and all(
                j["attempts"] >= 1 and j["last_error"] for j in rows
            )

        await wait_until(all_failed_once)
        assert supervisor.status_of(activation.NAME).degraded_reason is None
        panel.stuck_status = None
        await fetch(db, "update outbox set next_attempt_at = now() where status = 'pending'")

        async def all_active() -> bool:
            return await activation_states(db) == {"active": len(ids)}

        await wait_until(all_active)
    rows = await jobs(db, job_kinds.ACTIVATE)
    assert all("not usable after activation" in (j["last_error"] or "") for j in rows)
    ready = [
        j for j in await jobs(db, job_kinds.NOTIFY) if j["payload"]["template"] == "access_ready"
    ]
    assert len(ready) == len(ids)  # told once, after the account works
    assert not [k for k in alerts.seen() if k.startswith("activation_failed")]


async def _cleared(status: Any) -> bool:
    return status.degraded_reason is None


async def test_one_panel_down_holds_its_jobs_while_the_other_is_served(
    db: Database, settings: Settings, alerts: Alerts, panel: Panel
) -> None:
    other = Panel()
    async with other.running():
        services = wire(
            db, settings, alerts, {"marzban": backend(panel), "spare": backend(other, "spare")}
        )
        other.go_down()
        down_ids = [
            await add_subscription(db, 300 + i, timedelta(days=5), backend="spare")
            for i in range(5)
        ]
        for sid in down_ids:
            await outbox.enqueue_job(
                db, kind=job_kinds.ACTIVATE, dedup_key=f"a:{sid}", payload={"subscription_id": sid}
            )
        up_ids = await start_trials(services, range(400, 405))
        async with supervised(worker(services, probe_every=0.3, hold_seconds=0.5)) as supervisor:
            status = supervisor.status_of(activation.NAME)

            async def served() -> bool:
                rows = await fetch(
                    db,
                    "select count(*) as n from subscriptions where id = any($1)"
                    " and activation_status = 'active'",
                    up_ids,
                )
                return bool(rows[0]["n"] == len(up_ids)) and status.degraded_reason is not None

            await wait_until(served)
            assert "spare is down" in (status.degraded_reason or "")
            await trio.sleep(0.8)
            held = await fetch(
                db,
                "select attempts from outbox where dedup_key like 'a:%'",
            )
            assert max(r["attempts"] for r in held) <= 1
            other.come_back()

            async def drained() -> bool:
                rows = await fetch(
                    db,
                    "select count(*) as n from outbox where dedup_key like 'a:%'"
                    " and status = 'done'",
                )
                return bool(rows[0]["n"] == len(down_ids)) and status.degraded_reason is None

            await wait_until(drained)
        assert len(other.users) == len(down_ids)


async def test_a_database_outage_fails_iterations_and_the_worker_recovers(
    db: Database, settings: Settings, alerts: Alerts, panel: Panel
) -> None:
    flaky = FlakyDatabase(db)
    services = wire(flaky, settings, alerts, {"marzban": backend(panel)})
    ids = await start_trials(services, range(500, 505))
    recorder = Recorder()
    flaky.down = True
    spec = fast(activation.spec(services), interval=0.05, min_sleep=0.4)
    async with supervised(spec, observer=recorder) as supervisor:
        status = supervisor.status_of(activation.NAME)
        await trio.sleep(1.0)
        failures = [f for f in recorder.failures if f[0] == activation.NAME]
        assert len(failures) >= 2
        assert {f[1] for f in failures} == {"infra_error"}
        gaps = [b[2] - a[2] for a, b in itertools.pairwise(failures)]
        assert min(gaps) >= 0.4
        assert status.degraded_reason is not None
        assert status.restarts == 0
        flaky.down = False

        async def drained() -> bool:
            return await activation_states(db) == {"active": len(ids)}

        await wait_until(drained)
        await wait_until(lambda: _cleared(status))
