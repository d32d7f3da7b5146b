"""The highest update id the inbox has seen, and the sandbox's emulator going on after it
(a restart without its state file must not number updates the inbox will skip)."""

from __future__ import annotations

from runtime.sandbox._sandbox import continue_updates
from runtime.storage import Database, inbox
from runtime.storage.update_ids import highest_seen
from runtime.testing.telegram import Limits, TelegramEmulator


def update(update_id: int) -> dict[str, object]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1700000000,
            "chat": {"id": 100000001, "type": "private"},
            "from": {"id": 100000001, "is_bot": False, "first_name": "Ann"},
            "text": "/start",
        },
    }


async def test_highest_seen_is_the_inbox_maximum(db: Database) -> None:
    assert await highest_seen(db) is None
    await inbox.store(db, [update(700000005), update(700000009), update(700000007)])
    assert await highest_seen(db) == 700000009


async def test_the_sandbox_emulator_goes_on_after_the_inbox(db: Database) -> None:
    await inbox.store(db, [update(n) for n in range(700000001, 700000041)])
    emulator = TelegramEmulator(limits=Limits.off())  # its state file lost: ids from the start
    user = emulator.create_user()
    emulator.send_text(user.id, "sent while the runtime was starting")
    await continue_updates(emulator, db)
    assert [u["update_id"] for u in emulator.pending_updates()] == [700000041]
    assert emulator.next_update_id() == 700000042
    stored = await inbox.store(db, emulator.pending_updates())
    assert stored == 1  # the inbox takes it: not a seen id


async def test_an_empty_inbox_changes_nothing(db: Database) -> None:
    emulator = TelegramEmulator()
    await continue_updates(emulator, db)
    assert emulator.next_update_id() == 700000001
