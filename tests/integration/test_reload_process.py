"""``systemctl reload`` of a real ``vpnbot run`` under a load of Stars payments: nothing is
lost or done twice, a valid change applies, an invalid one changes nothing.

Users buy the month plan through the bot (``/buy``, the plan, Telegram Stars, the invoice
paid in the emulator) in waves. Each wave starts, and once its first invoice is out (its
users are paying or about to) the process gets a SIGHUP with the configuration file
rewritten: the quarter plan's price, then a file that fails its checks (a month title
beside an impossible duration; then restored), then the quarter's title. Every reload
restarts the bot and the workers while payments are in flight.

Afterwards: each payment credited once (one finalized row, one 30-day subscription), one
"Payment received" per user, every update handled once (one attempt, no lost claim),
the process still the same one (it never exited, no actor failed), the new price and
title in a new invoice, the refused file's month title nowhere, and the refusal logged
with its ``config_reload_refused`` alert.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from runtime.storage import Database
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Message, SimUser, TelegramEmulator

from .payment_crash import is_payment_received
from .processes import (
    CRYPTO_TOKEN,
    PANEL_PASSWORD,
    PANEL_USER,
    PATIENCE,
    TOKEN,
    Vpnbot,
    log_records,
    rows,
    until,
    value,
    write_config,
)
from .test_process import free_port

WAVE = 6
FIRST_USER = 5_300_001
CHECKER = 5_399_999
QUARTER = """
[plans.quarter]
title = { en = "3 months" }
duration_days = 90
backend = "marzban"
prices = { stars = { XTR = 300 } }
"""
REFUSED = "new configuration refused; the running one stays"
APPLIED = "configuration reloaded"
UNCHANGED = "configuration reloaded: nothing to apply"


def has_button(message: Message, label: str) -> bool:
    return any(label in button.text for row in message.buttons() for button in row)


class ConfigFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def rewrite(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text, old
        self.path.write_text(text.replace(old, new))


class Reloads:
    """SIGHUPs to the process, each waited for until its outcome is in the log."""

    def __init__(self, process: Vpnbot) -> None:
        self.process = process
        self.outcomes: list[str] = []

    def finished(self) -> list[str]:
        ends = (APPLIED, REFUSED, UNCHANGED)
        return [r["event"] for r in log_records(self.process.tail(10**9)) if r.get("event") in ends]

    async def reload(self) -> str:
        assert self.process.process.poll() is None, self.process.tail()
        seen = len(self.finished())
        self.process.process.send_signal(1)  # SIGHUP

        async def done() -> bool:
            return len(self.finished()) > seen

        await until(done, seconds=PATIENCE, what="the reload's outcome logged")
        outcome = self.finished()[seen]
        self.outcomes.append(outcome)
        return outcome


async def buy_a_month(emulator: TelegramEmulator, user: SimUser, invoice_out: trio.Event) -> None:
    """The user's whole purchase through the bot, until "Payment received"."""
    hello = user.send_command("buy")
    plans = await user.wait_for_message(
        lambda m: has_button(m, "1 month"), after=hello, timeout=PATIENCE
    )
    await emulator.wait_for_answer(user.press(plans, text="1 month"), timeout=PATIENCE)
    plan = await user.wait_for_message(
        lambda m: "Choose how to pay" in (m.content or ""), after=hello, timeout=PATIENCE
    )
    user.press(plan, text="Telegram Stars")
    invoice = await user.wait_for_message(
        lambda m: m.invoice is not None, after=hello, timeout=PATIENCE
    )
    invoice_out.set()
    paid = await user.pay(invoice)
    assert paid.ok, paid
    await user.wait_for_message(is_payment_received, after=hello, timeout=PATIENCE)


async def quarter_invoice(emulator: TelegramEmulator, user: SimUser, title: str) -> Any:
    """A new invoice for the quarter plan, found by its button's ``title``."""
    hello = user.send_command("buy")
    plans = await user.wait_for_message(
        lambda m: has_button(m, title), after=hello, timeout=PATIENCE
    )
    await emulator.wait_for_answer(user.press(plans, text=title), timeout=PATIENCE)
    plan = await user.wait_for_message(
        lambda m: "Choose how to pay" in (m.content or ""), after=hello, timeout=PATIENCE
    )
    user.press(plan, text="Telegram Stars")
    found = await user.wait_for_message(
        lambda m: m.invoice is not None, after=hello, timeout=PATIENCE
    )
    return found.invoice


async def status(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/status", timeout=PATIENCE)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


async def test_reloads_during_a_payment_load_lose_and_double_nothing(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    # the pre-checkout answer waits for a bot restarting on a busy machine: no payment
    # may fail for the machine's speed
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=PATIENCE)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        port = free_port()
        config = ConfigFile(
            write_config(
                tmp_path / "vpnbot.toml",
                port=port,
                dsn=database_dsn,
                telegram=emulator.url,
                panel=panel.url,
                crypto=crypto.url,
                instance="reloading",
                extra=QUARTER,
            )
        )
        valid = {
            "price": lambda: config.rewrite("XTR = 300", "XTR = 350"),
            "title": lambda: config.rewrite('"3 months"', '"Three months"'),
        }
        vpnbot = Vpnbot(config.path, tmp_path / "vpnbot.log", port)
        pid = vpnbot.process.pid
        reloads = Reloads(vpnbot)
        buyers: list[SimUser] = []
        try:
            await vpnbot.wait_ready()

            in_flight: list[int] = []

            async def wave(nursery: trio.Nursery) -> None:
                """Start a wave of buyers; return once its first invoice is out, noting
                how many of its payments are not credited yet."""
                first_invoice = trio.Event()
                start = len(buyers)
                for _ in range(WAVE):
                    user = emulator.create_user(FIRST_USER + len(buyers), first_name="Buyer")
                    buyers.append(user)
                    nursery.start_soon(buy_a_month, emulator, user, first_invoice)
                with trio.fail_after(PATIENCE):
                    await first_invoice.wait()
                credited = await value(
                    db,
                    "select count(*) from payments where status = 'finalized'"
                    " and user_id = any($1::bigint[])",
                    [u.id for u in buyers[start:]],
                )
                in_flight.append(WAVE - int(credited))

            async with trio.open_nursery() as nursery:
                await wave(nursery)
                valid["price"]()
                assert await reloads.reload() == APPLIED

                await wave(nursery)
                good = config.path.read_text()
                config.rewrite('"1 month"', '"Broken month"')
                config.rewrite("duration_days = 90", "duration_days = 0")
                assert await reloads.reload() == REFUSED
                config.path.write_text(good)
                assert await reloads.reload() == UNCHANGED

                await wave(nursery)
                valid["title"]()
                assert await reloads.reload() == APPLIED

                await wave(nursery)  # buyers after the last reload too

            # the new price and title in a new invoice, the month untouched
            checker = emulator.create_user(CHECKER, first_name="Checker")
            invoice = await quarter_invoice(emulator, checker, "Three months")
            assert (invoice.total_amount, invoice.currency) == (350, "XTR")
            assert invoice.title.startswith("Three months"), invoice.title
            shown = [m for u in [*buyers, checker] for m in u.messages(from_bot=True)]
            assert not any("Broken month" in (m.content or "") for m in shown)

            async def inbox_empty() -> bool:
                left = await value(
                    db, "select count(*) from telegram_updates where processed_at is null"
                )
                return bool(left == 0)

            await until(inbox_empty, seconds=PATIENCE, what="every update handled")
            await emulator.wait_drained(timeout=PATIENCE)
            await trio.sleep(2)  # time for a second copy of anything to show up
            state = await status(port)
            assert vpnbot.process.poll() is None and vpnbot.process.pid == pid
        finally:
            code = await vpnbot.stop()
        log = vpnbot.log.read_text()
        assert code == 0, log[-6000:]

    assert reloads.outcomes == [APPLIED, REFUSED, UNCHANGED, APPLIED]
    # each reload came while its wave's payments were still to be credited
    assert all(n > 0 for n in in_flight[:3]), in_flight
    records = log_records(log)
    (refusal,) = [r for r in records if r.get("event") == REFUSED]
    assert any("plans.quarter.duration_days" in p for p in refusal["problems"]), refusal
    alerts = [r for r in records if r.get("alert_key") == "config_reload_refused"]
    assert [a["severity"] for a in alerts] == ["warning"], alerts
    assert state["reload"]["outcome"] == "applied", state["reload"]

    # every payment credited once
    ids = [u.id for u in buyers]
    payments = await rows(
        db,
        "select user_id, status, amount_minor, currency from payments"
        " where user_id = any($1::bigint[])",
        ids,
    )
    assert sorted(p["user_id"] for p in payments) == sorted(ids)
    assert {(p["status"], p["amount_minor"], p["currency"]) for p in payments} == {
        ("finalized", 150, "XTR")
    }
    subscriptions = await rows(
        db,
        "select user_id, plan_id, (expires_at - starts_at) as length from subscriptions"
        " where user_id = any($1::bigint[])",
        ids,
    )
    assert sorted(s["user_id"] for s in subscriptions) == sorted(ids)
    assert {(s["plan_id"], s["length"].days) for s in subscriptions} == {("month", 30)}
    # one "Payment received" each; Telegram took each payment once
    received = Counter(
        u.id for u in buyers for m in u.messages(from_bot=True) if is_payment_received(m)
    )
    assert received == dict.fromkeys(ids, 1), received
    assert len(emulator.payments()) == len(ids)
    # every update handled once: one attempt, no claim lost to a restart
    updates = await rows(db, "select attempts, lost_claims, processed_at from telegram_updates")
    assert updates and all(u["processed_at"] is not None for u in updates)
    assert Counter((u["attempts"], u["lost_claims"]) for u in updates) == {(1, 0): len(updates)}
    # the reloads were planned restarts: no actor failed or was restarted for a failure
    for actor in state["actors"]:
        assert (actor["failures"], actor["restarts"]) == (0, 0), actor
