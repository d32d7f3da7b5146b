"""Payment -> access latency: from a Stars payment's update to the user's access link.

    .venv/bin/python bench/access_latency_bench.py [--payments N] [--rounds N]
                                                   [--concurrency N] [--quick]

Starts its own embedded PostgreSQL in a temporary directory, a migrated database, the
Telegram emulator, a fake Marzban and a fake Crypto Pay (what `vpnbot sandbox` brings),
then `vpnbot run --config` as a process of its own in polling mode. Each payment is made
by a new simulated user: the bench opens the intent (`Billing.buy`, as the bot's "Stars"
button does) and sends its invoice into the user's chat, the user pays it in the emulator
(the service answers the pre-checkout query, then gets the `successful_payment` update),
and the bench waits for the service's two messages. Per payment it reads, on the
emulator's clock:

- *delivered*: the first `getUpdates` answer after the payment (the service's long poll
  is waiting, so that answer carries the update);
- *Payment received*: when the confirmation message reached the emulator;
- *access ready*: when the message with the access link (and its QR code) reached it.

Two configurations run in interleaved rounds, a fresh service process each time: wake-ups
on (the default) and `[wakeups] enabled = false`, where the activation worker and the
notifier poll every second, one after the other: the behaviour before wake-ups existed.
p50 and p99 are over every payment of a configuration; the per-round medians show the
spread. Each payer waits a random 0-1 s before each payment (not counted), so payments do
not fall in step with a polling worker's one-second ticks; `--concurrency` payers (1) run
at once.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import trio
from _databases import bench_databases
from _service import TOKEN, Peers, Service, peers

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.billing import Billing
from runtime.bridge import asyncio_loop
from runtime.catalog import Catalog
from runtime.config import load_settings
from runtime.logs import configure_logging
from runtime.storage import Database
from runtime.testing.telegram import Kind, SimUser, TelegramEmulator

SETTLE_SECONDS = 5.0
RECEIVED = "Payment received"
READY = "Your VPN access is ready"


class _Alerts:
    def submit(self, alert: Any) -> None:
        print(f"  alert: {alert.key}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def delivered_at(emulator: TelegramEmulator, paid_at: float) -> float:
    answers = [c.at for c in emulator.calls if c.method == "getUpdates" and c.at >= paid_at]
    return min(answers) if answers else paid_at


async def one_payment(
    emulator: TelegramEmulator, billing: Billing, client: httpx.AsyncClient, user: SimUser
) -> dict[str, float]:
    checkout = await billing.buy(user.id, "month", "stars")
    assert checkout.invoice.send_in_chat is not None
    sent = await client.post(
        f"{emulator.url}/bot{TOKEN}/sendInvoice",
        json={"chat_id": user.id, **checkout.invoice.send_in_chat},
    )
    assert sent.status_code == 200, sent.text
    invoice = await user.wait_for_message(lambda m: m.invoice is not None, timeout=120)
    result = await user.pay(invoice)
    assert result.status == "paid", result
    await user.wait_for_message(lambda m: (m.content or "").startswith(READY), timeout=300)
    await user.wait_for_message(lambda m: (m.content or "").startswith(RECEIVED), timeout=300)
    entries = user.transcript()
    paid = next(e.at for e in entries if e.kind is Kind.PAYMENT)
    said = {e.text or "": e.at for e in entries if e.actor == "bot" and e.at >= paid}
    received = min(at for text, at in said.items() if text.startswith(RECEIVED))
    ready = min(at for text, at in said.items() if text.startswith(READY))
    delivered = delivered_at(emulator, paid)
    return {"received": received - delivered, "ready": ready - delivered}


async def payments_run(
    dsn: str, found: Peers, workdir: Path, *, wakeups: bool, count: int, concurrency: int
) -> list[dict[str, float]]:
    service = Service(workdir, dsn, found, wakeups=wakeups)
    results: list[dict[str, float]] = []
    try:
        await service.wait_ready()
        await trio.sleep(SETTLE_SECONDS)
        settings = load_settings(workdir / f"vpnbot-{'wakeups' if wakeups else 'polling'}.toml")
        db = await Database.connect(dsn, min_size=1, max_size=concurrency + 1)
        stars = StarsProvider(BotApiPaymentsClient(TOKEN, api_base=found.emulator.url))
        billing = Billing(
            db, Catalog.from_settings(settings), {"stars": stars}, _Alerts(), balance_currency="RUB"
        )
        users = iter(range(count))
        jitter = random.Random(count)
        try:
            async with httpx.AsyncClient(timeout=60) as client:

                async def payer() -> None:
                    for _ in users:
                        # at a random moment: not in step with a polling worker's ticks
                        await trio.sleep(jitter.uniform(0.0, 1.0))
                        user = found.emulator.create_user(first_name="Payer")
                        results.append(await one_payment(found.emulator, billing, client, user))

                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(payer)
        finally:
            await db.close()
    finally:
        await service.stop()
    return results


async def measure(
    dsn: str, rounds: int, per_round: int, concurrency: int
) -> dict[bool, list[list[dict[str, float]]]]:
    found_rounds: dict[bool, list[list[dict[str, float]]]] = {True: [], False: []}
    async with asyncio_loop(), peers() as found:
        with tempfile.TemporaryDirectory(prefix="vpnbot-latency-") as tmp:
            for number in range(rounds):
                order = (True, False) if number % 2 == 0 else (False, True)
                for wakeups in order:
                    results = await payments_run(
                        dsn,
                        found,
                        Path(tmp),
                        wakeups=wakeups,
                        count=per_round,
                        concurrency=concurrency,
                    )
                    found_rounds[wakeups].append(results)
                    ready = statistics.median(r["ready"] for r in results) * 1000
                    label = "wake-ups" if wakeups else "polling"
                    print(
                        f"  round {number + 1} {label:8}  {len(results)} payments,"
                        f" access ready median {ready:6.0f} ms, load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    return found_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=210, help="per configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="payments in flight")
    parser.add_argument("--quick", action="store_true", help="1 round of 20 payments each")
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning", stream=sys.stderr)
    rounds, payments = (1, 20) if args.quick else (args.rounds, args.payments)
    per_round = max(1, payments // rounds)
    before = os.getloadavg()
    print(
        f"vpnbot run, polling mode: {per_round * rounds} Stars payments per configuration,"
        f" {args.concurrency} at a time, {rounds} interleaved round(s)"
    )
    with bench_databases({"main": ("bench_latency", True)}) as dsns:
        found = trio.run(measure, dsns["main"], rounds, per_round, args.concurrency)
    print("\n  from the successful_payment update delivered, ms:")
    print("  configuration                   message            p50     p99   round medians")
    figures: dict[tuple[bool, str], tuple[float, float]] = {}
    for wakeups, label in ((True, "wake-ups (default)"), (False, "polling only (before)")):
        for key, name in (("received", "Payment received"), ("ready", "access ready")):
            values = [r[key] * 1000 for rnd in found[wakeups] for r in rnd]
            medians = [statistics.median(r[key] for r in rnd) * 1000 for rnd in found[wakeups]]
            p50, p99 = percentile(values, 50), percentile(values, 99)
            figures[(wakeups, key)] = (p50, p99)
            print(
                f"  {label:30}  {name:16} {p50:7.0f} {p99:7.0f}"
                f"   {min(medians):.0f}-{max(medians):.0f}"
            )
    for key, name in (("received", "Payment received"), ("ready", "access ready")):
        new, old = figures[(True, key)], figures[(False, key)]
        print(
            f"  {name}: polling / wake-ups = {old[0] / new[0]:.1f}x at p50,"
            f" {old[1] / new[1]:.1f}x at p99"
        )
    after = os.getloadavg()
    print(
        "  load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in after)
        + f"; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
