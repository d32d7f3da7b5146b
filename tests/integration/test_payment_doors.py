"""Every payment route of a running `vpnbot run`, tried as an attacker would: a real process
(the sandbox peers, a real PostgreSQL), observed from outside over HTTP and the database.

Forged and unauthenticated requests change nothing and raise no alert at all; Telegram
payments have no HTTP door; an authentic Crypto Pay delivery whose amount we cannot read is
a 400 that changes nothing either, and the process goes on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import trio

from runtime.bridge import asyncio_loop
from runtime.sandbox._sandbox import CRYPTOBOT_TOKEN
from runtime.storage import Database
from runtime.storage import payments as store
from runtime.testing.fakes.cryptobot import SIGNATURE_HEADER, sign
from runtime.testing.payment_contract import money_state
from tests import forkserver

from .test_process import ROOT, free_port, log_lines, wait_for

T = TypeVar("T")
OWNER = 100000001


def with_database(dsn: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with asyncio_loop():
            db = await Database.connect(dsn, min_size=0, max_size=2)
            try:
                return await work(db)
            finally:
                await db.close()

    return trio.run(main)


async def intents(db: Database) -> dict[str, str]:
    """One open intent per provider, as a checkout leaves it (the cryptobot one invoiced)."""
    made = {}
    for provider, amount, currency in (
        ("stars", 150, "XTR"),
        ("card", 19900, "RUB"),
        ("cryptobot", 19900, "RUB"),
    ):
        payment = await store.create_intent(
            db,
            user_id=OWNER,
            provider=provider,
            amount_minor=amount,
            currency=currency,
            purpose="subscription",
            plan_id="month",
            ttl_minutes=60,
        )
        external_id = "990001" if provider == "cryptobot" else None
        await store.mark_invoiced(db, payment.id, external_id=external_id, url=None)
        made[provider] = payment.id
    return made


def alerts_submitted(port: int) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vpnbot_alerts_submitted_total")
    )


@pytest.fixture
def running(
    tmp_path: Path, database_dsn: str
) -> Iterator[tuple[int, int, subprocess.Popen[str], Path]]:
    """`vpnbot run --sandbox` with a config naming the test database: the real runtime with
    the Stars, card and CryptoBot providers against the sandbox's local peers. Yields the
    operator and the public listener's ports."""
    port, public = free_port(), free_port()
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f'[service]\nlog_format = "json"\n\n[database]\ndsn = "{database_dsn}"\n\n'
        f"[http]\nport = {port}\n\n[http.public]\nport = {public}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = str(ROOT)
    # Its output goes to a file: a pipe nobody reads while the test runs would fill up and
    # stop the process at its next log line.
    output = tmp_path / "stdout.log"
    process = forkserver.popen(
        [
            sys.executable,
            str(ROOT / "supervisor.py"),
            "run",
            "--sandbox",
            "--config",
            str(config),
            "--telegram-port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def ready() -> bool:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
            except (httpx.HTTPError, ValueError):
                return False
            return bool(status.get("ready"))

        wait_for(ready, timeout=90)
        yield port, public, process, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_forged_and_unauthenticated_payment_requests_change_nothing_and_alert_nobody(
    running: tuple[int, int, subprocess.Popen[str], Path], database_dsn: str
) -> None:
    port, public, process, output = running
    made = with_database(database_dsn, intents)
    before = with_database(database_dsn, money_state)
    alerts_before = alerts_submitted(port)
    base = f"http://127.0.0.1:{public}/webhooks/payments"

    invoice = {"invoice_id": 990001, "status": "paid", "payload": made["cryptobot"]}
    crypto_body = json.dumps(
        {"update_id": 1, "update_type": "invoice_paid", "payload": {**invoice, "amount": "199"}}
    ).encode()
    answers: dict[str, set[int]] = {}
    with httpx.Client(timeout=10) as http:
        for provider in ("stars", "card"):  # the 300 forged card requests, and Stars
            currency, amount = ("XTR", 150) if provider == "stars" else ("RUB", 19900)
            for n in range(300):
                response = http.post(
                    f"{base}/{provider}",
                    json={
                        "currency": currency,
                        "total_amount": amount,
                        "invoice_payload": made[provider],
                        "telegram_payment_charge_id": f"forged-{n}",
                    },
                )
                answers.setdefault(provider, set()).add(response.status_code)
        forged_crypto = [
            {},
            {SIGNATURE_HEADER: sign("1:someone-elses-token", crypto_body)},
            {SIGNATURE_HEADER: "0" * 64},
            {SIGNATURE_HEADER: sign(CRYPTOBOT_TOKEN, crypto_body + b" ")},
        ]
        for headers in forged_crypto * 25:
            response = http.post(f"{base}/cryptobot", headers=headers, content=crypto_body)
            answers.setdefault("cryptobot", set()).add(response.status_code)
        for name in ("paypal", "STARS", "cryptobot2"):
            answers.setdefault("unknown", set()).add(http.post(f"{base}/{name}").status_code)

        # authentic (signed with the app's token), but an amount we cannot read
        unreadable = json.dumps(
            {
                "update_type": "invoice_paid",
                "payload": {**invoice, "fiat": "RUB", "amount": "1e400"},
            }
        ).encode()
        signed = {SIGNATURE_HEADER: sign(CRYPTOBOT_TOKEN, unreadable)}
        answers["unreadable"] = {
            http.post(f"{base}/cryptobot", headers=signed, content=unreadable).status_code
        }
        status = http.get(f"http://127.0.0.1:{port}/status").json()

    assert answers == {
        "stars": {404},
        "card": {404},
        "cryptobot": {401},
        "unknown": {404},
        "unreadable": {400},
    }
    assert with_database(database_dsn, money_state) == before
    time.sleep(0.5)  # an alert raised by a request would be counted by now
    assert alerts_submitted(port) == alerts_before
    assert not any(a["severity"] == "critical" for a in status["recent_alerts"])
    assert status["ready"] is True

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert process.returncode == 0, output.read_text()[-2000:]
    lines = log_lines(output.read_text())
    door = [line for line in lines if line.get("component") == "webhooks"]
    assert door and all(line["level"] in ("info", "warning") for line in door)
    refused = [line for line in door if line.get("event") == "webhook not authenticated"]
    assert len(refused) == 100
    for line in lines:  # no log key of a sender's choosing
        assert not any(re.search(r"forged|someone-elses", key) for key in line)
