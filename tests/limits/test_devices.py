"""Device resets: one per cool-down, held by the database across processes, given back
when the panel does not carry it out."""

from __future__ import annotations

import pytest
import trio

from runtime.access import Access
from runtime.billing import Billing
from runtime.failures import DependencyError
from runtime.storage import Database
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.traffic import Traffic

from .conftest import USER, rows, subscribe


async def test_two_processes_resetting_at_once_reset_once(
    db: Database, billing: Billing, access: Access, traffic: Traffic, panel: FakeRemnawave
) -> None:
    subscription = await subscribe(billing, access)
    name = subscription.vpn_account or ""
    for hwid in ("a", "b"):
        assert panel.add_device(name, hwid)
    results = []

    async def reset() -> None:
        results.append(await traffic.reset_devices_of(USER, subscription.id))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(reset)
    done = [r for r in results if r is not None and r.done]
    assert len(done) == 1 and done[0].deleted == 2
    waiting = [r for r in results if r is not None and not r.done]
    assert len(waiting) == 3 and all(r.next_at is not None for r in waiting)
    assert await rows(db, "select count(*) as n from audit_log where action = 'devices_reset'") == [
        {"n": 1}
    ]


async def test_a_failed_panel_gives_the_reset_back(
    db: Database, billing: Billing, access: Access, traffic: Traffic, panel: FakeRemnawave
) -> None:
    subscription = await subscribe(billing, access)
    assert panel.add_device(subscription.vpn_account or "", "a")
    panel.fail_next(500, path_prefix="/api/hwid/devices/delete")
    with pytest.raises(DependencyError):
        await traffic.reset_devices_of(USER, subscription.id)
    assert await rows(db, "select * from device_resets") == []
    assert len(await traffic.devices(subscription)) == 1
    result = await traffic.reset_devices_of(USER, subscription.id)
    assert result is not None and result.done and result.deleted == 1


async def test_only_the_owner_of_a_running_subscription_on_a_device_panel_is_served(
    billing: Billing, access: Access, traffic: Traffic
) -> None:
    subscription = await subscribe(billing, access)
    assert await traffic.devices_of(USER + 1, subscription.id) is None
    assert await traffic.reset_devices_of(USER + 1, subscription.id) is None
    assert await traffic.devices_of(USER, 2**63) is None
    assert await traffic.devices_of(USER, -1) is None
    found = await traffic.devices_of(USER, subscription.id)
    assert found is not None and found[1] == []
