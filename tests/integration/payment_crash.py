"""A payment caught in flight by a SIGKILL, for the restart tests and the recovery bench.

``catch(process)`` leaves a running ``vpnbot run`` process in the middle of a Stars
payment, as a kill at the worst moment would find it: the user has paid, the
``successful_payment`` update is stored and claimed by the process, whose handler is held
up inside the crediting transaction (by a row lock this scenario holds), and the notifier
is sending a message to the same user that Telegram never answers (so it holds its lease,
its claim and the job's start mark). The caller kills the process, then ``release``s the
row lock. The user's "Payment received" then comes only from the restarted process.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import trio

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.billing import Billing
from runtime.bridge import run_asyncio
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage import Database, job_kinds, outbox
from runtime.testing.telegram import Message, SimUser, TelegramEmulator

from .processes import PATIENCE, TOKEN, rows, until, value


class _Alerts:
    def submit(self, alert: Any) -> None:
        pass


def is_payment_received(message: Message) -> bool:
    return (message.content or "").startswith("Payment received")


class PaymentCrash:
    def __init__(
        self, db: Database, emulator: TelegramEmulator, settings: Settings, user: SimUser
    ) -> None:
        self.db = db
        self.emulator = emulator
        self.user = user
        self.client = BotApiPaymentsClient(TOKEN, api_base=emulator.url)
        self.billing = Billing(
            db,
            Catalog.from_settings(settings),
            {"stars": StarsProvider(self.client)},
            _Alerts(),
            balance_currency="RUB",
        )
        self.payment_id = ""
        self.hung_job = ""
        self._lock: asyncpg.Connection[asyncpg.Record] | None = None

    async def catch(self, instance: str) -> None:
        """Leave the process of ``instance`` mid-payment (see the module's text)."""
        checkout = await self.billing.buy(self.user.id, "month", "stars")
        self.payment_id = checkout.payment.id
        assert checkout.invoice.send_in_chat is not None
        async with httpx.AsyncClient() as client:  # what the bot does with a Stars invoice
            sent = await client.post(
                f"{self.emulator.url}/bot{TOKEN}/sendInvoice",
                json={"chat_id": self.user.id, **checkout.invoice.send_in_chat},
            )
        assert sent.status_code == 200, sent.text
        invoice = await self.user.wait_for_message(lambda m: m.invoice is not None, timeout=30)
        self._lock = await self.db.open_session()
        await run_asyncio(self._lock.execute, "begin")
        await run_asyncio(
            self._lock.execute,
            "select 1 from payments where id = $1::uuid for update",
            self.payment_id,
        )
        result = await self.emulator.pay(self.user.id, invoice)
        assert result.status == "paid", result

        async def update_held() -> bool:
            claimed = await value(
                self.db,
                "select count(*) from telegram_updates where processed_at is null"
                " and starts_with(claimed_by, $1) and payload->'message' ? 'successful_payment'",
                f"{instance}:",
            )
            waiting = await value(
                self.db,
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and datname = current_database()",
            )
            return bool(claimed and waiting)

        await until(update_held, seconds=PATIENCE, what="the payment's handler held up")

        faults = self.emulator.counters["faults"]
        self.emulator.hang_next(method="sendMessage")
        self.hung_job = f"notify:test:hung:{self.payment_id}"
        await outbox.enqueue_job(
            self.db,
            kind=job_kinds.NOTIFY,
            dedup_key=self.hung_job,
            payload={
                "chat_id": self.user.id,
                "template": "topup_credited",
                "params": {"amount_minor": 777, "balance_minor": 777, "currency": "RUB"},
            },
        )

        async def sending() -> bool:
            started = await value(
                self.db,
                "select count(*) from outbox where dedup_key = $1 and started_at is not null"
                " and starts_with(claimed_by, $2)",
                self.hung_job,
                f"{instance}:",
            )
            # marked started, and its request at Telegram, which never answers it
            return bool(started) and self.emulator.counters["faults"] > faults

        await until(sending, seconds=PATIENCE, what="the notifier sending into the void")

    async def release(self) -> None:
        """Let go of the row lock (after the kill)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with trio.CancelScope(shield=True):
                await run_asyncio(lock.close)

    def payment_received(self) -> list[Message]:
        return [
            m for m in self.emulator.messages(self.user.id, from_bot=True) if is_payment_received(m)
        ]

    def hung_delivered(self) -> list[Message]:
        return [
            m
            for m in self.emulator.messages(self.user.id, from_bot=True)
            if "topped up by" in (m.content or "") and "7.77" in (m.content or "")
        ]

    async def state(self) -> dict[str, Any]:
        (payment,) = await rows(
            self.db, "select status from payments where id = $1::uuid", self.payment_id
        )
        (job,) = await rows(
            self.db,
            "select status, attempts, lost_claims, claimed_by from outbox where dedup_key = $1",
            self.hung_job,
        )
        (update,) = await rows(
            self.db,
            "select processed_at is not null as done, attempts, lost_claims, claimed_by"
            " from telegram_updates where payload->'message' ? 'successful_payment'"
            " and payload->'message'->'successful_payment'->>'invoice_payload' = $1",
            self.payment_id,
        )
        return {"payment": payment, "job": job, "update": update}

    async def aclose(self) -> None:
        await self.release()
        await self.client.aclose()
