"""A worker killed (SIGKILL) while it raises the panel's limit for a traffic top-up: the
panel took the new limit, the database never heard. The next worker sets the same
absolute limit again, once the dead one's claim expires: the top-up counts once.

The workers are processes of their own (``tests/domain/activation_proc.py``, Marzban)
on the test's database; the fake panel runs in the test and holds its answer to the
limit's change until the first worker is killed.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest
import trio
from starlette.requests import Request
from starlette.responses import Response

from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import TrafficSettings
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Database, job_kinds
from runtime.storage.payments import Verdict
from runtime.storage.subscriptions import account_name
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.traffic import Traffic
from tests.domain.activation_proc import ADMIN, PASSWORD
from tests.domain.conftest import SETTINGS, Alerts, InChatProvider
from tests.domain.test_crash_adoption import Worker

from .conftest import rows

USER = 6006
GIB = 2**30


class HoldingMarzban(FakeMarzban):
    """Applies a change of the user, then holds its answer for ``hold`` seconds (once)."""

    hold = 0.0

    def __init__(self) -> None:
        super().__init__(admin_username=ADMIN, admin_password=PASSWORD)
        self.changed = trio.Event()

    async def _modify(self, request: Request) -> Response:
        response = await super()._modify(request)
        if response.status_code == 200 and self.hold:
            hold, self.hold = self.hold, 0.0
            self.changed.set()
            await trio.sleep(hold)
        return response


@pytest.fixture
async def panel() -> AsyncIterator[HoldingMarzban]:
    fake = HoldingMarzban()
    async with fake.running():
        yield fake


async def run_until_done(dsn: str, url: str, owner: str) -> list[object]:
    worker = await Worker.start(dsn, url, owner, "--claim-seconds", "30", "--until-done")
    try:
        assert await worker.line() == "ready"
        return await worker.lines_until("done")
    finally:
        await worker.stop()


async def test_a_worker_killed_mid_top_up_raises_the_limit_once(
    db: Database, database_dsn: str, panel: HoldingMarzban
) -> None:
    catalog = Catalog.from_settings(SETTINGS)  # the workers' catalog: a month on Marzban
    alerts = Alerts()
    providers = {"stars": InChatProvider("stars")}
    billing = Billing(db, catalog, providers, alerts, balance_currency="RUB")
    access = Access(db, catalog, {}, alerts)
    settings = TrafficSettings.model_validate(
        {"packages": [{"id": "gb10", "gb": 10, "prices": {"stars": {"XTR": 50}}}]}
    )
    traffic = Traffic(
        db,
        access.terms_of,
        {},
        providers,
        settings,
        balance_currency="RUB",  # type: ignore[arg-type]
    )
    checkout = await billing.buy(USER, "month", "stars")
    bought = await billing.confirm(ConfirmedPayment("stars", "c1", checkout.payment.id, 150, "XTR"))
    assert bought.verdict is Verdict.CREDITED and bought.subscription is not None
    name = account_name(USER, bought.subscription.id)
    assert await run_until_done(database_dsn, panel.url, "first") == [{"claimed": 1}]
    assert panel.users[name]["data_limit"] == 100 * GIB

    top_up = await traffic.buy(USER, bought.subscription, "gb10", "stars", title="10 GB")
    credited = await billing.confirm(ConfirmedPayment("stars", "t1", top_up.payment.id, 50, "XTR"))
    assert credited.verdict is Verdict.CREDITED
    panel.hold = 30.0
    doomed = await Worker.start(database_dsn, panel.url, "doomed", "--claim-seconds", "1")
    try:
        assert await doomed.line() == "ready"
        with trio.fail_after(60):
            await panel.changed.wait()
        doomed.process.send_signal(signal.SIGKILL)
        with trio.fail_after(60):
            await doomed.process.wait()
        assert doomed.process.returncode == -signal.SIGKILL
    finally:
        await doomed.stop()
    assert panel.users[name]["data_limit"] == 110 * GIB  # the panel took it, we never heard
    [job] = await rows(
        db,
        "select status, claimed_by from outbox where kind = $1 and dedup_key like '%:traffic:%'",
        job_kinds.ACTIVATE,
    )
    assert job == {"status": "pending", "claimed_by": "doomed"}

    assert await run_until_done(database_dsn, panel.url, "survivor") == [{"claimed": 1}]
    assert panel.users[name]["data_limit"] == 110 * GIB, "set again, not added again"
    [job] = await rows(
        db,
        "select status, lost_claims from outbox where kind = $1 and dedup_key like '%:traffic:%'",
        job_kinds.ACTIVATE,
    )
    assert job == {"status": "done", "lost_claims": 1}
    assert await rows(db, "select count(*) as n from traffic_topups") == [{"n": 1}]
    assert alerts.alerts == []
