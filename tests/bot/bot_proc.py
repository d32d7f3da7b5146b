"""The bot's inbox actor in a process of its own, driven by tests/bot/test_crash.py.

    python bot_proc.py DSN API_BASE [--hang before|after --marker PATH]

Run with the project root on PYTHONPATH. Once its modules are imported (aiogram takes
seconds) it prints ``loaded`` and waits for a line on stdin, so a test can start the next
process while the current one runs. Then it runs the ``bot`` actor under a supervisor, as
the service does, with short claims. With ``--hang``, the first successful_payment
handler stops for good either before crediting or right after crediting committed, having
touched ``PATH``: the test then kills the process with SIGKILL. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.access import Access
from runtime.alerts import Alert
from runtime.billing import Billing
from runtime.bot import BOT_ACTOR, TelegramBot
from runtime.bot._services import BotServices
from runtime.bridge import asyncio_loop
from runtime.catalog import Catalog
from runtime.logs import configure_logging
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.plugin_api.payments import TelegramPayment
from runtime.storage import Database
from runtime.storage.payments import Finalized
from runtime.supervision import Supervisor
from tests.bot.conftest import TOKEN, make_settings


class Alerts:
    def submit(self, alert: Alert) -> None:
        print(f"alert {alert.key}", flush=True)


def hang_in_payments(mode: str, marker: Path) -> None:
    real = BotServices.confirm_telegram_payment

    async def confirm(self: BotServices, successful_payment: TelegramPayment) -> Finalized:
        if mode == "before":
            await trio.Path(marker).touch()
            await trio.sleep_forever()
        result = await real(self, successful_payment)
        await trio.Path(marker).touch()
        await trio.sleep_forever()
        return result

    BotServices.confirm_telegram_payment = confirm  # type: ignore[method-assign]


async def main(args: argparse.Namespace) -> None:
    settings = make_settings(args.api_base)
    async with asyncio_loop():
        db = await Database.connect(args.dsn, min_size=1, max_size=4)
        try:
            services = Services(settings, Metrics(), instance_id="crash-test")
            alerts = Alerts()
            services.provide_alerts(alerts)  # type: ignore[arg-type]
            services.provide_db(db)
            catalog = Catalog.from_settings(settings)
            client = BotApiPaymentsClient(TOKEN, api_base=args.api_base)
            services.provide_domain(
                Billing(
                    db, catalog, {"stars": StarsProvider(client)}, alerts, balance_currency="RUB"
                ),
                Access(db, catalog, {}, alerts),
            )
            bot = TelegramBot(services, claim_seconds=1.5, handler_timeout=1.0, idle_seconds=0.1)
            (spec,) = [s for s in bot.actors() if s.name == BOT_ACTOR]
            supervisor = Supervisor([spec])
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    with trio.open_signal_receiver(signal.SIGTERM) as signals:
                        async for _ in signals:
                            supervisor.request_shutdown()

                nursery.start_soon(stop_on_signal)
                await supervisor.run()
                nursery.cancel_scope.cancel()
            await client.aclose()
        finally:
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("api_base")
    parser.add_argument("--hang", choices=["before", "after"])
    parser.add_argument("--marker", type=Path)
    arguments = parser.parse_args()
    configure_logging(fmt="json", level="warning")
    if arguments.hang:
        hang_in_payments(arguments.hang, arguments.marker)
    print("loaded", flush=True)
    sys.stdin.readline()
    trio.run(main, arguments)
