"""SIGKILL in the middle of a media broadcast, then a restart: each user gets exactly one
message.

A real ``vpnbot run`` process sends a video broadcast (with buttons) to the Telegram
emulator. Midway, the emulator starts holding every send unanswered and unapplied (as a
slow network would), so the messages Telegram has accepted are exactly those the outbox
records as sent; the process is then killed with SIGKILL, with sends on their way. A new
process under the same instance id takes the jobs back and finishes the broadcast.

(A kill that lands between Telegram accepting a message and the outbox recording it may
repeat that one message: Telegram has no idempotency key. ``test_sigkill_notifications``
bounds those repeats by the notifier's concurrency; this test shows that nothing else is
ever sent twice and nothing is lost.)
"""

from __future__ import annotations

from pathlib import Path

from runtime.storage import Database, users
from runtime.storage import broadcasts as store
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import TelegramEmulator

from .processes import (
    CRYPTO_TOKEN,
    PANEL_PASSWORD,
    PANEL_USER,
    PATIENCE,
    TOKEN,
    Vpnbot,
    rows,
    until,
    value,
    write_config,
)
from .test_process import free_port

USERS = 90
FIRST_USER = 8_100_000
HELD = 10**6


def videos(emulator: TelegramEmulator, user: int) -> int:
    return sum(1 for m in emulator.messages(user, from_bot=True) if "video" in m.media)


def delivered(emulator: TelegramEmulator) -> int:
    return sum(videos(emulator, FIRST_USER + i) for i in range(USERS))


async def test_a_broadcast_killed_midway_reaches_each_user_once(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        for index in range(USERS):
            emulator.create_user(FIRST_USER + index, first_name=f"u{index}", language_code="de")
            await users.touch_user(db, FIRST_USER + index, username=None, language="de")
        admin = emulator.create_user(8_000_001, first_name="Boss", language_code="en")
        upload = admin.send_media("video")  # the file the admin gave the bot
        assert upload.file_id is not None
        port = free_port()
        config = write_config(
            tmp_path / "vpnbot.toml",
            port=port,
            dsn=database_dsn,
            telegram=emulator.url,
            panel=panel.url,
            crypto=crypto.url,
            instance="broadcast-killed",
        )
        log = tmp_path / "vpnbot.log"

        first = Vpnbot(config, log, port)
        await first.wait_ready()
        draft, reach = await store.create_broadcast(
            db,
            created_by=admin.id,
            audience="lang",
            audience_arg="de",
            text="<b>Neue Server</b>",
            html=True,
            media=("video", upload.file_id),
            buttons=[[{"text": "Status", "url": "https://status.example.com"}]],
        )
        assert reach == USERS
        await store.start_broadcast(db, draft.id, report_chat_id=admin.id, report_message_id=None)

        async def going() -> bool:
            return delivered(emulator) >= 20

        await until(going, seconds=PATIENCE, what="a part of the broadcast sent", every=0.02)
        emulator.hang_next(method="sendVideo", times=HELD)  # every send from now is held

        async def settled() -> bool:
            done = await value(
                db,
                "select count(*) from outbox where status = 'done' and dedup_key like $1",
                store.prefix(draft.id) + "%",
            )
            held = emulator.faults[0].times < HELD if emulator.faults else True
            return held and done == delivered(emulator)

        await until(settled, seconds=30, what="sends held and every accepted one recorded")
        await first.kill()
        emulator.clear_faults()
        sent_before = delivered(emulator)
        assert sent_before < USERS, "the broadcast ran out before the kill: make it bigger"
        assert await value(db, "select status from broadcasts") == "sending"

        second = Vpnbot(config, log, port)
        try:
            await second.wait_ready()

            async def finished() -> bool:
                return bool(await value(db, "select status from broadcasts") == "finished")

            await until(finished, seconds=PATIENCE, what="the broadcast finished")
        finally:
            code = await second.stop()
        assert code == 0, second.tail()

    got = {FIRST_USER + i: videos(emulator, FIRST_USER + i) for i in range(USERS)}
    assert {user: n for user, n in got.items() if n != 1} == {}
    for index in range(USERS):
        (message,) = [
            m for m in emulator.messages(FIRST_USER + index, from_bot=True) if "video" in m.media
        ]
        assert message.caption == "Neue Server"
        assert [[b.url for b in row] for row in message.buttons()] == [
            ["https://status.example.com"]
        ]
    jobs = await rows(
        db,
        "select status, attempts, result from outbox where dedup_key like $1",
        store.prefix(draft.id) + "%",
    )
    assert len(jobs) == USERS and {j["status"] for j in jobs} == {"done"}
    assert {j["attempts"] for j in jobs} == {1}  # the kill cost no attempt
    assert all(isinstance(j["result"]["message_id"], int) for j in jobs)
    assert await value(db, "select delivered from broadcasts") == USERS
    assert emulator.counters["answered.429"] == 0
