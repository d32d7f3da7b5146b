"""Starting the sandbox (`vpnbot run` with no config) as a real process, and a headless
Chromium for the pages, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import forkserver
from tests.e2e.sandbox_env import sandbox_env
from tests.integration.test_process import ROOT, free_port, get_status, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port_and_two_beside() -> int:
    """A port free with the two after it (the fake peers'), below the range the system
    hands out to outgoing connections, so none takes it between two starts."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        if all(_free(port + offset) for offset in range(3)):
            return port
    raise AssertionError("no three free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SandboxProcess:
    """`vpnbot run` in ``directory`` (its state under ``directory/var``): started and
    stopped as often as a test likes, on a fresh operator port each time and the same
    emulator port (so the same ports for the fake peers beside it, as a person's sandbox
    has). Output goes to a file: a pipe nobody reads would stop the process once it
    filled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[str] | None = None
        self.http_port = 0
        self.telegram_port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def output(self) -> Path:
        return self.directory / f"sandbox-{self.starts}.log"

    def start(self, *extra: str, timeout: float = 90) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        self.http_port = free_port()
        self.telegram_port = self.telegram_port or free_port_and_two_beside()
        env = sandbox_env(self.http_port)
        command = [sys.executable, str(ROOT / "supervisor.py"), "run"]
        command += ["--telegram-port", str(self.telegram_port), *extra]
        with self.output.open("w") as out:
            self.process = forkserver.popen(
                command, cwd=self.directory, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the sandbox exited: {self.log()[-3000:]}")
            status = get_status(self.http_port)
            return status is not None and status["state"] == "healthy"

        wait_for(healthy, timeout=timeout)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, and the clean exit it must give."""
        process, self.process = self.process, None
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        assert code == 0, self.log()[-3000:]

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess(tmp_path)
    try:
        yield sandbox
    finally:
        sandbox.kill()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API), closed after the test."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (the distribution's package)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    # importing trio-asyncio (the test process has) replaces asyncio's loop policy;
    # Playwright's sync API needs a plain asyncio loop
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(policy)
