"""Update ids that go backwards: the real Bot API never numbers updates backwards, but an
emulator that restarted does. Such updates are new all the same: each is handled once,
logged and alerted on (a warning under a fixed key), never swallowed as a redelivery."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from runtime.alerts import Severity
from runtime.bot._renumbered import ALERT_KEY
from runtime.storage import Database, inbox
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Limits, TelegramEmulator

from .conftest import TOKEN, Alerts, build_shop, make_settings
from .test_e2e import free_port, running
from .test_inbox_batching import fetch
from .test_inbox_storage import update

KEY = inbox.RENUMBERED_KEYS
PATIENCE = 60.0


async def test_an_id_seen_with_other_content_is_kept_under_a_key_of_its_own(
    db: Database,
) -> None:
    assert await inbox.store(db, [update(i, user=i) for i in range(1, 6)]) == 5
    claimed = await inbox.claim(db, owner="a", limit=10, claim_seconds=60)
    assert len(await inbox.mark_many_processed(db, claimed, owner="a")) == 5

    page = [update(3, user=3, text="new"), update(4, user=4, text="new"), update(6, user=6)]
    stored = await inbox.store(db, page)
    assert stored == 3
    assert stored.renumbered == ((3, KEY), (4, KEY + 1))
    assert stored.went_back == ()
    assert await inbox.store(db, page) == 0  # a redelivery of the renumbered page

    claimed = await inbox.claim(db, owner="b", limit=10, claim_seconds=60)
    assert [u.update_id for u in claimed] == [6, KEY, KEY + 1]
    assert [u.payload["update_id"] for u in claimed] == [6, 3, 4]
    assert [u.payload["message"]["text"] for u in claimed] == ["hi", "new", "new"]
    await inbox.mark_many_processed(db, claimed, owner="b")
    again = await inbox.store(db, [update(3, user=3, text="newer")])  # numbered anew again
    assert again.renumbered == ((3, KEY + 2),)
    rows = await fetch(db, "select update_id from telegram_updates order by update_id")
    assert [row["update_id"] for row in rows] == [1, 2, 3, 4, 5, 6, KEY, KEY + 1, KEY + 2]


async def test_a_renumbered_update_stored_twice_at_once_is_kept_once(db: Database) -> None:
    await inbox.store(db, [update(1)])
    renumbered = update(1, text="after a restart")
    results: list[int] = []

    async def store() -> None:
        results.append(await inbox.store(db, [renumbered]))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(store)
    assert sorted(results) == [0, 0, 0, 1]
    rows = await fetch(db, "select update_id from telegram_updates order by update_id")
    assert [row["update_id"] for row in rows] == [1, KEY]


async def test_a_fresh_page_below_the_settled_ids_is_reported(db: Database) -> None:
    await inbox.store(db, [update(i) for i in range(10, 13)])
    claimed = await inbox.claim(db, owner="a", limit=10, claim_seconds=60)
    await inbox.mark_many_processed(db, claimed, owner="a")

    # a redelivery after a crash between storing and acknowledging is no news
    redelivered = await inbox.store(db, [update(11), update(12)], fresh_page=True)
    assert redelivered == 0 and not redelivered.went_backwards
    assert not (await inbox.store(db, [update(2)])).went_backwards  # not a fresh page
    fresh = await inbox.store(db, [update(3), update(13)], fresh_page=True)
    assert fresh == 2
    assert fresh.went_back == (3,)
    assert fresh.renumbered == ()


async def test_updates_numbered_anew_after_an_emulator_restart_are_answered_once(
    db: Database, panel: FakeMarzban, crypto: FakeCryptoBot
) -> None:
    port = free_port()
    settings = make_settings(
        f"http://127.0.0.1:{port}", bot={"mode": "polling", "polling_timeout_seconds": 1}
    )
    alerts = Alerts()
    shop = build_shop(settings, db, panel, crypto, alerts)
    try:
        before = TelegramEmulator(TOKEN, limits=Limits.off())
        async with before.running(port=port), running(shop):
            ann = before.create_user(first_name="Ann")
            for _ in range(3):
                ann.send_command("start")
            await before.wait_until(
                lambda: len(before.messages(ann.id, from_bot=True)) >= 3,
                timeout=PATIENCE,
                what="the replies before the restart",
            )
            await settled(db)
        assert alerts.alert_keys() == []

        after = TelegramEmulator(TOKEN, limits=Limits.off())  # numbers updates from 1 again
        async with after.running(port=port):
            bob = after.create_user(first_name="Bob")
            bob.send_command("help")
            bob.send_command("start")
            sent = [u["update_id"] for u in after.pending_updates()]
            with capture_logs() as logs:
                async with running(shop):
                    await after.wait_until(
                        lambda: len(after.messages(bob.id, from_bot=True)) >= 2,
                        timeout=PATIENCE,
                        what="the replies after the restart",
                    )
                    await settled(db)
                    after.repeat_update(sent[0])  # delivered again: still handled once
                    await after.wait_until(
                        lambda: not after.pending_updates(),
                        timeout=PATIENCE,
                        what="the redelivery acknowledged",
                    )
                    await settled(db)
            assert len(after.messages(bob.id, from_bot=True)) == 2
        assert after.internal_errors == [] and before.internal_errors == []
    finally:
        for closer in shop.closers:
            await closer.aclose()

    rows = await fetch(
        db, "select update_id, payload from telegram_updates where update_id >= $1", KEY
    )
    assert sorted(row["payload"]["update_id"] for row in rows) == sorted(sent)
    assert [a.key for a in alerts.alerts] == [ALERT_KEY]
    assert alerts.alerts[0].severity is Severity.WARNING
    warned = [entry for entry in logs if entry.get("operation") == "bot.inbox.store"]
    assert len(warned) == 1 and warned[0]["renumbered"] == len(sent)


async def settled(db: Database) -> None:
    with trio.fail_after(PATIENCE):
        while await inbox.pending_count(db):  # noqa: ASYNC110 - the bot runs beside us
            await trio.sleep(0.05)
