"""The sandbox as a person uses it: a real headless Chromium on the chat page."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import forkserver
from tests.e2e.sandbox_env import sandbox_env
from tests.integration.test_process import ROOT, free_port, get_status, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (the distribution's package)"
)
REPLY = 90_000
"""Milliseconds to wait for the bot's answer: a deadline for a starved machine, never a
pause (each wait ends when the answer shows)."""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[int]:
    http_port, telegram_port = free_port(), free_port()
    env = sandbox_env(http_port)
    process = forkserver.popen(
        [sys.executable, str(ROOT / "supervisor.py"), "run", "--telegram-port", str(telegram_port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                (d := get_status(http_port)) is not None
                and d["state"] == "healthy"
                and bool(d["ready"])
            ),
            timeout=180,
        )
        yield http_port
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_new_user_gets_a_trial_and_the_qr_code_in_the_browser(
    sandbox: int, tmp_path: Path
) -> None:
    # importing trio-asyncio (the test process has) replaces asyncio's loop policy;
    # Playwright's sync API needs a plain asyncio loop
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        _journey(sandbox, tmp_path)
    finally:
        asyncio.set_event_loop_policy(policy)


def _journey(sandbox: int, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
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
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{sandbox}/sandbox")
            # the page writes as a user it learns first: typing before that is lost
            page.wait_for_function(
                "() => typeof user !== 'undefined' && user !== null", timeout=REPLY
            )
            page.fill("#text", "/start")
            page.press("#text", "Enter")
            page.locator(".msg.bot", has_text="What would you like").wait_for(timeout=REPLY)
            page.get_by_role("button", name="Try it free").click()
            page.locator(".msg.bot", has_text="free trial has started").wait_for(timeout=REPLY)
            page.locator('.msg.bot img[alt="QR code"]').wait_for(timeout=REPLY)
            assert "ready until" in page.locator(".msg.bot").last.inner_text()
            page.locator("#actors td", has_text="notifier").wait_for(timeout=REPLY)
            assert page.locator("#state").inner_text() in ("healthy", "degraded")
            page.screenshot(path=str(tmp_path / "sandbox.png"), full_page=True)
        finally:
            browser.close()
