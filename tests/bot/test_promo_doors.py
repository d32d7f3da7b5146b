"""The promo doors: what users and non-admins can send, bounded and refused without
harm; tampered buttons; admin commands' arguments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.bot import TelegramBot
from runtime.bot import keyboards as kb
from runtime.i18n import load_translator
from runtime.promo import BadCommand, parse_new_code
from runtime.storage import Database, grants
from runtime.storage import promo as store
from runtime.storage.promo import Kind, NewCode

from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .recording import RecordingSession
from .test_handlers import Driver, texts

TR = load_translator()
USER = 601


@pytest.fixture
async def shop(db: Database, panel: Any, crypto: Any, alerts: Alerts) -> AsyncIterator[Shop]:
    shop = build_shop(make_settings("http://127.0.0.1:9"), db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@pytest.fixture
def driver(shop: Shop) -> Driver:
    return Driver(shop, TelegramBot(shop.services), RecordingSession())


async def activations(shop: Shop) -> int:
    return int(await shop.value("select count(*) from promo_activations"))


@pytest.mark.parametrize(
    "text",
    [
        "/promo ab",
        "/promo " + "A" * 33,
        "/promo " + "A" * 5000,
        "/promo \u0414\u0420\u0423\u04132024",  # Cyrillic letters
        "/promo CODE; drop table users",
        "/promo two words",
        "/promo %00%00%00",
    ],
)
async def test_malformed_codes_are_answered_without_touching_the_database(
    driver: Driver, shop: Shop, text: str
) -> None:
    calls = await driver.send(USER, text)
    assert texts(calls) == [TR.t("en", "promo.malformed")]
    assert await activations(shop) == 0
    assert shop.alerts.alerts == []


async def test_each_refusal_has_its_reason(driver: Driver, shop: Shop) -> None:
    actor = grants.admin_actor(ADMIN)
    await store.create(shop.db, NewCode("ONLYONE", Kind.DAYS, 1, max_activations=1), actor=actor)
    assert texts(await driver.send(USER, "/promo nosuchcode")) == [
        TR.t("en", "promo.unknown", code="NOSUCHCODE")
    ]
    assert "activated" in texts(await driver.send(USER, "/promo onlyone"))[0]
    assert texts(await driver.send(USER, "/promo ONLYONE")) == [
        TR.t("en", "promo.already_used", code="ONLYONE")
    ]
    assert texts(await driver.send(USER + 1, "/promo OnlyOne", lang="ru")) == [
        TR.t("ru", "promo.exhausted", code="ONLYONE")
    ]
    assert texts(await driver.send(USER, "/promo")) == [TR.t("en", "promo.prompt")]


async def test_admin_commands_from_a_user_are_unknown_commands(driver: Driver, shop: Shop) -> None:
    await store.create(shop.db, NewCode("KEEP", Kind.DAYS, 1), actor=grants.admin_actor(ADMIN))
    unknown = TR.t("en", "errors.unknown_command")
    for command in (
        "/promo_new FREE kind=days value=365",
        "/promos",
        "/promo_info KEEP",
        "/promo_off KEEP",
        f"/discount {USER} 99",
    ):
        assert texts(await driver.send(USER, command)) == [unknown], command
    assert await shop.value("select count(*) from promo_codes") == 1
    assert await shop.value("select disabled_at from promo_codes") is None
    assert await shop.value("select count(*) from promo_personal_discounts") == 0


async def test_admin_buttons_from_a_user_do_nothing(driver: Driver, shop: Shop) -> None:
    await store.create(shop.db, NewCode("KEEP", Kind.DAYS, 1), actor=grants.admin_actor(ADMIN))
    calls = await driver.press(USER, kb.PromoCb(action="off", code="KEEP"))
    assert [c.params.get("text") for c in calls] == [TR.t("en", "errors.stale_button")]
    assert await shop.value("select disabled_at from promo_codes") is None


@pytest.mark.parametrize(
    "data",
    [
        "pro:off:" + "Z" * 50,
        "pro:off:../../etc",
        "pro:off:",
        "pro:explode:KEEP",
        "pro:off",
        "pro:info:KEEP:extra",
    ],
)
async def test_tampered_promo_buttons_from_an_admin_change_nothing(
    driver: Driver, shop: Shop, data: str
) -> None:
    await store.create(shop.db, NewCode("KEEP", Kind.DAYS, 1), actor=grants.admin_actor(ADMIN))
    await driver.press(ADMIN, data)
    assert await shop.value("select disabled_at from promo_codes") is None
    assert shop.alerts.alerts == []
    assert await shop.value("select count(*) from telegram_updates where processed_at is null") == 0


async def test_an_admin_creates_with_a_reason_for_a_mistake(driver: Driver, shop: Shop) -> None:
    bad = texts(await driver.send(ADMIN, "/promo_new X kind=days value=1"))[0]
    assert bad.startswith("a code is 3-32 characters")
    bad = texts(await driver.send(ADMIN, "/promo_new GIFT kind=plan value=year"))[0]
    assert bad == TR.t("en", "promo.admin_plan_unknown", plan="year")
    made = texts(await driver.send(ADMIN, "/promo_new gift kind=plan value=month new_only"))[0]
    assert made.startswith("Created: GIFT")
    again = texts(await driver.send(ADMIN, "/promo_new GIFT kind=days value=1"))[0]
    assert again == TR.t("en", "promo.admin_exists", code="GIFT")
    assert texts(await driver.send(ADMIN, f"/discount {USER} 15")) == [
        TR.t("en", "promo.discount_user_unknown", user=str(USER))
    ]
    await driver.send(USER, "/start")
    assert texts(await driver.send(ADMIN, f"/discount {USER} 15")) == [
        TR.t("en", "promo.discount_done", user=USER, percent=15)
    ]
    assert await shop.value("select percent from promo_personal_discounts") == 15
    actions = await shop.fetch("select action, actor from audit_log order by id")
    assert [a["action"] for a in actions] == ["promo.create", "discount.set"]
    assert {a["actor"] for a in actions} == {f"admin:{ADMIN}"}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ("", "give the code"),
        ("CODE", "kind is one of"),
        ("CODE kind=days", "whole number"),
        ("CODE kind=days value=0", "1 to 3660"),
        ("CODE kind=discount value=100", "1 to 99"),
        ("CODE kind=days value=1 max=0", "max is"),
        ("CODE kind=days value=1 until=2027-02-30", "not a date"),
        ("CODE kind=days value=1 from=2027-02-01 until=2027-01-01", "later than"),
        ("CODE kind=days value=1 until=2027-01-01T10:00", "time zone"),
        ("CODE kind=days value=1 admin=yes", "not an option"),
        ("CODE kind=days value=1 kind=balance", "not an option"),
        ("CODE " + "x" * 400, "too long"),
        ("CODE kind=days value=99999999999999999999", "whole number"),
    ],
)
def test_new_code_arguments_are_checked(args: str, reason: str) -> None:
    with pytest.raises(BadCommand, match=reason):
        parse_new_code(args)


def test_new_code_arguments_read_every_option() -> None:
    new = parse_new_code(
        "spring-24 kind=next_discount value=15 max=100 from=2026-01-01"
        " until=2027-01-31 new_only no_sub once_per_user"
    )
    assert (new.code, new.kind, new.amount, new.max_activations) == (
        "SPRING-24",
        Kind.NEXT_DISCOUNT,
        15,
        100,
    )
    assert new.valid_from is not None and new.valid_from.isoformat() == "2026-01-01T00:00:00+00:00"
    assert new.valid_until is not None
    assert new.valid_until.isoformat() == "2027-02-01T00:00:00+00:00"  # the whole last day
    assert new.new_users_only and new.without_subscription
