"""The admins' handlers are imported and built on an admin's first update, not before:
an idle service does not hold them, and no other user's update builds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runtime.bot import keyboards as kb
from runtime.bot._dispatch import await_plain_callables
from runtime.bot.handlers._lazy import LazyRouter
from runtime.i18n import load_translator

from . import test_handlers
from .conftest import ADMIN, Shop
from .test_handlers import ADMIN_COMMANDS, USER, Driver, texts

driver = test_handlers.driver
shop = test_handlers.shop

ROOT = Path(__file__).resolve().parents[2]
ADMIN_MODULES = [
    "runtime.bot.handlers.admin",
    "runtime.bot.handlers.admin_actions",
    "runtime.bot.handlers.admin_reports",
    "runtime.bot.handlers.broadcasts",
    "runtime.bot.handlers.moderation",
    "runtime.storage.reports",
]
ASSEMBLE = """
import json, sys
import runtime.bot._actor
from runtime.bot.handlers import routers
routers()
print(json.dumps(sorted(m for m in sys.modules if m in sys.argv[1:])))
"""


def lazy_routers(driver: Driver) -> dict[str, LazyRouter]:
    return {
        router.name: router
        for router in driver.tb.dispatcher.chain_tail
        if isinstance(router, LazyRouter)
    }


def test_the_bots_routers_come_without_the_admins_modules() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ASSEMBLE, *ADMIN_MODULES],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


async def test_no_other_users_update_builds_the_admins_routers(driver: Driver) -> None:
    lazy = lazy_routers(driver)
    assert set(lazy) == {"admins", "admin_forwards_lazy"}
    await driver.send(USER, "/start")
    for command in ADMIN_COMMANDS:
        await driver.send(USER, command)
    await driver.press(USER, kb.AdminCb(action="stats"))
    forwarded = driver.message(
        USER, text="hi", forward_origin={"type": "hidden_user", "date": 1, "sender_user_name": "X"}
    )
    await driver.deliver(forwarded)
    assert not any(router.built for router in lazy.values())


async def test_an_admins_first_command_builds_them_once_and_is_answered(
    driver: Driver, shop: Shop
) -> None:
    admins = lazy_routers(driver)["admins"]
    calls = await driver.send(ADMIN, "/admin")
    assert texts(calls) == [load_translator().t("en", "admin.menu")]
    assert admins.built
    children = list(admins.sub_routers)
    assert [router.name for router in children] == [
        "admin",
        "broadcasts",
        "moderation",
        "admin_actions",
        "admin_reports",
        "promo_admin",
    ]
    assert await_plain_callables(admins) == 0, "built without the cheaper dispatch"
    await driver.send(ADMIN, "/stats")
    assert admins.sub_routers == children


async def test_an_admins_first_forward_builds_the_forwards_router(driver: Driver) -> None:
    forwards = lazy_routers(driver)["admin_forwards_lazy"]
    await driver.send(USER, "/start")
    forwarded = driver.message(
        ADMIN,
        text="/start",
        forward_origin={
            "type": "user",
            "date": 1,
            "sender_user": {"id": USER, "is_bot": False, "first_name": f"User{USER}"},
        },
    )
    calls = await driver.deliver(forwarded)
    assert forwards.built
    assert any(str(USER) in text for text in texts(calls))
