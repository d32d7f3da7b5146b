"""`vpnbot run` with a config file and the test PostgreSQL, its HTTP doors tried from outside
as an attacker would: oversized bodies without end, forged and unauthenticated calls to
every route of both listeners, and routes asked of the wrong listener.

The process runs in webhook mode against the Telegram emulator, with the built-in payment
providers (Stars, card, CryptoBot against its fake). Its memory is read from /proc.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from runtime.storage import Connection, Database, payments
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.telegram import TelegramEmulator
from tests import forkserver
from tests.web.raw_client import chunked, head, until_hung_up

from .processes import Vpnbot
from .test_process import ROOT, Receiver, free_port

TOKEN = "123456789:AAHhttpDoorsBotToken0123456789abcde"
CRYPTO_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
SECRET = "doors-Webhook_secret"
HOOK = "/telegram/hook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MB = 1024 * 1024
TABLES = ("users", "subscriptions", "payments", "telegram_updates", "outbox", "broadcasts")
"""Everything a request could change."""


def write_config(
    path: Path,
    *,
    operator: int,
    public: int,
    dsn: str,
    telegram: str,
    crypto: str,
    alerts: str,
    extra: str = "",
) -> Path:
    path.write_text(
        f"""
[service]
log_format = "json"

[database]
dsn = "{dsn}"

[http]
port = {operator}

[http.public]
port = {public}

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"

[bot]
mode = "webhook"
webhook_url = "http://127.0.0.1:{public}{HOOK}"
webhook_secret = "{SECRET}"

[alerts]
throttle_seconds = 0.001

[alerts.webhook]
url = "{alerts}"

[plugins.settings.cryptobot]
token = "{CRYPTO_TOKEN}"
base_url = "{crypto}/api/"

[plugins.settings.telegram_payments]
card_provider_token = "381764678:TEST:card-provider"
{extra}"""
    )
    return path


@dataclass
class Service:
    process: Vpnbot
    operator: int
    public: int
    alerts: Receiver
    config: Path

    @property
    def pid(self) -> int:
        return self.process.process.pid

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak resident) of the process, in bytes."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
        return found


@pytest.fixture
def alerts() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@asynccontextmanager
async def running(
    database_dsn: str, tmp_path: Path, alerts: Receiver, extra: str = ""
) -> AsyncIterator[Service]:
    """`vpnbot run` with the config above (and ``extra``), ready; stopped cleanly after."""
    emulator = TelegramEmulator(TOKEN)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), crypto.running():
        operator, public = free_port(), free_port()
        config = write_config(
            tmp_path / "vpnbot.toml",
            operator=operator,
            public=public,
            dsn=database_dsn,
            telegram=emulator.url,
            crypto=crypto.url,
            alerts=alerts.url,
            extra=extra,
        )
        process = Vpnbot(config, tmp_path / "vpnbot.log", operator)
        try:
            await process.wait_ready()
            yield Service(process, operator, public, alerts, config)
        finally:
            code = await process.stop()
        assert code == 0, process.tail()


@pytest.fixture
async def service(database_dsn: str, tmp_path: Path, alerts: Receiver) -> AsyncIterator[Service]:
    async with running(database_dsn, tmp_path, alerts) as started:
        yield started


async def digest(db: Database) -> dict[str, str]:
    async def unit(conn: Connection) -> dict[str, str]:
        return {
            table: await conn.fetchval(
                f"select count(*) || ':' || md5(coalesce(string_agg(t::text, '|'"
                f" order by t::text), '')) from {table} t"
            )
            for table in TABLES
        }

    return await db.read(unit)


# -- size ------------------------------------------------------------------------------------


async def test_300_mb_chunked_bodies_are_cut_off_at_the_limit_with_bounded_memory(
    service: Service, db: Database
) -> None:
    before_state = await digest(db)
    before = service.memory()
    total = 300 * MB
    doors = {
        "payment webhook": (service.public, head("/webhooks/payments/cryptobot")),
        "telegram webhook": (service.public, head(HOOK, f"{SECRET_HEADER}: {SECRET}")),
        "operator status": (service.operator, head("/status")),
    }
    outcomes: dict[str, Any] = {}

    async def upload(name: str, port: int, request_head: bytes) -> None:
        request = request_head.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1)
        outcomes[name] = await until_hung_up(port, iter([request, *chunked(total)]))

    async with trio.open_nursery() as nursery:
        for name, (port, request_head) in doors.items():
            nursery.start_soon(upload, name, port, request_head)
    after = service.memory()

    statuses = {name: outcome.status for name, outcome in outcomes.items()}
    assert statuses == {"payment webhook": 413, "telegram webhook": 413, "operator status": 405}
    for name, outcome in outcomes.items():
        assert outcome.sent < 32 * MB, name  # what socket buffers hold, not 300 MB
    grew = after["VmHWM"] - before["VmHWM"]
    assert grew < 32 * MB, f"peak RSS grew by {grew / MB:.1f} MB: {before} -> {after}"
    assert await digest(db) == before_state
    assert await service.process.ready()


async def test_slow_heads_and_bodies_are_cut_off(
    database_dsn: str, tmp_path: Path, alerts: Receiver, db: Database
) -> None:
    hasty = "\n[http.limits]\nheader_timeout_seconds = 1\nbody_timeout_seconds = 1\n"
    async with running(database_dsn, tmp_path, alerts, hasty) as service:
        before = await digest(db)
        endless_head = head(HOOK, "X-Pad: " + "a" * 10_000)[:-4]
        trickled = await until_hung_up(
            service.public, (endless_head[i : i + 1] for i in range(len(endless_head))), pause=0.02
        )
        size = 10_000
        authenticated = head(HOOK, f"{SECRET_HEADER}: {SECRET}", f"Content-Length: {size}")
        stalled = await until_hung_up(
            service.public, iter([authenticated, *[b"{"] * size]), pause=0.02
        )
        idle = await until_hung_up(service.operator, iter([]))
        assert trickled.sent < len(endless_head) and trickled.response == b""
        assert stalled.status == 408
        assert idle.response == b""
        assert await digest(db) == before


# -- one listener per audience ---------------------------------------------------------------


async def test_each_listener_serves_only_its_own_routes(service: Service) -> None:
    operator = f"http://127.0.0.1:{service.operator}"
    public = f"http://127.0.0.1:{service.public}"
    async with httpx.AsyncClient(timeout=30) as client:
        status = await client.get(f"{operator}/status")
        assert status.status_code == 200
        names = {a["name"]: a["state"] for a in status.json()["actors"]}
        assert names["http"] == names["http_public"] == "running"
        assert (await client.get(f"{operator}/metrics")).status_code == 200
        for path in ("/status", "/metrics", "/sandbox"):
            assert (await client.get(f"{public}{path}")).status_code == 404, path
        for path in ("/webhooks/payments/cryptobot", HOOK):
            assert (await client.post(f"{operator}{path}", content=b"{}")).status_code == 404
        for base in (operator, public):
            assert (await client.get(f"{base}/healthz")).status_code == 200
            assert (await client.get(f"{base}/readyz")).status_code == 200
    found = await trio.to_thread.run_sync(
        lambda: forkserver.run(
            [
                sys.executable,
                str(ROOT / "supervisor.py"),
                "status",
                "--config",
                str(service.config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
    )
    assert found.returncode == 0, found.stderr
    assert "http_public" in found.stdout


# -- forged and unauthenticated requests -----------------------------------------------------


def successful_payment(intent: str, provider: str) -> dict[str, Any]:
    currency, amount = ("XTR", 150) if provider == "stars" else ("RUB", 19900)
    return {
        "currency": currency,
        "total_amount": amount,
        "invoice_payload": intent,
        "telegram_payment_charge_id": f"forged-{provider}-charge",
        "provider_payment_charge_id": f"forged-{provider}-provider-charge",
    }


def telegram_update(update_id: int, intent: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1700000000,
            "chat": {"id": 777, "type": "private"},
            "from": {"id": 777, "is_bot": False, "first_name": "Mallory"},
            "successful_payment": successful_payment(intent, "stars"),
        },
    }


def invoice_paid(intent: str) -> dict[str, Any]:
    return {
        "update_id": 1,
        "update_type": "invoice_paid",
        "request_date": "2026-01-01T00:00:00.000Z",
        "payload": {
            "invoice_id": 4242,
            "status": "paid",
            "hash": "IVforged",
            "asset": "USDT",
            "amount": "199",
            "paid_at": "2026-01-01T00:00:00.000Z",
            "payload": intent,
        },
    }


Call = tuple[str, str, str, dict[str, str], bytes, set[int]]
"""(listener, method, path, headers, body, acceptable statuses)"""


def forgeries(made: dict[str, str]) -> list[Call]:
    intent = made["cryptobot"]
    update = json.dumps(telegram_update(555, made["stars"])).encode()
    paid = json.dumps(invoice_paid(intent), separators=(",", ":")).encode()
    wrong_key, _ = FakeCryptoBot("99999:AAWrongCryptoPayAppToken000").update_delivery(
        invoice_paid(intent)
    )
    calls: list[Call] = [
        ("public", "POST", HOOK, {}, update, {401}),
        ("public", "POST", HOOK, {SECRET_HEADER: "guess"}, update, {401}),
        ("public", "POST", HOOK, {SECRET_HEADER: SECRET + "x"}, update, {401}),
        ("public", "POST", HOOK, {SECRET_HEADER: SECRET.upper()}, update, {401}),
        ("public", "GET", HOOK, {SECRET_HEADER: SECRET}, b"", {405}),
        ("public", "POST", "/webhooks/payments/cryptobot", {}, paid, {401}),
        (
            "public",
            "POST",
            "/webhooks/payments/cryptobot",
            {"crypto-pay-api-signature": "00" * 32},
            paid,
            {401},
        ),
        ("public", "POST", "/webhooks/payments/cryptobot", wrong_key, paid, {401}),
        ("public", "POST", "/webhooks/payments/nosuch", {}, paid, {404}),
        ("public", "GET", "/webhooks/payments/cryptobot", {}, b"", {405}),
        ("public", "POST", "/status", {}, b"{}", {404}),
        ("public", "DELETE", "/readyz", {}, b"", {405}),
    ]
    for provider in ("stars", "card"):  # Telegram's payments have no HTTP door
        forged = json.dumps(successful_payment(made[provider], provider)).encode()
        calls.append(("public", "POST", f"/webhooks/payments/{provider}", {}, forged, {404}))
    for path in ("/status", "/metrics", "/healthz", "/readyz"):
        for method in ("POST", "PUT", "DELETE"):
            calls.append(("operator", method, path, {}, update, {405}))
    calls.append(("operator", "POST", HOOK, {SECRET_HEADER: SECRET}, update, {404}))
    return calls


async def intents(db: Database) -> dict[str, str]:
    """Open payment intents of a real user, one per provider: what a forger would name."""
    made = {}
    for provider, currency, amount in (("stars", "XTR", 150), ("card", "RUB", 19900)):
        payment = await payments.create_intent(
            db,
            user_id=4242,
            provider=provider,
            amount_minor=amount,
            currency=currency,
            purpose="topup",
            plan_id=None,
            ttl_minutes=60,
        )
        made[provider] = payment.id
    payment = await payments.create_intent(
        db,
        user_id=4242,
        provider="cryptobot",
        amount_minor=19900,
        currency="RUB",
        purpose="topup",
        plan_id=None,
        ttl_minutes=60,
    )
    await payments.mark_invoiced(db, payment.id, external_id="4242", url=None)
    made["cryptobot"] = payment.id
    return made


async def send(service: Service, calls: list[Call]) -> list[tuple[Call, int]]:
    ports = {"operator": service.operator, "public": service.public}
    answers = []
    async with httpx.AsyncClient(timeout=30) as client:
        for call in calls:
            listener, method, path, headers, body, _ = call
            response = await client.request(
                method, f"http://127.0.0.1:{ports[listener]}{path}", headers=headers, content=body
            )
            answers.append((call, response.status_code))
    return answers


def critical_alerts_since(receiver: Receiver, since: float) -> list[str]:
    return [
        body["key"]
        for body in receiver.bodies
        if body["severity"] == "critical"
        and datetime.fromisoformat(body["time"]).timestamp() >= since
    ]


async def test_forged_and_unauthenticated_requests_to_every_route_change_nothing(
    service: Service, db: Database
) -> None:
    made = await intents(db)
    before = await digest(db)
    started = time.time()
    answers = await send(service, forgeries(made))
    wrong = [(c[0], c[1], c[2], status) for c, status in answers if status not in c[5]]
    assert wrong == []
    assert await digest(db) == before
    assert await service.process.stop() == 0  # the alert queue is drained on the way out
    assert critical_alerts_since(service.alerts, started) == []
