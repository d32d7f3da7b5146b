"""The admin's user editor reaches the panel: the activation job each action queues sets
the given plan's limits, the changed plan's limits, a new traffic period (the panel
resets the used traffic) and a set expiry, through the real Marzban backend against the
fake panel on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage import Database, grants, job_kinds, users
from runtime.storage import admin_actions as store
from runtime.storage.subscriptions import account_name

from . import test_activation
from .test_activation import GIB, OWNER, USER, Panel, current, jobs, notices, pay, unix

panel = test_activation.panel
backend = test_activation.backend
billing = test_activation.billing
access = test_activation.access

ACTOR = grants.admin_actor(900)

SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month"},
                "duration_days": 30,
                "backend": "marzban",
                "prices": {"stars": {"XTR": 150}},
                "traffic_limit_gb": 100,
            },
            "big": {
                "title": {"en": "Big"},
                "duration_days": 90,
                "backend": "marzban",
                "prices": {"stars": {"XTR": 400}},
                "traffic_limit_gb": 500,
            },
        },
    }
)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_settings(SETTINGS)


async def test_a_given_plan_reaches_the_panel_with_its_limits_and_says_access_ready(
    db: Database, access: Access, catalog: Catalog, panel: Panel
) -> None:
    await users.touch_user(db, USER, username=None, language="en")
    done = await store.give_plan(db, USER, catalog.get("big").terms, actor=ACTOR, key="u:1")
    assert done is not None and done.subscription is not None
    assert await access.activate_batch(OWNER) == 1
    name = account_name(USER, done.subscription.id)
    assert panel.users[name]["data_limit"] == 500 * GIB
    assert panel.users[name]["expire"] == unix(done.subscription.expires_at)
    (ready,) = await notices(db, "access_ready")
    assert ready["chat_id"] == USER


async def test_a_changed_plan_reaches_the_panel_with_its_limits_and_the_same_expiry(
    db: Database, billing: Billing, access: Access, catalog: Catalog, panel: Panel
) -> None:
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, subscription.id)
    assert panel.users[name]["data_limit"] == 100 * GIB

    done = await store.set_plan(db, USER, catalog.get("big").terms, actor=ACTOR, key="u:2")
    assert done is not None and done.changed
    assert await access.activate_batch(OWNER) == 1

    assert panel.users[name]["data_limit"] == 500 * GIB
    assert panel.users[name]["expire"] == unix(subscription.expires_at)
    assert not panel.calls("POST", f"/api/user/{name}/reset")  # the period goes on
    assert (await current(db, subscription)).activation_status == "active"


async def test_a_traffic_reset_gives_the_panel_a_new_period_that_resets_usage(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    name = account_name(USER, subscription.id)
    panel.use_traffic(name, 100 * GIB)  # used up
    spent = await access.backends["marzban"].get_account(name)
    assert spent is not None and spent.limited

    done = await store.reset_traffic(db, USER, actor=ACTOR, key="u:3")
    assert done is not None and done.subscription is not None
    assert await access.activate_batch(OWNER) == 1

    assert (panel.users[name]["status"], panel.users[name]["used_traffic"]) == ("active", 0)
    assert len(panel.calls("POST", f"/api/user/{name}/reset")) == 1
    provisioned = await current(db, subscription)
    assert provisioned.account_period_started_at == done.subscription.period_started_at
    assert provisioned.activation_status == "active"
    (job,) = [j for j in await jobs(db, job_kinds.ACTIVATE) if j["dedup_key"].endswith(":u:3")]
    assert job["status"] == "done"

    # the same key again changes nothing: no new period, no second reset on the panel
    again = await store.reset_traffic(db, USER, actor=ACTOR, key="u:3")
    assert again is not None and again.repeated
    assert await access.activate_batch(OWNER) == 0
    assert len(panel.calls("POST", f"/api/user/{name}/reset")) == 1


async def test_a_set_expiry_reaches_the_panel_as_an_absolute_expiry(
    db: Database, billing: Billing, access: Access, panel: Panel
) -> None:
    _, subscription = await pay(billing, "c1")
    await access.activate_batch(OWNER)
    sooner = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    done = await store.set_expiry(db, USER, sooner, backend="marzban", actor=ACTOR, key="u:4")
    assert done is not None and done.changed
    assert await access.activate_batch(OWNER) == 1
    assert panel.users[account_name(USER, subscription.id)]["expire"] == unix(sooner)
