"""Telegram's own failures never cost a user's message: the bot's actors under a supervisor,
real aiogram against the Telegram emulator (flood control, outages), real PostgreSQL.

Deadlines here are generous waits for a slow machine, never measurements. Where a test
shows that something happens promptly, the fallbacks that could also explain it are set
to ten minutes, so only the mechanism under test can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.alerts import Severity
from runtime.bot import TelegramBot
from runtime.bot.handlers import user as user_handlers
from runtime.failures import TELEGRAM
from runtime.i18n import load_translator
from runtime.storage import Database, inbox
from runtime.supervision import ActorStatus, Backoff, Supervisor
from runtime.testing.telegram import Kind, SimUser, TelegramEmulator
from tests import forkserver

from .conftest import ADMIN, TOKEN, Alerts, Shop, build_shop, make_settings
from .test_e2e import bot_settings, running

ROOT = Path(__file__).resolve().parents[2]
TEN_MINUTES = Backoff(min=600.0, max=600.0, jitter=0.0)
PATIENCE = 60.0
"""Seconds to wait for what should take a second or two on an idle machine."""


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=10.0)
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator
) -> AsyncIterator[Shop]:
    settings = make_settings(emulator.url, bot=bot_settings("polling"))
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


async def until(check: Callable[[], Awaitable[Any]]) -> None:
    """Wait until ``await check()`` is truthy (the database has no event to wait on)."""
    with trio.fail_after(PATIENCE):
        while not await check():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def processed(shop: Shop, update_id: int) -> bool:
    return (await update_row(shop, update_id))["processed_at"] is not None


async def last_error(shop: Shop, update_id: int) -> str | None:
    error: str | None = (await update_row(shop, update_id))["last_error"]
    return error


async def probes_done(bot: TelegramBot) -> bool:
    return bot.link.probes_in_flight == 0


def actor_degraded(supervisor: Supervisor, name: str, expected: bool) -> Callable[[], Any]:
    async def check() -> bool:
        return (actor(supervisor, name).degraded_reason is not None) is expected

    return check


def actor(supervisor: Supervisor, name: str) -> ActorStatus:
    return next(s for s in supervisor.statuses if s.name == name)


async def update_row(shop: Shop, update_id: int) -> dict[str, Any]:
    rows = await shop.fetch(
        "select attempts, processed_at, last_error from telegram_updates where update_id = $1",
        update_id,
    )
    return rows[0]


async def stored_update_of(shop: Shop, chat_id: int, text: str) -> int:
    """The id of the stored update of ``chat_id``'s message ``text`` (waits for it)."""
    with trio.fail_after(PATIENCE):
        while True:
            found = await shop.value(
                "select update_id from telegram_updates where"
                " (payload->'message'->'chat'->>'id')::bigint = $1"
                " and payload->'message'->>'text' = $2",
                chat_id,
                text,
            )
            if found is not None:
                return int(found)
            await trio.sleep(0.05)


def bot_texts(emulator: TelegramEmulator, user: SimUser) -> list[str]:
    return [m.content for m in emulator.messages(user.id, from_bot=True)]


# -- flood control ------------------------------------------------------------------------


async def test_a_burst_of_429s_costs_the_start_no_attempt(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    tr = load_translator()
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop) as (bot, supervisor):
        assert bot.processor.max_attempts < 10  # ten counted attempts would give it up
        emulator.rate_limit_next(1, method="sendMessage", times=10)
        hello = user.send_command("start")
        menu = await user.wait_for_message(after=hello, timeout=PATIENCE)
        assert menu.content.startswith("Hi, Ann!")
        update_id = await stored_update_of(shop, user.id, "/start")
        await until(lambda: processed(shop, update_id))  # settled after the reply
        row = await update_row(shop, update_id)
        assert row["processed_at"] is not None and row["attempts"] == 1
        assert not (row["last_error"] or "").startswith(inbox.GAVE_UP)
        assert actor(supervisor, "bot").degraded_reason is None  # flood control is pacing
    assert emulator.counters["answered.429"] >= 10
    assert tr.t("en", "errors.apology") not in bot_texts(emulator, user)
    assert sum(text.startswith("Hi, Ann!") for text in bot_texts(emulator, user)) == 1
    assert shop.alerts.alerts == []


# -- an outage ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["bad_gateway", "no_answer"])
async def test_an_outage_degrades_the_bot_and_replies_resume_when_telegram_answers(
    emulator: TelegramEmulator, shop: Shop, fault: str
) -> None:
    """Replies waiting for Telegram, and messages waiting at Telegram, go out as soon as it
    answers again: the updates' own fallback and the poller's backoff are ten minutes."""
    tr = load_translator()
    outage: dict[str, Any] = {"hang": True} if fault == "no_answer" else {"status": 502}
    user = emulator.create_user(first_name="Ann", language_code="en")
    # with "no_answer" a send times out after half the handler's time
    async with running(shop, handler_timeout=6.0) as (bot, supervisor):
        bot.processor.telegram_backoff = TEN_MINUTES
        bot.poller.backoff = TEN_MINUTES
        await emulator.wait_until(
            lambda: emulator.calls_of("getUpdates"), timeout=PATIENCE, what="polling"
        )
        # Sending is down, updates still arrive: /start is stored, its reply fails
        emulator.start_outage(**outage, spared=["getUpdates"])
        user.send_command("start")
        start_id = await stored_update_of(shop, user.id, "/start")
        await until(lambda: last_error(shop, start_id))
        row = await update_row(shop, start_id)
        assert row["last_error"].startswith(inbox.WAITING_FOR_TELEGRAM)
        assert row["attempts"] == 0 and row["processed_at"] is None
        await until(actor_degraded(supervisor, "bot", True))
        assert "Telegram unreachable" in (actor(supervisor, "bot").degraded_reason or "")
        assert actor(supervisor, "bot").degraded_cause == TELEGRAM  # one alert for the cause
        # Then all of Telegram: the poller backs off, /help waits at Telegram
        emulator.start_outage(**outage)
        await until(actor_degraded(supervisor, "bot-poller", True))
        assert actor(supervisor, "bot-poller").degraded_cause == TELEGRAM
        user.send_command("help")
        assert bot.link.down and bot.processor.woken == 0
        assert bot_texts(emulator, user) == []

        emulator.end_outage()
        await user.wait_for_message(lambda m: m.content.startswith("Hi, Ann!"), timeout=PATIENCE)
        await user.wait_for_message(lambda m: "@help" in m.content, timeout=PATIENCE)
        assert bot.processor.woken >= 1  # made due when Telegram answered, not by its delay
        assert bot.link.outages == 1 and not bot.link.down
        await until(actor_degraded(supervisor, "bot", False))
        await until(actor_degraded(supervisor, "bot-poller", False))
        await until(lambda: processed(shop, start_id))  # settled after the reply
        row = await update_row(shop, start_id)
        assert row["attempts"] == 1 and row["processed_at"] is not None
        # probes that hung through the outage time out after it: that proves nothing
        await until(lambda: probes_done(bot))
        assert bot.link.outages == 1 and not bot.link.down
    assert tr.t("en", "errors.apology") not in bot_texts(emulator, user)
    assert shop.alerts.alerts == []


# -- a bug --------------------------------------------------------------------------------


def write_config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "vpnbot.toml"
    path.write_text(f'[database]\ndsn = "{dsn}"\n\n[service]\nlog_level = "warning"\n')
    return path


def vpnbot(*args: str) -> subprocess.CompletedProcess[str]:
    return forkserver.run(
        [sys.executable, str(ROOT / "supervisor.py"), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_bug_is_given_up_alerted_once_kept_and_replayable(
    emulator: TelegramEmulator,
    shop: Shop,
    database_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tr = load_translator()
    user = emulator.create_user(first_name="Ann", language_code="en")
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")

    def broken(ctx: Any, lang: str) -> str:
        raise KeyError("a bug in the help screen")

    async with running(shop) as (_bot, _supervisor):
        monkeypatch.setattr(user_handlers, "help_text", broken)
        asked = user.send_command("help")
        apology = await user.wait_for_message(after=asked, timeout=PATIENCE)
        assert apology.content == tr.t("en", "errors.apology")
        first = await stored_update_of(shop, user.id, "/help")
        await until(lambda: processed(shop, first))
        row = await update_row(shop, first)
        assert row["attempts"] == 1 and row["last_error"].startswith(inbox.GAVE_UP + "KeyError")
        (alert,) = shop.alerts.alerts
        assert alert.key == "bot_update_given_up:message" and str(first) in alert.text
        assert alert.severity is Severity.WARNING  # a user's message, no money moved

        # the fix is deployed; the admin lists what was given up and replays it
        monkeypatch.undo()
        listed = admin.send_command("failed")
        listing = await admin.wait_for_message(after=listed, timeout=PATIENCE)
        assert f"#{first} message" in listing.content and "KeyError" in listing.content
        replay = admin.send_command("replay", str(first))
        done = await admin.wait_for_message(after=replay, timeout=PATIENCE)
        assert done.content == tr.t("en", "admin.replayed", ids=f"#{first}")
        await user.wait_for_message(lambda m: "@help" in m.content, after=asked, timeout=PATIENCE)
        await until(lambda: processed(shop, first))
        assert await inbox.dead_updates(shop.db) == []

        # once more, replayed from the command line this time
        monkeypatch.setattr(user_handlers, "help_text", broken)
        again = user.send_command("help")
        await user.wait_for_message(
            lambda m: m.content == tr.t("en", "errors.apology"), after=again, timeout=PATIENCE
        )
        await until(lambda: inbox.dead_updates(shop.db))
        (second,) = [d.update_id for d in await inbox.dead_updates(shop.db)]
        monkeypatch.undo()
        config = write_config(tmp_path, database_dsn)
        listed_cli = await trio.to_thread.run_sync(vpnbot, "updates", "--config", str(config))
        assert listed_cli.returncode == 0, listed_cli.stderr
        assert str(second) in listed_cli.stdout and "KeyError" in listed_cli.stdout
        replayed_cli = await trio.to_thread.run_sync(
            vpnbot, "updates", "--config", str(config), "--replay", "all"
        )
        assert replayed_cli.returncode == 0, replayed_cli.stderr
        assert f"processing again: {second}" in replayed_cli.stdout
        await user.wait_for_message(lambda m: "@help" in m.content, after=again, timeout=PATIENCE)
    assert [a.key for a in shop.alerts.alerts] == ["bot_update_given_up:message"] * 2


# -- pre-checkout queries past Telegram's time --------------------------------------------


async def invoice_for(emulator: TelegramEmulator, shop: Shop, user: SimUser) -> Any:
    """A Stars invoice in the user's chat, as the bot sends it."""
    checkout = await shop.billing.buy(user.id, "month", "stars", language="en")
    send = checkout.invoice.send_in_chat
    assert send is not None
    async with emulator.bot_client() as client:
        from runtime.bridge import run_asyncio

        await run_asyncio(lambda: client.send_invoice(chat_id=user.id, **send))
    return await user.wait_for_message(lambda m: m.invoice is not None)


async def all_processed(shop: Shop, count: int) -> bool:
    done = await shop.value(
        "select count(*) from telegram_updates where processed_at is not null"
        " and payload ? 'pre_checkout_query'"
    )
    return bool(done == count)


def no_critical(alerts: Alerts) -> bool:
    return all(a.severity is not Severity.CRITICAL for a in alerts.alerts)


async def test_a_pre_checkout_rerun_after_a_crash_is_skipped_quietly(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    """A process took the query, died, and its claim expired: by the time another claims
    it Telegram's 10 seconds are long gone. No answer, no refusal, a warning."""
    emulator.pre_checkout_timeout = 0.5
    user = emulator.create_user(first_name="Ann", language_code="en")
    invoice = await invoice_for(emulator, shop, user)
    paid = await user.pay(invoice)
    assert not paid.ok  # no one answered in time: no money moved
    (pending,) = emulator.pending_updates()
    await inbox.store(shop.db, [pending])
    (claimed,) = await inbox.claim(shop.db, owner="dead-host:bot", limit=1, claim_seconds=120)

    async def the_claim_expired(conn: Any) -> None:
        await conn.execute(
            "update telegram_updates set claim_expires_at = now(),"
            " received_at = received_at - interval '2 minutes'"
        )

    await shop.db.transaction(the_claim_expired)
    async with running(shop) as (_bot, _supervisor):
        await until(lambda: processed(shop, claimed.update_id))
    row = await update_row(shop, claimed.update_id)
    assert not (row["last_error"] or "").startswith(inbox.GAVE_UP)
    assert emulator.calls_of("answerPreCheckoutQuery") == []
    assert [(a.key, a.severity) for a in shop.alerts.alerts] == [
        ("bot_pre_checkout_late", Severity.WARNING)
    ]
    assert await shop.value("select status from payments") != "finalized"


async def test_pre_checkout_queries_that_waited_out_a_downtime_are_a_warning(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    """The bot was down while users tried to pay; it polls the queries afterwards, fresh to
    it but expired for Telegram, which refuses the answers."""
    emulator.pre_checkout_timeout = 0.5
    users = [emulator.create_user(first_name=f"U{i}", language_code="en") for i in range(3)]
    for user in users:
        invoice = await invoice_for(emulator, shop, user)
        assert not (await user.pay(invoice)).ok
    async with running(shop):
        await until(lambda: all_processed(shop, len(users)))
    late = [e for u in users for e in emulator.transcript(u.id, kinds=[Kind.PRE_CHECKOUT_ANSWER])]
    assert len(late) == len(users) and all(e.data["late"] for e in late)
    assert no_critical(shop.alerts)
    assert {a.key for a in shop.alerts.alerts} == {"bot_pre_checkout_late"}
    assert await inbox.dead_updates(shop.db) == []
