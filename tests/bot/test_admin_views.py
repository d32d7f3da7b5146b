"""Every admin screen has a way back to the admin menu."""

from __future__ import annotations

from runtime.bot import keyboards as kb
from runtime.i18n import load_translator

from . import test_handlers
from .conftest import ADMIN, Shop
from .recording import Call
from .test_handlers import USER, Driver, by_method

driver = test_handlers.driver
shop = test_handlers.shop

BACK = kb.AdminCb(action="menu").pack()
PAYMENT = "0b7c1c38-3c0e-4c47-9d43-38bb2a7c5b11"


def screens(calls: list[Call]) -> list[Call]:
    """The messages shown (sent or edited), not the button answers."""
    return [c for c in calls if c.method in {"sendMessage", "editMessageText"}]


def has_back(call: Call) -> bool:
    markup = call.params.get("reply_markup") or {}
    return any(
        button.get("callback_data") == BACK
        for row in markup.get("inline_keyboard", [])
        for button in row
    )


def button(calls: list[Call], action: str) -> str:
    for call in calls:
        for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", []):
            for b in row:
                if b.get("callback_data", "").startswith(f"adm:{action}:"):
                    return str(b["callback_data"])
    raise AssertionError(f"no {action} button in {calls}")


async def test_every_admin_screen_has_a_back_button_to_the_admin_menu(
    driver: Driver, shop: Shop
) -> None:
    await driver.send(USER, "/start")
    seen: dict[str, list[Call]] = {}
    for command in (
        "/stats",
        "/status",
        f"/user {USER}",
        "/user",
        "/user @nobody",
        "/grant",
        f"/grant {USER} 7",
        "/refund",
        f"/refund {PAYMENT}",
        "/broadcast",
        "/failed",
        "/replay",
        "/replay all",
    ):
        seen[command] = screens(await driver.send(ADMIN, command))
    for action in ("stats", "status", "help"):
        seen[action] = screens(await driver.press(ADMIN, kb.AdminCb(action=action)))
    card = await driver.send(ADMIN, f"/user {USER}")
    seen["grant button"] = screens(await driver.press(ADMIN, button(card, "grant")))
    seen["refund unknown"] = screens(
        await driver.press(ADMIN, kb.AdminCb(action="refund_yes", arg=PAYMENT))
    )
    preview = await driver.send(ADMIN, "/broadcast all Hello")
    seen["broadcast preview"] = screens(preview)[1:]  # after the broadcast as users see it
    go = button(preview, "bc_go")
    seen["broadcast progress"] = screens(await driver.press(ADMIN, go, on_text="preview"))
    seen["broadcast refresh"] = screens(await driver.press(ADMIN, button(preview, "bc_stop")))
    seen["broadcast gone"] = screens(await driver.press(ADMIN, go, on_text="preview"))
    for name, calls in seen.items():
        assert calls, name
        assert all(has_back(call) for call in calls), (name, calls)

    back = await driver.press(ADMIN, BACK, on_text="Statistics")
    (menu,) = by_method(back, "editMessageText")
    assert menu.text == load_translator().t("en", "admin.menu")
    assert button([menu], "stats") and button([menu], "status")


async def test_a_non_admin_pressing_back_reaches_nothing(driver: Driver) -> None:
    stale = load_translator().t("en", "errors.stale_button")
    calls = await driver.press(USER, BACK)
    assert [(c.method, c.params.get("text")) for c in calls] == [("answerCallbackQuery", stale)]
