"""SIGKILL in a loop while the notifier sends: at most one duplicate message per kill.

A real ``vpnbot run`` process on a real PostgreSQL sends a queue of notifications to the
Telegram emulator, which counts every message it accepts. The process is killed with
SIGKILL again and again while it sends (each time a little after its messages start to
arrive), restarted under the same instance id, and finally left to finish (faster: the
limit of the emulator and the notifier's rate both raised). The queue
holds plain texts, access links with their QR code as one photo, and access links too
long for a caption (a text, then a photo: two messages for one job).

Every job must end done, once, with no attempt spent by the kills; every chat must get
its messages; and a kill may repeat only the sends in flight when it struck: those
Telegram accepted but the outbox had not recorded yet, never more than the notifier's
concurrency. The messages sent twice number at most those.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import trio

from runtime.config import NotifierSettings
from runtime.storage import Connection, Database, job_kinds, outbox
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import TelegramEmulator
from runtime.workers.notifier import default_concurrency

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

USERS = 360
KILLS = 6
PER_LIFE = USERS // KILLS
"""Jobs queued once each killed process is ready: work queued before would drain while a
slow start imports the bot (the notifier starts first), and leave the kill nothing to cut."""
NOTIFIER_CONCURRENCY = default_concurrency(NotifierSettings().rate_per_second)
"""The most sends the notifier has in progress at once: a kill repeats at most these."""
FIRST_USER = 7_000_000
DRAIN_RATE = 150.0
"""Messages per second of the last process, which only finishes the queue."""


def payload(index: int, user: int) -> tuple[dict[str, Any], int]:
    """The job for user number ``index`` and how many messages it makes."""
    if index % 3 == 0:
        return {
            "chat_id": user,
            "template": "payment_received",
            "params": {"amount_minor": 15000 + index, "currency": "RUB"},
        }, 1
    link = f"vless://user-{user}@vpn.example.com:443?type=tcp&sni=vpn.example.com#u{user}"
    if index % 3 == 1:  # caption fits: one photo
        params = {"access_url": link, "expires_at": "2030-01-01T00:00:00+00:00"}
        return {"chat_id": user, "template": "access_ready", "params": params}, 1
    long_link = link + "&pad=" + "x" * 1100  # too long for a caption: a text, then the photo
    params = {"access_url": long_link, "expires_at": "2030-01-01T00:00:00+00:00"}
    return {"chat_id": user, "template": "access_ready", "params": params}, 2


async def enqueue_load(db: Database, indices: range) -> dict[int, int]:
    expected: dict[int, int] = {}

    async def unit(conn: Connection) -> None:
        for index in indices:
            user = FIRST_USER + index
            body, messages = payload(index, user)
            expected[user] = messages
            await outbox.enqueue(
                conn, kind=job_kinds.NOTIFY, dedup_key=f"notify:load:{user}", payload=body
            )

    await db.transaction(unit)
    return expected


def sent_messages(emulator: TelegramEmulator) -> int:
    return sum(len(emulator.messages(FIRST_USER + index, from_bot=True)) for index in range(USERS))


async def unrecorded_sends(db: Database, emulator: TelegramEmulator) -> dict[int, int]:
    """Per chat, the messages Telegram accepted that the outbox does not count as sent (its
    job's ``steps_done``): with the process dead, the next one sends them again."""
    steps = {
        int(row["payload"]["chat_id"]): int(row["steps_done"])
        for row in await rows(db, "select payload, steps_done from outbox")
    }
    return {
        user: len(emulator.messages(user, from_bot=True)) - done for user, done in steps.items()
    }


async def test_sigkill_loop_costs_at_most_one_duplicate_per_kill(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    rng = random.Random(20240610)
    async with emulator.running(), panel.running(), crypto.running():
        for index in range(USERS):
            emulator.create_user(FIRST_USER + index, first_name=f"u{index}")
        port = free_port()

        def configure(extra: str = "") -> Path:
            return write_config(
                tmp_path / "vpnbot.toml",
                port=port,
                dsn=database_dsn,
                telegram=emulator.url,
                panel=panel.url,
                crypto=crypto.url,
                instance="killed-often",
                extra=extra,
            )

        config = configure()
        expected: dict[int, int] = {}
        log = tmp_path / "vpnbot.log"

        kills = 0
        at_kill: list[int] = []
        in_flight: list[int] = []
        unrecorded: dict[int, int] = {}
        while kills < KILLS:
            process = Vpnbot(config, log, port)
            await process.wait_ready()
            before = sent_messages(emulator)
            expected |= await enqueue_load(db, range(kills * PER_LIFE, (kills + 1) * PER_LIFE))

            async def sending(before: int = before) -> bool:
                return sent_messages(emulator) > before

            await until(sending, seconds=PATIENCE, what="messages going out", every=0.02)
            await trio.sleep(rng.uniform(0.2, 1.5))  # a moment to kill at, not a wait
            pending = await value(db, "select count(*) from outbox where status = 'pending'")
            await process.kill()
            kills += 1
            at_kill.append(sent_messages(emulator))
            now_unrecorded = await unrecorded_sends(db, emulator)
            in_flight.append(  # sends this kill cut short, not those an earlier kill left
                sum(max(0, n - unrecorded.get(user, 0)) for user, n in now_unrecorded.items())
            )
            unrecorded = now_unrecorded
            assert pending > 0, "the load ran out before the kills did: make it bigger"

        # What the kills left is drained faster: the kills are over, and at Telegram's rate
        # the drain alone took most of the test.
        emulator.limits = emulator.limits.with_changes(
            global_rate=DRAIN_RATE * 1.2, global_burst=int(DRAIN_RATE)
        )
        configure(f"\n[notifier]\nrate_per_second = {DRAIN_RATE}\n")
        final = Vpnbot(config, log, port)
        try:
            await final.wait_ready()

            async def finished() -> bool:
                left = await value(db, "select count(*) from outbox where status <> 'done'")
                return bool(left == 0)

            await until(finished, seconds=180, what="every job done")
        finally:
            code = await final.stop()
        assert code == 0, final.tail()

    jobs = await rows(
        db, "select dedup_key, status, attempts, lost_claims, steps_done from outbox order by id"
    )
    assert len(jobs) == USERS
    assert {j["status"] for j in jobs} == {"done"}
    # the kills cost no attempt: a lost claim is not a failure
    assert {j["attempts"] for j in jobs} == {1}
    received = {user: len(emulator.messages(user, from_bot=True)) for user in expected}
    missing = {u: n for u, n in received.items() if n < expected[u]}
    assert missing == {}, f"messages lost: {missing}"
    duplicates = sum(received[u] - expected[u] for u in expected)
    print(
        f"\n{kills} kills, {sum(expected.values())} messages, {duplicates} sent twice;"
        f" messages accepted at each kill: {at_kill}; in flight at each kill: {in_flight}"
    )
    assert max(in_flight) <= NOTIFIER_CONCURRENCY
    assert duplicates <= sum(in_flight)
    assert emulator.counters["answered.429"] == 0
