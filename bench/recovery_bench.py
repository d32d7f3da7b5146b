"""How long a user waits for "Payment received" after a SIGKILL at the worst moment.

    .venv/bin/python bench/recovery_bench.py            # 5 kills, about 2 minutes
    .venv/bin/python bench/recovery_bench.py --rounds 2

A real ``vpnbot run`` process (polling mode) against the Telegram emulator, a fake
Marzban and a fake Crypto Pay, on an embedded PostgreSQL of its own. Each round catches a
Stars payment in flight (tests/integration/payment_crash.py: the ``successful_payment``
update claimed by the process and its handler inside the crediting transaction, the
notifier in the middle of a send), kills the process with SIGKILL, and starts it again
under the same instance id. It prints, per round, the seconds from the kill to the new
process answering ``/readyz`` (mostly Python importing the runtime) and from that moment
to the emulator accepting the user's "Payment received": the time the restart adds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _databases import bench_databases  # noqa: E402

from runtime.bridge import asyncio_loop  # noqa: E402
from runtime.config import load_settings  # noqa: E402
from runtime.storage import Database  # noqa: E402
from runtime.testing.fakes.cryptobot import FakeCryptoBot  # noqa: E402
from runtime.testing.fakes.marzban import FakeMarzban  # noqa: E402
from runtime.testing.telegram import TelegramEmulator  # noqa: E402
from tests.integration.payment_crash import PaymentCrash  # noqa: E402
from tests.integration.processes import (  # noqa: E402
    CRYPTO_TOKEN,
    PANEL_PASSWORD,
    PANEL_USER,
    TOKEN,
    Vpnbot,
    until,
    write_config,
)
from tests.integration.test_process import free_port  # noqa: E402


async def measure(dsn: str, rounds: int, folder: Path) -> list[tuple[float, float]]:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    results = []
    async with asyncio_loop(), emulator.running(), panel.running(), crypto.running():
        db = await Database.connect(dsn, min_size=1, max_size=4)
        port = free_port()
        config = write_config(
            folder / "vpnbot.toml",
            port=port,
            dsn=dsn,
            telegram=emulator.url,
            panel=panel.url,
            crypto=crypto.url,
            instance="bench",
        )
        settings = load_settings(config, environ={})
        process = Vpnbot(config, folder / "vpnbot.log", port)
        try:
            await process.wait_ready()
            for number in range(rounds):
                user = emulator.create_user(5_000_000 + number, first_name=f"payer{number}")
                crash = PaymentCrash(db, emulator, settings, user)
                try:
                    await crash.catch("bench")
                    await process.kill()
                    killed = trio.current_time()
                    await crash.release()
                    process = Vpnbot(config, folder / "vpnbot.log", port)
                    ready = await process.wait_ready()

                    async def confirmed(crash: PaymentCrash = crash) -> bool:
                        return bool(crash.payment_received())

                    await until(confirmed, seconds=300, what="Payment received", every=0.01)
                    results.append((ready - killed, trio.current_time() - ready))
                    print(
                        f"round {number + 1}: kill -> ready {results[-1][0]:5.2f} s,"
                        f" ready -> 'Payment received' {results[-1][1]:5.2f} s",
                        flush=True,
                    )
                finally:
                    await crash.aclose()
        finally:
            await process.stop()
            await db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        bench_databases({"recovery": ("recovery", True)}) as dsns,
        tempfile.TemporaryDirectory(prefix="vpnbot-recovery-") as folder,
    ):
        results = trio.run(measure, dsns["recovery"], args.rounds, Path(folder))
    starts = [r[0] for r in results]
    waits = [r[1] for r in results]
    print(
        f"\nSIGKILL mid-payment, {len(results)} rounds:\n"
        f"  kill -> ready               median {statistics.median(starts):5.2f} s"
        f"  max {max(starts):5.2f} s\n"
        f"  ready -> 'Payment received' median {statistics.median(waits):5.2f} s"
        f"  max {max(waits):5.2f} s"
    )


if __name__ == "__main__":
    main()
