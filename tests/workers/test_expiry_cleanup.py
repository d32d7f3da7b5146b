"""fast_expiry_cleanup: lapsed subscriptions end and their accounts are revoked (by the
activation worker, the one owner of panel calls)."""

from __future__ import annotations

from datetime import timedelta

import trio

from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.access import Access
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage import Database, job_kinds
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.workers import activation, expiry_cleanup

from .conftest import (
    Alerts,
    FlakyDatabase,
    Recorder,
    add_subscription,
    fast,
    fetch,
    jobs,
    make_services,
    make_settings,
    supervised,
    wait_until,
)


async def test_lapsed_subscriptions_expire_and_their_accounts_are_disabled(
    db: Database, settings: Settings, alerts: Alerts
) -> None:
    panel = FakeMarzban()
    async with panel.running():
        backend = MarzbanBackend(
            MarzbanSettings(base_url=panel.url, username="admin", password="admin-password")
        )
        services = make_services(db, settings, alerts)
        services.provide_domain(
            None, Access(db, Catalog.from_settings(settings), {"marzban": backend}, alerts)
        )
        lapsed = []
        for user in range(10, 17):
            sid = await add_subscription(db, user, timedelta(seconds=-5))
            panel.add_user(f"u{user}")
            lapsed.append(sid)
        running = [await add_subscription(db, 50 + i, timedelta(days=3)) for i in range(20)]
        async with supervised(
            fast(expiry_cleanup.spec(services, batch=3), interval=0.05),
            fast(activation.spec(services), interval=0.05),
        ):

            async def revoked() -> bool:
                rows = await fetch(
                    db,
                    "select count(*) as n from subscriptions where activation_status = 'revoked'",
                )
                return bool(rows[0]["n"] == len(lapsed))

            await wait_until(revoked)
        rows = await fetch(db, "select id, status from subscriptions order by id")
        assert {r["id"] for r in rows if r["status"] == "expired"} == set(lapsed)
        assert {r["id"] for r in rows if r["status"] == "active"} == set(running)
        assert {panel.users[f"u{u}"]["status"] for u in range(10, 17)} == {"disabled"}
        revocations = await jobs(db, job_kinds.REVOKE)
        assert sorted(j["payload"]["subscription_id"] for j in revocations) == sorted(lapsed)
        assert {j["status"] for j in revocations} == {"done"}


async def test_revoked_accounts_are_deleted_after_their_retention(
    db: Database, alerts: Alerts
) -> None:
    settings = make_settings(access={"revoked_retention_days": 30})
    panel = FakeMarzban()
    async with panel.running():
        backend = MarzbanBackend(
            MarzbanSettings(base_url=panel.url, username="admin", password="admin-password")
        )
        services = make_services(db, settings, alerts)
        services.provide_domain(
            None, Access(db, Catalog.from_settings(settings), {"marzban": backend}, alerts)
        )
        lapsed = []
        for user in range(20, 24):
            lapsed.append(await add_subscription(db, user, timedelta(seconds=-5)))
            panel.add_user(f"u{user}")
        panel.add_user("u30")
        running = await add_subscription(db, 30, timedelta(days=3))

        async def count(status: str) -> int:
            rows = await fetch(
                db,
                "select count(*) as n from subscriptions where activation_status = $1",
                status,
            )
            return int(rows[0]["n"])

        async with supervised(
            fast(expiry_cleanup.spec(services, batch=3), interval=0.05),
            fast(activation.spec(services), interval=0.05),
        ):

            async def all_revoked() -> bool:
                return await count("revoked") == len(lapsed)

            await wait_until(all_revoked)
            assert {panel.users[f"u{u}"]["status"] for u in range(20, 24)} == {"disabled"}
            assert await count("deleting") == 0  # kept for 30 days
            # Two of them were revoked 31 days ago, one 29 days ago.
            old, young = lapsed[:2], lapsed[2]
            await fetch(
                db,
                "update subscriptions set revoked_at = now() - interval '31 days'"
                " where id = any($1::bigint[])",
                old,
            )
            await fetch(
                db,
                "update subscriptions set revoked_at = now() - interval '29 days' where id = $1",
                young,
            )

            async def old_ones_deleted() -> bool:
                return await count("deleted") == len(old)

            await wait_until(old_ones_deleted)
        assert set(panel.users) == {"u22", "u23", "u30"}
        rows = await fetch(db, "select id, activation_status from subscriptions order by id")
        states = {r["id"]: r["activation_status"] for r in rows}
        assert [states[i] for i in lapsed] == ["deleted", "deleted", "revoked", "revoked"]
        assert states[running] == "active"
        deletions = [j for j in await jobs(db, job_kinds.REVOKE) if j["payload"].get("delete")]
        assert sorted(j["payload"]["subscription_id"] for j in deletions) == sorted(old)
        assert {j["status"] for j in deletions} == {"done"}
        assert alerts.alerts == []
        await backend.aclose()


async def test_a_zero_retention_deletes_right_after_revocation(
    db: Database, alerts: Alerts
) -> None:
    settings = make_settings(access={"revoked_retention_days": 0})
    panel = FakeMarzban()
    async with panel.running():
        backend = MarzbanBackend(
            MarzbanSettings(base_url=panel.url, username="admin", password="admin-password")
        )
        services = make_services(db, settings, alerts)
        services.provide_domain(
            None, Access(db, Catalog.from_settings(settings), {"marzban": backend}, alerts)
        )
        sid = await add_subscription(db, 40, timedelta(seconds=-5))
        panel.add_user("u40")
        async with supervised(
            fast(expiry_cleanup.spec(services), interval=0.05),
            fast(activation.spec(services), interval=0.05),
        ):

            async def deleted() -> bool:
                rows = await fetch(
                    db, "select activation_status from subscriptions where id = $1", sid
                )
                return bool(rows[0]["activation_status"] == "deleted")

            await wait_until(deleted)
        assert "u40" not in panel.users
        await backend.aclose()


async def test_a_database_outage_fails_iterations_then_the_cleanup_catches_up(
    db: Database, settings: Settings, alerts: Alerts
) -> None:
    flaky = FlakyDatabase(db)
    services = make_services(flaky, settings, alerts)
    services.provide_domain(None, Access(flaky, Catalog.from_settings(settings), {}, alerts))  # type: ignore[arg-type]
    lapsed = [await add_subscription(db, 70 + i, timedelta(seconds=-1)) for i in range(3)]
    recorder = Recorder()
    flaky.down = True
    async with supervised(
        fast(expiry_cleanup.spec(services), min_sleep=0.3), observer=recorder
    ) as supervisor:
        await trio.sleep(0.8)
        failures = [f for f in recorder.failures if f[0] == expiry_cleanup.NAME]
        assert {f[1] for f in failures} == {"infra_error"}
        assert 2 <= len(failures) <= 3  # at least 0.3 s apart
        assert supervisor.status_of(expiry_cleanup.NAME).degraded_reason is not None
        flaky.down = False

        async def expired() -> bool:
            rows = await fetch(
                db, "select count(*) as n from subscriptions where status = 'expired'"
            )
            return bool(rows[0]["n"] == len(lapsed))

        await wait_until(expired)
        await trio.sleep(0.1)
        assert supervisor.status_of(expiry_cleanup.NAME).degraded_reason is None
        assert supervisor.status_of(expiry_cleanup.NAME).restarts == 0
