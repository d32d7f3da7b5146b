"""One trial per Telegram user, even when asked for twice at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

from runtime.access import Access, TrialUnavailable
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage import Connection, Database, job_kinds
from runtime.storage import subscriptions as subs

from .conftest import Alerts


async def test_a_user_gets_one_trial(db: Database, catalog: Catalog, alerts: Alerts) -> None:
    access = Access(db, catalog, {}, alerts)
    outcomes: list[str] = []

    async def ask() -> None:
        try:
            await access.start_trial(7)
            outcomes.append("granted")
        except TrialUnavailable:
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert sorted(outcomes) == ["granted"] + ["refused"] * 4
    owned = await subs.of_user(db, 7)
    assert len(owned) == 1
    trial = owned[0]
    assert trial.kind == "trial" and trial.vpn_backend == "marzban"
    assert trial.vpn_account == f"u7_s{trial.id}"
    assert trial.expires_at - trial.starts_at == timedelta(hours=24)


async def test_no_trial_when_none_is_offered(db: Database, alerts: Alerts) -> None:
    access = Access(db, Catalog.from_settings(Settings()), {}, alerts)
    with pytest.raises(TrialUnavailable):
        await access.start_trial(7)


async def test_a_trial_queues_its_activation(
    db: Database, catalog: Catalog, alerts: Alerts
) -> None:

    trial = await Access(db, catalog, {}, alerts).start_trial(8)

    async def unit(conn: Connection) -> list[str]:
        return [r["kind"] for r in await conn.fetch("select kind from outbox")]

    assert await db.read(unit) == [job_kinds.ACTIVATE]
    assert trial.activation_status == "pending"
