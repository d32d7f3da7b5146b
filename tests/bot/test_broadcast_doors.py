"""Broadcast commands and buttons are doors: a non-admin reaches nothing, and an admin's
broadcast that Telegram would refuse (broken HTML, a ``javascript:`` button, a text or
caption over Telegram's limits) is refused before anything is stored or sent, with the
reason, in the admin's language."""

from __future__ import annotations

import pytest

from runtime.bot import keyboards as kb
from runtime.i18n import load_translator

from . import test_handlers
from .conftest import ADMIN, Shop
from .test_handlers import USER, Driver, texts

driver = test_handlers.driver
shop = test_handlers.shop

PHOTO = [{"file_id": "AgACAgIAAxkBAAI-photo", "file_unique_id": "u1", "width": 9, "height": 9}]


async def test_a_non_admin_reaches_no_broadcast_function(driver: Driver, shop: Shop) -> None:
    translator = load_translator()
    unknown = translator.t("en", "errors.unknown_command")
    await driver.send(USER, "/start")
    for command in ("/broadcast all Hello", "/broadcasts", "/broadcast"):
        assert texts(await driver.send(USER, command)) == [unknown], command
    as_caption = driver.message(USER, photo=PHOTO, caption="/broadcast all Hello")
    assert texts(await driver.deliver(as_caption)) == [translator.t("en", "errors.text_pointer")]
    stale = translator.t("en", "errors.stale_button")
    for action in ("bc_go", "bc_show", "bc_stop", "bc_del", "bc_del_yes"):
        calls = await driver.press(USER, kb.AdminCb(action=action, n=1))
        assert [(c.method, c.params.get("text")) for c in calls] == [
            ("answerCallbackQuery", stale)
        ], action
    assert await shop.value("select count(*) from broadcasts") == 0
    assert await shop.value("select count(*) from outbox") == 0
    assert await shop.value("select count(*) from audit_log") == 0


REFUSALS = [
    ("/broadcast all <b>New servers", "the tag <b> opened at character 0 is never closed"),
    ("/broadcast all 1 < 2", 'a "<" at character 2 starts no supported tag'),
    ("/broadcast all <script>x</script>", "the tag <script> at character 0"),
    (
        "/broadcast all Hi\n[Free VPN](javascript:alert(document.cookie))",
        "is not an http:// or https:// link",
    ),
    ("/broadcast all Hi\n[Site](https://exa mple.com)", "is not an http:// or https:// link"),
    ("/broadcast all " + "x" * 4097, "the text is 4097 characters long; Telegram allows 4096"),
    ("/broadcast everyone Hi", 'there is no segment "everyone"'),
    ("/broadcast plan:gold Hi", 'there is no plan "gold"'),
    ("/broadcast lang Hi", 'the segment "lang" is written like'),
    ("/broadcast all", "the text is empty"),
]


@pytest.mark.parametrize(("command", "reason"), REFUSALS)
async def test_a_broadcast_telegram_would_refuse_is_refused_with_the_reason(
    driver: Driver, shop: Shop, command: str, reason: str
) -> None:
    calls = await driver.send(ADMIN, command)
    assert [c.method for c in calls] == ["sendMessage"]
    assert texts(calls)[0].startswith("The broadcast was not created: ")
    assert reason in texts(calls)[0]
    assert await shop.value("select count(*) from broadcasts") == 0


async def test_an_oversized_caption_is_refused_and_the_reason_is_translated(
    driver: Driver, shop: Shop
) -> None:
    caption = "/broadcast all " + "я" * 1025
    calls = await driver.deliver(driver.message(ADMIN, "ru", photo=PHOTO, caption=caption))
    (text,) = texts(calls)
    assert text == (
        "Рассылка не создана: в подписи 1025 символов, Telegram допускает 1024 с файлом."  # noqa: RUF001
    )
    fits = await driver.deliver(
        driver.message(ADMIN, photo=PHOTO, caption="/broadcast all " + "я" * 1024)
    )
    assert [c.method for c in fits] == ["sendPhoto", "sendMessage"]
    assert await shop.value("select count(*) from broadcasts") == 1


async def test_buttons_naming_no_broadcast_are_answered_quietly(driver: Driver, shop: Shop) -> None:
    gone = load_translator().t("en", "admin.broadcast_gone", id=10**30)
    for action in ("bc_go", "bc_show", "bc_stop", "bc_del", "bc_del_yes"):
        for n in (0, -5, 10**30, 424242):
            calls = await driver.press(ADMIN, f"adm:{action}::{n}")
            assert calls, (action, n)
    calls = await driver.press(ADMIN, f"adm:bc_show::{10**30}")
    assert [(c.method, c.params.get("text")) for c in calls] == [("answerCallbackQuery", gone)]
    assert shop.alerts.alerts == []
    assert await shop.value("select count(*) from outbox") == 0
