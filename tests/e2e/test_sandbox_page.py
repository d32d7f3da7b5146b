"""The sandbox's chat page in a real headless Chromium, at phone and desktop widths.

One sandbox serves the module; every test chats as a simulated user of its own
(``/sandbox?user=<id>``), so no test sees another's messages. Waits are on the DOM with
generous deadlines: the suite runs with every core busy.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.sandbox._sandbox import FIRST_USER_ID
from tests import forkserver
from tests.e2e.sandbox_env import sandbox_env
from tests.integration.test_process import ROOT, free_port, get_status, wait_for
from tests.switches import switch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (the distribution's package)"
)

REPLY = 90_000
"""Milliseconds to wait for the bot's answer (or anything the page shows after it)."""
PHONES = [(360, 740), (412, 915)]
DESKTOP = (1280, 800)
SCREENSHOT_DIR = "VPNBOT_TEST_SCREENSHOT_DIR"
"""Set to a folder (``docs``) to write the README's screenshot there."""


@dataclass(frozen=True)
class Sandbox:
    page_url: str
    control: str


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    cwd = tmp_path_factory.mktemp("sandbox")
    http_port, telegram_port = free_port(), free_port()
    env = sandbox_env(http_port)
    process = forkserver.popen(
        [sys.executable, str(ROOT / "supervisor.py"), "run", "--telegram-port", str(telegram_port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            wait_for(lambda: process.poll() is not None or _ready(get_status(http_port)), 180)
            assert process.poll() is None
        except AssertionError:
            process.kill()
            output, _ = process.communicate()
            raise AssertionError(f"the sandbox did not start: {output[-3000:]}") from None
        yield Sandbox(
            f"http://127.0.0.1:{http_port}/sandbox", f"http://127.0.0.1:{telegram_port}/_control"
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _ready(status: dict[str, Any] | None) -> bool:
    """Started: a busy machine may leave an actor degraded for a while, the bot works."""
    return status is not None and bool(status["ready"]) and status["state"] != "unavailable"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # importing trio-asyncio (the test process has) replaces asyncio's loop policy;
    # Playwright's sync API needs a plain asyncio loop
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with playwright_api.sync_playwright() as p:
            launched = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            try:
                yield launched
            finally:
                launched.close()
    finally:
        asyncio.set_event_loop_policy(policy)


def new_user(sandbox: Sandbox, first_name: str) -> int:
    answer = httpx.post(f"{sandbox.control}/users", json={"first_name": first_name}, timeout=30)
    answer.raise_for_status()
    return int(answer.json()["id"])


def open_chat(browser: Any, sandbox: Sandbox, user_id: int, size: tuple[int, int]) -> Any:
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(REPLY)
    page.goto(f"{sandbox.page_url}?user={user_id}")
    page.locator("#who", has_text="chatting as").wait_for()
    return page


def send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def start_and_take_the_trial(page: Any) -> None:
    send(page, "/start")
    page.get_by_role("button", name="Try it free").click()
    page.locator(".msg.bot", has_text="free trial has started").wait_for()
    page.locator('.msg.bot img[alt="QR code"]').wait_for()


def buy_a_month(page: Any, method: str) -> Any:
    """From /start to the invoice of the month plan, paid with ``method``."""
    invoices = page.locator(".msg.invoice").count()
    send(page, "/start")
    page.locator(".msg.bot", has_text="What would you like").last.get_by_role(
        "button", name="Buy VPN"
    ).click()
    page.locator(".msg.bot", has_text="Choose a plan").last.get_by_role(
        "button", name="1 month"
    ).click()
    page.locator(".msg.bot", has_text="Choose how to pay").last.get_by_role(
        "button", name=method
    ).click()
    invoice = page.locator(".msg.invoice").nth(invoices)
    invoice.wait_for()
    return invoice


OVERFLOW_JS = """() => {
  const page = document.scrollingElement;
  const width = window.innerWidth;
  const found = [];
  if (page.scrollWidth !== page.clientWidth || page.clientWidth !== width)
    found.push(`page: ${page.scrollWidth} wide, client ${page.clientWidth}, viewport ${width}`);
  const boxes = document.querySelectorAll(
    ".msg, .service, .note, .kb button, #bar, #send, #side, #menu[open] .menu-body, #actors");
  for (const el of boxes) {
    const box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    const name = el.id ? "#" + el.id : el.className;
    if (box.right > width + 0.5 || box.left < -0.5)
      found.push(`${name} spans ${box.left}..${box.right} of ${width}`);
    if (el.scrollWidth > el.clientWidth + 1)
      found.push(`${name} content ${el.scrollWidth} wider than ${el.clientWidth}`);
  }
  return found;
}"""

AT_BOTTOM_JS = (
    "() => { const l = document.getElementById('log');"
    " return l.scrollHeight - l.scrollTop - l.clientHeight < 2; }"
)


def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", data[16:20])[0])


def check_fits(page: Any, where: str, shot: Path) -> None:
    assert page.evaluate(OVERFLOW_JS) == [], where
    page.screenshot(path=str(shot), full_page=True)
    # a full-page screenshot is as wide as the page: wider than the viewport if it overflows
    assert png_width(shot) == page.viewport_size["width"], where


@pytest.fixture(scope="module")
def conversation(browser: Any, sandbox: Sandbox) -> int:
    """A user who took the trial and bought a month by card during it: the README's
    screenshot."""
    user_id = new_user(sandbox, "Anna")
    page = open_chat(browser, sandbox, user_id, DESKTOP)
    try:
        start_and_take_the_trial(page)
        invoice = buy_a_month(page, "Bank card")
        invoice.locator(".pay").click()
        page.locator(".service", has_text="You paid").wait_for()
        # the purchase upgrades the trial: one account, its expiry extended
        page.locator(".msg.bot", has_text="extended until").wait_for()
    finally:
        page.close()
    return user_id


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = switch(SCREENSHOT_DIR)
    return Path(chosen) if chosen else tmp_path


@pytest.mark.parametrize("size", [*PHONES, DESKTOP], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_chat_fits_the_screen_with_long_links_and_the_side_panel(
    browser: Any, sandbox: Sandbox, conversation: int, size: tuple[int, int], tmp_path: Path
) -> None:
    page = open_chat(browser, sandbox, conversation, size)
    try:
        page.locator('.msg.bot img[alt="QR code"]').nth(1).wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.msg img')].every(i => i.complete)"
        )
        page.locator("#state", has_text="healthy").wait_for()
        name = f"{size[0]}x{size[1]}"
        check_fits(page, f"{name} chat", tmp_path / f"chat-{name}.png")
        # the subscription link is one long word: it wraps inside its bubble
        bubble = page.locator(".msg.bot", has=page.locator("a", has_text="/sub/")).last
        link = bubble.locator("a", has_text="/sub/")
        link_box, bubble_box = link.bounding_box(), bubble.bounding_box()
        assert link_box is not None and bubble_box is not None
        assert link_box["x"] + link_box["width"] <= bubble_box["x"] + bubble_box["width"] + 0.5
        if size == DESKTOP:
            assert page.locator("#actors td", has_text="notifier").is_visible()
            page.screenshot(path=str(screenshot_dir(tmp_path) / "sandbox-chat.png"))
        else:
            # the side panel is folded below the chat; opened, it still fits
            assert not page.locator("#actors").is_visible()
            page.locator("#side > summary").click()
            page.locator("#actors td", has_text="notifier").wait_for()
            check_fits(page, f"{name} side panel", tmp_path / f"side-{name}.png")
        page.locator("#menu > summary").click()
        page.locator("#menu .menu-body").wait_for()
        check_fits(page, f"{name} menu", tmp_path / f"menu-{name}.png")
    finally:
        page.close()


def test_amounts_read_as_telegram_clients_show_them(browser: Any, sandbox: Sandbox) -> None:
    page = open_chat(browser, sandbox, new_user(sandbox, "Amounts"), PHONES[0])
    try:
        cases = {
            "19900 RUB": "199.00 RUB",
            "150 XTR": "150 ⭐",
            "1500 JPY": "1,500 JPY",
            "5 KRW": "5 KRW",
            "100 USD": "1.00 USD",
            "5 EUR": "0.05 EUR",
            "123456789 EUR": "1,234,567.89 EUR",
            "-19900 RUB": "-199.00 RUB",
        }
        shown = page.evaluate(
            "(cases) => Object.fromEntries(cases.map(c => {"
            " const [amount, currency] = c.split(' ');"
            " return [c, formatAmount(Number(amount), currency)]; }))",
            list(cases),
        )
        assert shown == cases
        invoice = buy_a_month(page, "Bank card")
        assert "199.00 RUB" in invoice.inner_text()
        assert "19900" not in invoice.inner_text()
        stars = buy_a_month(page, "Telegram Stars")
        assert "150 ⭐" in stars.inner_text()
    finally:
        page.close()


def test_payments_and_refunds_are_service_lines(browser: Any, sandbox: Sandbox) -> None:
    page = open_chat(browser, sandbox, new_user(sandbox, "Stars"), PHONES[1])
    try:
        invoice = buy_a_month(page, "Telegram Stars")
        invoice.locator(".pay").click()
        paid = page.locator(".service", has_text="You paid 150 ⭐ to VPN Sandbox for “1 month”")
        paid.wait_for()
        invoice.locator(".chip", has_text="Paid").wait_for()
        paid.get_by_role("button", name="Refund").click()
        page.locator(".service", has_text="150 ⭐ refunded to you for “1 month”").wait_for()
        paid.get_by_role("button", name="Refund").wait_for(state="detached")
        for line in page.locator(".service").all():
            box = line.bounding_box()
            assert box is not None and box["height"] > 10 and line.inner_text().strip()
        # no service message is drawn as an (empty) bubble
        assert page.locator(".msg:not(:has(*)):empty").count() == 0
    finally:
        page.close()


def test_failed_actions_show_the_emulators_error_until_dismissed(
    browser: Any, sandbox: Sandbox
) -> None:
    page = open_chat(browser, sandbox, new_user(sandbox, "Errors"), DESKTOP)
    try:
        invoice = buy_a_month(page, "Bank card")
        invoice.get_by_role("button", name="Let it expire").click()
        invoice.locator(".chip", has_text="Expired").wait_for()
        invoice.locator(".pay").click()
        expired = page.locator(".note.error", has_text="INVOICE_EXPIRED")
        expired.wait_for()
        expired.get_by_role("button", name="Dismiss").click()
        expired.wait_for(state="detached")

        paid = buy_a_month(page, "Bank card")
        paid.locator(".pay").click()
        paid.locator(".chip", has_text="Paid").wait_for()
        paid.locator(".pay").click()
        page.locator(".note.error", has_text="paid already").wait_for()

        # a route the emulator lacks, and an emulator that does not answer at all
        page.route(
            "**/_control/reset",
            lambda route: route.fulfill(
                status=404,
                json={"error": "POST /_control/reset: Not Found"},
                headers={"Access-Control-Allow-Origin": "*"},
            ),
        )
        page.locator("#menu > summary").click()
        page.get_by_role("button", name="Reset sandbox").click()
        page.locator(
            ".note.error", has_text="Reset sandbox: POST /_control/reset: Not Found"
        ).wait_for()
        page.route("**/_control/users/*/presses", lambda route: route.abort())
        page.locator(".msg.bot", has_text="Choose how to pay").last.get_by_role(
            "button", name="Back"
        ).click()
        page.locator(".note.error", has_text="did not answer").wait_for()
    finally:
        page.close()


def test_blocking_and_chatting_as_another_user(browser: Any, sandbox: Sandbox) -> None:
    first = new_user(sandbox, "Vera")
    page = open_chat(browser, sandbox, first, PHONES[0])
    try:
        send(page, "/start")
        page.locator(".msg.bot", has_text="Hi, Vera").wait_for()
        page.locator("#menu > summary").click()
        page.get_by_role("button", name="Block the bot").click()
        page.locator("#blocked", has_text="You blocked the bot").wait_for()
        assert not page.locator("#send").is_visible()
        state = httpx.get(f"{sandbox.control}/state", timeout=30).json()
        assert first in state["bots"][0]["blocked"]
        greetings = page.locator(".msg.bot", has_text="Hi, Vera").count()
        page.get_by_role("button", name="Restart").click()
        page.locator(".msg.bot", has_text="Hi, Vera").nth(greetings).wait_for()
        page.locator("#send").wait_for()

        page.locator("#menu > summary").click()
        page.fill("#new-user-name", "Oleg")
        page.get_by_role("button", name="Add user").click()
        page.locator("#who", has_text="chatting as Oleg").wait_for()
        assert page.locator(".msg").count() == 0
        send(page, "/start")
        page.locator(".msg.bot", has_text="Hi, Oleg").wait_for()
        assert page.locator(".msg.bot", has_text="Vera").count() == 0
        assert "user=" in page.url and f"user={first}" not in page.url

        page.locator("#menu > summary").click()
        page.select_option("#users", str(first))
        page.locator("#who", has_text="chatting as Vera").wait_for()
        page.locator(".msg.bot", has_text="Hi, Vera").first.wait_for()
        assert page.locator(".msg.bot", has_text="Oleg").count() == 0
    finally:
        page.close()


def test_the_view_follows_the_bottom_only_when_the_reader_is_there(
    browser: Any, sandbox: Sandbox
) -> None:
    user_id = new_user(sandbox, "Scroll")
    page = open_chat(browser, sandbox, user_id, (412, 520))
    try:
        send(page, "/start")
        menu = page.locator(".msg.bot", has_text="What would you like").first
        menu.wait_for()
        for _ in range(3):
            count = page.locator(".msg.bot").count()
            send(page, "/help")
            page.locator(".msg.bot").nth(count).wait_for()
        page.wait_for_function(AT_BOTTOM_JS)
        assert page.evaluate("() => document.getElementById('log').scrollTop") > 0

        # the reader goes back to the first message and presses a button: the bot edits it
        page.evaluate("() => { document.getElementById('log').scrollTop = 0; }")
        menu.get_by_role("button", name="Settings").click()
        edited = page.locator(".msg.bot", has_text="edited").first
        edited.wait_for()
        assert page.evaluate("() => document.getElementById('log').scrollTop") == 0
        assert edited.is_visible()

        # something new arrives while they read: no jump, a way down
        count = page.locator(".msg.bot").count()
        httpx.post(
            f"{sandbox.control}/users/{user_id}/commands", json={"command": "help"}, timeout=30
        ).raise_for_status()
        page.locator(".msg.bot").nth(count).wait_for(state="attached")
        page.locator("#jump").wait_for()
        assert page.evaluate("() => document.getElementById('log').scrollTop") == 0
        page.locator("#jump").click()
        page.wait_for_function(AT_BOTTOM_JS)

        # at the bottom, the view follows what comes in
        count = page.locator(".msg.bot").count()
        httpx.post(
            f"{sandbox.control}/users/{user_id}/commands", json={"command": "help"}, timeout=30
        ).raise_for_status()
        page.locator(".msg.bot").nth(count).wait_for()
        page.wait_for_function(AT_BOTTOM_JS)
    finally:
        page.close()


def test_after_a_reload_the_bottom_stays_pinned_while_the_qr_code_loads(
    browser: Any, sandbox: Sandbox
) -> None:
    user_id = new_user(sandbox, "Reload")
    page = open_chat(browser, sandbox, user_id, (412, 560))
    try:
        start_and_take_the_trial(page)
        page.locator(".msg.bot", has_text="ready until").wait_for()
        held: list[Any] = []
        page.route("**/_control/files/**", lambda route: held.append(route))
        page.reload()
        page.locator(".msg.bot", has_text="ready until").wait_for()
        # evaluating lets Playwright hand over the intercepted request
        wait_for(lambda: page.evaluate("() => true") and held, timeout=60)
        page.wait_for_function(AT_BOTTOM_JS)
        for route in held:
            route.continue_()
        page.wait_for_function(
            "() => { const i = document.querySelector('.msg img');"
            " return i && i.complete && i.naturalHeight > 0; }"
        )
        page.wait_for_function(AT_BOTTOM_JS)
        assert page.evaluate("() => document.getElementById('log').scrollTop") > 0
    finally:
        page.close()


def test_the_sandbox_serves_an_icon(sandbox: Sandbox) -> None:
    icon = httpx.get(sandbox.page_url.replace("/sandbox", "/favicon.ico"), timeout=30)
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg") and len(icon.content) < 2048


FEATURE_SCREENS = "screens"
"""Under the screenshot folder: the main screens of the selling features, for the docs."""


def test_the_selling_features_main_screens(browser: Any, sandbox: Sandbox, tmp_path: Path) -> None:
    """A newcomer opens their referral screen and activates the sandbox's WELCOME code; the
    admin (the sandbox's first user) reads the report and the newcomer's card and history.
    With ``VPNBOT_TEST_SCREENSHOT_DIR=docs`` the screens are written to ``docs/screens``."""
    folder = screenshot_dir(tmp_path) / FEATURE_SCREENS
    folder.mkdir(parents=True, exist_ok=True)
    new_user(sandbox, "Admin")  # the first simulated user is the admin: made, if not yet
    newcomer = new_user(sandbox, "Boris")
    page = open_chat(browser, sandbox, newcomer, PHONES[1])
    try:
        send(page, "/start")
        page.locator(".msg.bot", has_text="What would you like").last.get_by_role(
            "button", name="Invite friends"
        ).click()
        page.locator(".msg.bot", has_text="Your link:").wait_for()
        assert "start=ref_" in page.locator(".msg.bot", has_text="Your link:").last.inner_text()
        page.screenshot(path=str(folder / "referrals.png"))
        send(page, "/promo welcome")
        page.locator(".msg.bot", has_text="Promo code WELCOME activated").wait_for()
        page.locator(".msg.bot", has_text="ready until").wait_for()  # the access arrives
        page.screenshot(path=str(folder / "promo-code.png"))
    finally:
        page.close()
    admin = open_chat(browser, sandbox, FIRST_USER_ID, DESKTOP)
    try:
        send(admin, "/report")
        report = admin.locator(".msg.bot", has_text="Report for the last 7 days").last
        report.wait_for()
        assert "Promo codes:" in report.inner_text()
        admin.screenshot(path=str(folder / "admin-report.png"))
        send(admin, f"/user {newcomer}")
        card = admin.locator(".msg.bot", has_text=f"User {newcomer}").last
        card.get_by_role("button", name="History").click()
        admin.locator(".msg.bot", has_text=f"History of {newcomer}").wait_for()
        assert "promo code: days" in admin.locator(".msg.bot").last.inner_text()
        admin.screenshot(path=str(folder / "admin-history.png"))
    finally:
        admin.close()
