"""The sandbox across restarts and through CryptoBot and Heleket payments, as a person uses
it: a real `vpnbot run` process and its chat page in a headless Chromium."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SandboxProcess

GREETING = "What would you like"
WAIT = 90_000
"""Milliseconds a page may take to show what the bot says (the suite runs with CPUs busy)."""


def open_chat(browser: Any, sandbox: SandboxProcess) -> Any:
    """The chat page, once it knows who the user is (it writes as them)."""
    page = browser.new_page()
    page.goto(f"{sandbox.url}/sandbox")
    page.wait_for_function("() => typeof user !== 'undefined' && user !== null", timeout=WAIT)
    return page


def send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def greetings(page: Any) -> Any:
    return page.locator(".msg.bot", has_text=GREETING)


def wait_for_count(locator: Any, count: int, timeout: float = WAIT) -> None:
    locator.nth(count - 1).wait_for(timeout=timeout)


def subscription(link: str) -> str:
    """What a VPN app gets from an access link: its configurations, one a line."""
    answer = httpx.get(link, timeout=30)
    assert answer.status_code == 200, (link, answer.status_code, answer.text[:300])
    return base64.b64decode(answer.text).decode()


def take_the_trial(page: Any) -> str:
    """The trial's access link, as the chat shows it."""
    page.get_by_role("button", name="Try it free").last.click()
    page.locator(".msg.bot", has_text="free trial has started").wait_for(timeout=WAIT)
    link = page.locator(".msg.bot a", has_text="/sub/").last
    link.wait_for(timeout=WAIT)
    href = link.get_attribute("href")
    assert href is not None and "/sub/" in href
    return str(href)


def crypto_invoice(page: Any) -> str:
    """The pay link of a CryptoBot invoice for the month plan."""
    send(page, "/start")
    page.locator(".msg.bot", has_text=GREETING).last.get_by_role("button", name="Buy VPN").click()
    page.get_by_role("button", name="1 month").last.click()
    page.get_by_role("button", name="Crypto (CryptoBot)").last.click()
    link = page.locator(".msg.bot", has_text="Your invoice").get_by_role("link", name="Pay").last
    link.wait_for(timeout=WAIT)
    href = link.get_attribute("href")
    assert href is not None and "/pay/" in href
    return str(href)


def assert_pay_page_open(browser: Any, href: str) -> None:
    pay_page = browser.new_page()
    pay_page.goto(href)
    pay_page.locator("#status", has_text="active").wait_for(timeout=WAIT)
    assert "RUB" in pay_page.locator("#amount").inner_text()
    pay_page.close()


def test_after_a_restart_the_page_shows_the_chat_and_the_bot_still_answers(
    sandbox_process: SandboxProcess, chromium: Any
) -> None:
    sandbox_process.start()
    page = open_chat(chromium, sandbox_process)
    send(page, "/start")
    wait_for_count(greetings(page), 1)
    access = take_the_trial(page)
    configs = subscription(access)
    assert "vless://" in configs
    pay = crypto_invoice(page)
    assert_pay_page_open(chromium, pay)
    send(page, "remember this line")
    page.locator(".msg.me", has_text="remember this line").wait_for(timeout=WAIT)
    greeted = greetings(page).count()
    page.close()
    sandbox_process.stop()
    state = sandbox_process.directory / "var" / "sandbox-telegram.json"
    assert "remember this line" in state.read_text()

    sandbox_process.start()
    # the links already in the chat still open: the same panel, account and invoice
    assert subscription(access) == configs
    assert_pay_page_open(chromium, pay)
    page = open_chat(chromium, sandbox_process)
    # the conversation from before the restart
    page.locator(".msg.me", has_text="remember this line").wait_for(timeout=WAIT)
    assert greetings(page).count() == greeted
    # and the bot hears what comes after it: the update ids went on
    send(page, "/start")
    wait_for_count(greetings(page), greeted + 1)
    page.close()
    sandbox_process.stop()

    # the state file lost: ids go on after the inbox's, the bot still answers
    state.unlink()
    sandbox_process.start()
    page = open_chat(chromium, sandbox_process)
    send(page, "/start")
    wait_for_count(greetings(page), 1)
    page.close()
    sandbox_process.stop()


@pytest.mark.parametrize(
    ("button", "open_status"), [("Crypto (CryptoBot)", "active"), ("Crypto (Heleket)", "check")]
)
def test_a_crypto_invoice_is_paid_on_the_local_page_and_access_arrives(
    sandbox_process: SandboxProcess, chromium: Any, button: str, open_status: str
) -> None:
    sandbox_process.start()
    page = open_chat(chromium, sandbox_process)
    send(page, "/start")
    wait_for_count(greetings(page), 1)
    page.get_by_role("button", name="Buy VPN").click()
    page.get_by_role("button", name="1 month").click()
    page.get_by_role("button", name=button).click()
    link = page.locator(".msg.bot", has_text="Your invoice").get_by_role("link", name="Pay")
    link.wait_for(timeout=WAIT)
    href = link.get_attribute("href")
    assert href is not None and href.startswith("http://127.0.0.1:") and "/pay/" in href

    pay_page = chromium.new_page()
    pay_page.goto(href)
    assert open_status in pay_page.locator("#status").inner_text()
    assert "RUB" in pay_page.locator("#amount").inner_text()
    pay_page.get_by_role("button", name="Pay").click()
    pay_page.locator("#status", has_text="paid").wait_for(timeout=WAIT)
    pay_page.close()

    page.locator(".msg.bot", has_text="Payment received").wait_for(timeout=WAIT)
    page.locator(".msg.bot", has_text="access is ready until").wait_for(timeout=WAIT)
    page.close()
    sandbox_process.stop()
