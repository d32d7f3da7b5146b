"""Activation and revocation end to end: Billing and Access on a real PostgreSQL, the real
Marzban backend against the fake panel on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from starlette.requests import Request
from starlette.responses import Response

from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.access import Access
from runtime.alerts import Alert, AlertPipeline
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database, job_kinds, outbox
from runtime.storage import subscriptions as subs
from runtime.storage.admin import adjust_days
from runtime.storage.payments import Verdict
from runtime.storage.subscriptions import Subscription, account_name
from runtime.testing.fakes.marzban import FakeMarzban

from .conftest import Alerts, InChatProvider

USER = 2002
OWNER = "worker-a"
ADMIN = "bot-admin"
PASSWORD = "panel-pa55word"
ATTEMPTS = 3
GIB = 2**30


class Panel(FakeMarzban):
    """The fake panel, with an outage that lasts until it is over, a gate that holds
    user creations (received, not yet handled) until it opens, and a fault that answers
    every user as ``disabled`` (a panel that does not apply what it is sent)."""

    gate: trio.Event | None = None
    held: trio.Event | None = None
    stuck_status: str | None = None

    def _answer(self, user: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(user)
        if self.stuck_status is not None:
            answer["status"] = self.stuck_status
        return answer

    def hold_creations(self) -> tuple[trio.Event, trio.Event]:
        """Hold user creations from now on: (set once one is held, set it to let them go)."""
        self.held, self.gate = trio.Event(), trio.Event()
        return self.held, self.gate

    def go_down(self) -> None:
        self.fail_next(503, body={"detail": "Service Unavailable"}, times=1_000_000)

    def come_back(self) -> None:
        self._faults.clear()

    async def _create(self, request: Request) -> Response:
        if self.held is not None and self.gate is not None:
            self.held.set()
            await self.gate.wait()
        return await super()._create(request)


@pytest.fixture
async def panel() -> AsyncIterator[Panel]:
    fake = Panel(admin_username=ADMIN, admin_password=PASSWORD)
    async with fake.running():
        yield fake


@pytest.fixture
async def backend(panel: Panel) -> AsyncIterator[MarzbanBackend]:
    settings = MarzbanSettings.model_validate(
        {"base_url": panel.url, "username": ADMIN, "password": PASSWORD}
    )
    subject = MarzbanBackend(settings)
    yield subject
    await subject.aclose()


@pytest.fixture
def billing(db: Database, catalog: Catalog, alerts: Alerts) -> Billing:
    return Billing(
        db,
        catalog,
        {"stars": InChatProvider("stars")},
        alerts,
        balance_currency="RUB",
        activation_max_attempts=ATTEMPTS,
    )


@pytest.fixture
def access(db: Database, catalog: Catalog, backend: MarzbanBackend, alerts: Alerts) -> Access:
    return Access(db, catalog, {"marzban": backend}, alerts, max_attempts=ATTEMPTS)


# -- helpers ---------------------------------------------------------------------------------


async def pay(billing: Billing, charge: str) -> tuple[str, Subscription]:
    """A purchase of the plan "month", credited; (payment id, subscription)."""
    checkout = await billing.buy(USER, "month", "stars")
    result = await billing.confirm(
        ConfirmedPayment("stars", charge, checkout.payment.id, 150, "XTR")
    )
    assert result.verdict is Verdict.CREDITED
    assert result.subscription is not None
    return checkout.payment.id, result.subscription


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def jobs(db: Database, kind: str) -> list[dict[str, Any]]:
    return await rows(
        db,
        "select id, dedup_key, status, attempts, max_attempts, claimed_by, last_error,"
        " next_attempt_at - updated_at as backoff from outbox where kind = $1 order by id",
        kind,
    )


async def notices(db: Database, template: str) -> list[dict[str, Any]]:
    found = await rows(
        db, "select payload from outbox where kind = $1 order by id", job_kinds.NOTIFY
    )
    return [r["payload"] for r in found if r["payload"]["template"] == template]


async def make_due(db: Database) -> None:
    """What the backoff would do after a while, without waiting for it."""
    await rows(db, "update outbox set next_attempt_at = now() where status = 'pending'")


async def current(db: Database, subscription: Subscription) -> Subscription:
    found = await subs.get(db, subscription.id)
    assert found is not None
    return found


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


# -- activation --------------------------------------------------------------------------------


async def test_a_credited_payment_creates_one_panel_user_and_tells_the_user_once(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    _, subscription = await pay(billing, "c1")
    name = account_name(USER, subscription.id)
    assert subscription.vpn_account == name

    assert await access.activate_batch(OWNER) == 1

    assert list(panel.users) == [name]
    user = panel.users[name]
    assert user["expire"] == unix(subscription.expires_at)  # absolute, not a duration
    assert user["data_limit"] == 100 * GIB
    assert user["status"] == "active"
    activated = await current(db, subscription)
    assert activated.activation_status == "active"
    assert activated.access_url is not None
    assert activated.access_url.startswith(panel.url.rstrip("/") + "/sub/")
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"]) == ("done", 1)
    [ready] = await notices(db, "access_ready")
    assert ready["chat_id"] == USER
    assert ready["params"]["access_url"] == activated.access_url
    assert ready["params"]["subscription_id"] == subscription.id

    # Nothing left to do: no panel call, no second notification.
    before = len(panel.requests)
    assert await access.activate_batch(OWNER) == 0
    assert len(panel.requests) == before
    assert len(await notices(db, "access_ready")) == 1
    assert alerts.alerts == []


async def test_an_extension_sets_the_new_expiry_on_the_same_panel_user(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    _, first = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, first.id)
    credentials = panel.users[name]["proxies"]

    _, extended = await pay(billing, "c2")
    assert extended.id == first.id
    assert extended.expires_at - first.expires_at == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )
    assert (await current(db, first)).activation_status == "pending"
    assert await access.activate_batch(OWNER) == 1

    assert list(panel.users) == [name]  # no second user
    assert panel.users[name]["expire"] == unix(extended.expires_at)
    assert panel.users[name]["proxies"] == credentials  # the user's clients keep working
    [put] = panel.calls("PUT", f"/api/user/{name}")
    assert put.json()["expire"] == unix(extended.expires_at)
    assert (await current(db, first)).activation_status == "active"
    assert [j["status"] for j in await jobs(db, job_kinds.ACTIVATE)] == ["done", "done"]
    assert len(await notices(db, "access_ready")) == 1
    # one message for the extension; Marzban's link carries the second it was issued
    extensions = [
        *await notices(db, "access_extended"),
        *await notices(db, "access_extended_new_link"),
    ]
    assert [n["params"]["expires_at"] for n in extensions] == [extended.expires_at.isoformat()]
    assert len(await notices(db, "payment_received")) == 2


async def test_a_renewal_after_the_traffic_ran_out_restores_access(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    _, first = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, first.id)
    provisioned = await current(db, first)
    assert provisioned.account_period_started_at == provisioned.period_started_at
    panel.use_traffic(name, 100 * GIB)  # the plan's traffic, used up
    spent = await access.backends["marzban"].get_account(name)
    assert spent is not None and spent.limited and panel.users[name]["status"] == "limited"

    _, renewed = await pay(billing, "c2")
    assert renewed.id == first.id
    assert renewed.period_started_at > first.period_started_at  # a new period
    assert await access.activate_batch(OWNER) == 1

    user = panel.users[name]
    assert (user["status"], user["used_traffic"]) == ("active", 0)
    assert user["expire"] == unix(renewed.expires_at)
    restored = await current(db, first)
    assert restored.activation_status == "active"
    assert restored.account_period_started_at == renewed.period_started_at
    assert len(panel.calls("POST", f"/api/user/{name}/reset")) == 1
    assert alerts.alerts == []


async def test_an_account_the_panel_leaves_disabled_is_a_failed_activation(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    _, subscription = await pay(billing, "c1")
    panel.stuck_status = "disabled"

    assert await access.activate_batch(OWNER) == 1
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"]) == ("pending", 1)  # retried
    assert "not usable after activation" in job["last_error"]
    pending = await current(db, subscription)
    assert (pending.activation_status, pending.access_url) == ("pending", None)
    assert alerts.alerts == []

    for _ in range(ATTEMPTS - 1):
        await make_due(db)
        assert await access.activate_batch(OWNER) == 1
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert job["status"] == "dead"
    assert (await current(db, subscription)).activation_status == "failed"
    assert alerts.keys() == [f"activation_failed:{subscription.id}"]
    assert len(await notices(db, "activation_delayed")) == 1
    assert await notices(db, "access_ready") == []  # never reported as ready


async def test_days_granted_within_a_used_up_period_are_no_failure(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, subscription.id)
    panel.use_traffic(name, 100 * GIB)

    granted = await adjust_days(
        db, USER, 5, operation_key="grant-1", backend="marzban", max_attempts=ATTEMPTS
    )
    assert granted is not None and granted.subscription is not None
    assert granted.subscription.period_started_at == subscription.period_started_at
    assert await access.activate_batch(OWNER) == 1

    [_, second] = await jobs(db, job_kinds.ACTIVATE)
    assert second["status"] == "done"
    assert panel.users[name]["status"] == "limited"  # the period's traffic stays used up
    assert panel.users[name]["expire"] == unix(granted.subscription.expires_at)
    assert not panel.calls("POST", f"/api/user/{name}/reset")
    assert (await current(db, subscription)).activation_status == "active"
    assert alerts.alerts == []


async def test_a_new_account_over_its_traffic_is_a_failed_activation(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    """The panel answers an account of a period that just began as out of traffic: it was
    not reset, whatever the reason, so it is not ready."""
    await pay(billing, "c1")
    panel.stuck_status = "limited"
    assert await access.activate_batch(OWNER) == 1
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert job["status"] == "pending"
    assert "traffic is used up in a period that has just begun" in job["last_error"]
    assert await notices(db, "access_ready") == []


async def test_a_panel_outage_is_retried_with_growing_backoff_and_no_alert(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    _, subscription = await pay(billing, "c1")
    panel.go_down()

    assert await access.activate_batch(OWNER) == 1
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"], job["claimed_by"]) == ("pending", 1, None)
    assert "HTTP 503" in job["last_error"]
    first_backoff = job["backoff"]
    assert timedelta(seconds=3.9) <= first_backoff <= timedelta(seconds=5)
    assert await access.activate_batch(OWNER) == 0  # not due before the backoff ends

    await make_due(db)
    assert await access.activate_batch(OWNER) == 1
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"]) == ("pending", 2)
    assert job["backoff"] > first_backoff

    pending = await current(db, subscription)
    assert pending.activation_status == "pending"
    assert pending.activation_attempts == 2
    assert pending.access_url is None
    assert panel.users == {}
    assert await notices(db, "activation_delayed") == []
    assert alerts.alerts == []


async def test_a_dead_activation_fails_the_subscription_tells_the_user_and_alerts_once(
    db: Database,
    billing: Billing,
    catalog: Catalog,
    backend: MarzbanBackend,
    panel: Panel,
    alerts: Alerts,
) -> None:
    pipeline = AlertPipeline([], throttle_seconds=3600)

    class Both:
        def submit(self, alert: Alert) -> None:
            alerts.submit(alert)
            pipeline.submit(alert)

    access = Access(db, catalog, {"marzban": backend}, Both(), max_attempts=ATTEMPTS)
    _, subscription = await pay(billing, "c1")
    key = f"activation_failed:{subscription.id}"
    panel.go_down()

    async def run_until_dead() -> None:
        for _ in range(ATTEMPTS):
            await make_due(db)
            assert await access.activate_batch(OWNER) == 1

    await run_until_dead()
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"]) == ("dead", ATTEMPTS)
    failed = await current(db, subscription)
    assert failed.activation_status == "failed"
    assert failed.status == "active"  # the user keeps what they paid for
    [delayed] = await notices(db, "activation_delayed")
    assert delayed == {
        "chat_id": USER,
        "template": "activation_delayed",
        "params": {"subscription_id": subscription.id},
    }
    assert alerts.keys() == [key]
    await make_due(db)
    assert await access.activate_batch(OWNER) == 0  # a dead job stays dead: no new alert
    assert alerts.keys() == [key]

    # The dead path again for the same subscription (its extension's job dies too): the
    # user is not told twice, and the alert has the same key, so the pipeline holds it back.
    await pay(billing, "c2")
    await run_until_dead()
    assert [j["status"] for j in await jobs(db, job_kinds.ACTIVATE)] == ["dead", "dead"]
    assert alerts.keys() == [key, key]
    assert pipeline.stats.suppressed_total == 1
    assert len(await notices(db, "activation_delayed")) == 1

    # The panel comes back and an operator requeues the dead jobs: access is provisioned.
    panel.come_back()
    dead = await outbox.dead_letters(db, kinds=[job_kinds.ACTIVATE])
    assert await outbox.requeue_dead(db, [d.id for d in dead]) == 2
    assert await access.activate_batch(OWNER) == 2
    name = account_name(USER, subscription.id)
    assert list(panel.users) == [name]
    extended = await current(db, subscription)
    assert extended.activation_status == "active"
    assert panel.users[name]["expire"] == unix(extended.expires_at)
    assert [j["status"] for j in await jobs(db, job_kinds.ACTIVATE)] == ["done", "done"]
    assert len(await notices(db, "access_ready")) == 1
    assert alerts.keys() == [key, key]


async def test_a_refused_request_is_not_retried(
    db: Database, billing: Billing, access: Access, panel: Panel, alerts: Alerts
) -> None:
    """A 4xx will be refused again: it is dead-lettered at once, not retried for hours."""
    _, subscription = await pay(billing, "c1")
    panel.inbounds.pop("vless")  # "Protocol vless is disabled on your server" (400)

    assert await access.activate_batch(OWNER) == 1

    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["attempts"]) == ("dead", 1)
    assert "HTTP 400" in job["last_error"]
    assert (await current(db, subscription)).activation_status == "failed"
    assert len(await notices(db, "activation_delayed")) == 1
    assert alerts.keys() == [f"activation_failed:{subscription.id}"]


async def test_a_job_whose_claims_kept_expiring_ends_like_a_dead_one(
    db: Database, billing: Billing, access: Access, alerts: Alerts
) -> None:
    """A job that killed its worker every time is dead-lettered by the next claim after
    its last lost claim (the deaths cost no attempt: they count apart); its subscription
    is marked failed and its user told, as for any dead activation."""
    _, subscription = await pay(billing, "c1")
    for attempt in range(ATTEMPTS):
        await make_due(db)
        [ghost] = await outbox.claim(
            db, kinds=[job_kinds.ACTIVATE], owner=f"killed-{attempt}", limit=5, claim_seconds=60
        )
        assert (ghost.attempts, ghost.claim) == (1, attempt + 1)
    await make_due(db)  # the last claim expired too

    assert await access.activate_batch(OWNER) == 0

    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert job["status"] == "dead"
    assert (await current(db, subscription)).activation_status == "failed"
    assert len(await notices(db, "activation_delayed")) == 1
    assert alerts.keys() == [f"activation_failed:{subscription.id}"]


# -- revocation ------------------------------------------------------------------------------


async def lapse(db: Database, subscription: Subscription) -> None:
    """Move the subscription's whole period into the past."""
    await rows(
        db,
        "update subscriptions set starts_at = now() - interval '31 days',"
        " expires_at = now() - interval '1 second' where id = $1",
        subscription.id,
    )


async def test_expiry_disables_the_panel_user(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, subscription.id)
    await lapse(db, subscription)

    assert await access.expire_due() == 1
    assert await access.expire_due() == 0
    assert await access.revoke_batch(OWNER) == 1

    assert panel.users[name]["status"] == "disabled"
    ended = await current(db, subscription)
    assert (ended.status, ended.activation_status) == ("expired", "revoked")
    [job] = await jobs(db, job_kinds.REVOKE)
    assert job["status"] == "done"
    assert await access.revoke_batch(OWNER) == 0


async def test_a_lapsed_subscription_extended_is_enabled_again_by_the_next_activation(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    """The period ran out (the panel marked the user expired) and the user paid before the
    expiry scan came: the same subscription, the same panel user, enabled again."""
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, subscription.id)
    await lapse(db, subscription)
    panel.users[name]["expire"] = int(datetime.now(UTC).timestamp()) - 1
    await access.backends["marzban"].get_account(name)  # the panel's review runs
    assert panel.users[name]["status"] == "expired"

    _, extended = await pay(billing, "c2")
    assert extended.id == subscription.id
    assert extended.expires_at - datetime.now(UTC) == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )
    assert await access.activate_batch(OWNER) == 1

    assert list(panel.users) == [name]
    assert panel.users[name]["status"] == "active"
    assert panel.users[name]["expire"] == unix(extended.expires_at)
    assert await access.expire_due() == 0


async def test_an_activation_that_lands_after_a_refund_is_revoked_again(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    """The refund's revocation ran while the panel call was in flight (the user did not
    exist yet); the call then created the user enabled. It must not stay enabled."""
    payment_id, subscription = await pay(billing, "c1")
    name = account_name(USER, subscription.id)
    held, gate = panel.hold_creations()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.activate_batch, OWNER)
        with trio.fail_after(60):
            await held.wait()
        refunded = await billing.refund(payment_id, through_provider=False)
        assert refunded.access_revoked
        assert await access.revoke_batch("worker-b") == 1
        assert name not in panel.users  # nothing to disable yet
        gate.set()

    assert panel.users[name]["status"] == "active"  # the late call enabled it
    ended = await current(db, subscription)
    assert ended.status == "revoked"
    assert await access.revoke_batch("worker-b") == 1
    assert panel.users[name]["status"] == "disabled"
    assert [j["status"] for j in await jobs(db, job_kinds.REVOKE)] == ["done", "done"]
    assert await notices(db, "access_ready") == []


# -- trials ----------------------------------------------------------------------------------


async def test_a_trial_activates_too(
    db: Database, access: Access, panel: Panel, alerts: Alerts
) -> None:
    trial = await access.start_trial(USER)
    assert await access.activate_batch(OWNER) == 1

    name = account_name(USER, trial.id)
    assert list(panel.users) == [name]
    assert panel.users[name]["expire"] == unix(trial.expires_at)
    assert trial.expires_at - trial.starts_at == timedelta(hours=24)
    activated = await current(db, trial)
    assert (activated.kind, activated.activation_status) == ("trial", "active")
    [ready] = await notices(db, "access_ready")
    assert ready["params"]["access_url"] == activated.access_url
    [job] = await jobs(db, job_kinds.ACTIVATE)
    assert (job["status"], job["max_attempts"]) == ("done", ATTEMPTS)
    assert alerts.alerts == []
