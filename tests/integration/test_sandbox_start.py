"""The sandbox's start as a person at a terminal sees it: `vpnbot run` in a real process.

- A port it cannot bind ends the start at once (before the embedded PostgreSQL starts),
  with its own exit code and a message naming the port and what changes it.
- The banner comes only once the chat page answers; before it, short lines say what the
  start is doing.

Each wait is on an observable state (a line in the output, an exit) with a generous
deadline: the suite runs with every CPU busy.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runtime.app.exit_codes import EX_OSERR
from tests import forkserver
from tests.integration.test_process import ROOT

DEADLINE = 180.0
BANNER = "chat with the bot:"


@dataclass
class Sandbox:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    data_dir: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"exited {self.process.returncode} before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"not within {DEADLINE}s: {what}:\n{self.tail()}")
            time.sleep(0.01)

    def tail(self) -> str:
        return f"{self.output()[-3000:]}\n--- stderr ---\n{self.errors()[-3000:]}"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def start(*, http_port: int, public_port: int, telegram_port: int) -> Sandbox:
        data_dir = tmp_path / f"pgdata-{len(started)}"
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "VPNBOT_CONFIG")},
            "PYTHONPATH": str(ROOT),
            "VPNBOT_HTTP__PORT": str(http_port),
            "VPNBOT_HTTP__PUBLIC__PORT": str(public_port),
            "VPNBOT_SERVICE__LOG_FORMAT": "json",
            "VPNBOT_DATABASE__DATA_DIR": str(data_dir),
        }
        stdout, stderr = tmp_path / f"out-{len(started)}", tmp_path / f"err-{len(started)}"
        command = [sys.executable, str(ROOT / "supervisor.py"), "run"]
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = forkserver.popen(
                [*command, "--telegram-port", str(telegram_port)],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=err,
            )
        started.append(Sandbox(process, stdout, stderr, data_dir))
        return started[-1]

    yield start
    for each in started:
        if each.process.poll() is None:
            each.process.terminate()
            try:
                each.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                each.process.kill()
                each.process.wait()


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.mark.parametrize(
    ("which", "setting"),
    [
        ("http_port", "VPNBOT_HTTP__PORT"),
        ("public_port", "VPNBOT_HTTP__PUBLIC__PORT"),
        ("telegram_port", "--telegram-port"),
    ],
)
def test_a_port_in_use_ends_the_start_at_once_naming_the_port_and_its_setting(
    sandbox: Callable[..., Sandbox], taken: socket.socket, which: str, setting: str
) -> None:
    port = int(taken.getsockname()[1])
    ports = {"http_port": 0, "public_port": 0, "telegram_port": 0, which: port}
    run = sandbox(**ports)
    try:
        code = run.process.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running with port {port} taken:\n{run.tail()}")
    assert code == EX_OSERR, run.tail()
    message = run.errors()
    assert f"127.0.0.1:{port}" in message, message
    assert "in use" in message, message
    assert setting in message, message
    # Refused before anything slow: the embedded PostgreSQL never started.
    assert not run.data_dir.exists(), run.tail()
    assert BANNER not in run.output(), run.tail()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_banner_comes_after_the_page_answers_and_progress_lines_before_it(
    sandbox: Callable[..., Sandbox],
) -> None:
    http_port = _free_port()
    run = sandbox(http_port=http_port, public_port=0, telegram_port=0)
    run.wait_for(lambda: BANNER in run.output(), "the banner")
    page = httpx.get(f"http://127.0.0.1:{http_port}/sandbox", timeout=30)
    assert page.status_code == 200, run.tail()
    assert "<html" in page.text.lower()

    lines = [line for line in run.output().splitlines() if line.startswith("vpnbot: ")]
    steps = [
        "vpnbot: starting PostgreSQL (first start: initdb)…",
        "vpnbot: migrating (",
        "vpnbot: starting the workers and the bot…",
    ]
    found = [next((i for i, line in enumerate(lines) if line.startswith(s)), -1) for s in steps]
    assert -1 not in found and found == sorted(found), lines
    banner_at = run.output().index(BANNER)
    assert all(run.output().index(line) < banner_at for line in lines[: len(steps)])

    run.wait_for(lambda: "vpnbot: the bot is ready" in run.output(), "the bot ready")
    ready = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=30)
    assert ready.status_code == 200, run.tail()


def test_a_fake_peers_port_in_use_is_a_warning_not_the_end_of_the_start(
    sandbox: Callable[..., Sandbox],
) -> None:
    """The fake panel's port (the emulator's + 1) taken: it listens elsewhere, said once."""
    with socket.socket() as panel_port:
        for _ in range(200):
            telegram_port = random.randrange(20_000, 32_000)
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", telegram_port))
                panel_port.bind(("127.0.0.1", telegram_port + 1))
            except OSError:
                continue
            break
        else:
            pytest.fail("no free port with a free one beside it")
        panel_port.listen()
        http_port = _free_port()
        run = sandbox(http_port=http_port, public_port=0, telegram_port=telegram_port)
        run.wait_for(lambda: "vpnbot: the bot is ready" in run.output(), "the bot ready")
    warnings = [
        line
        for line in (run.output() + run.errors()).splitlines()
        if "port is in use" in line and "start_fake" in line
    ]
    assert len(warnings) == 1, run.tail()
    assert str(telegram_port + 1) in warnings[0]
    assert httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=30).status_code == 200
