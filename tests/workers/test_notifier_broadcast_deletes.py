"""The notifier's broadcast deletions: a message already gone counts as deleted, a
message Telegram may no longer delete is given up at once, without an alert, and a
broadcast message's id is kept with its completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds
from runtime.telegram import BotApi
from runtime.testing.telegram import DEFAULT_TOKEN, Limits, TelegramEmulator
from runtime.workers.notifier import Notifier

from .conftest import fetch
from .test_notifier_emulator import drain


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    fake = TelegramEmulator(limits=Limits.off())
    async with fake.running():
        yield fake


async def queue(db: Database, key: str, payload: dict[str, Any]) -> None:
    await fetch(
        db,
        "insert into outbox (kind, dedup_key, payload) values ($1, $2, $3)",
        job_kinds.NOTIFY,
        key,
        payload,
    )


async def test_deletions_end_deleted_gone_or_too_old_once(
    db: Database, services: Services, emulator: TelegramEmulator, alerts: Any
) -> None:
    people = [emulator.create_user(language_code="ru") for _ in range(3)]
    await fetch(
        db,
        "insert into users (telegram_id, language) select unnest($1::bigint[]), 'ru'",
        [p.id for p in people],
    )
    for person in people:
        params = {"text": "<b>Hi</b>"}
        await queue(
            db,
            f"broadcast:1:{person.id}",
            {
                "chat_id": person.id,
                "template": "broadcast",
                "params": params,
                "html": True,
                "buttons": [[{"kind": "renew", "url": "https://t.me/shop_bot?start=plans"}]],
            },
        )
    sender = Notifier(services, BotApi(DEFAULT_TOKEN, api_base=emulator.url), "a")
    await drain(sender, db)
    sent = await fetch(db, "select payload->'chat_id' as chat, result from outbox order by id")
    ids = {int(r["chat"]): r["result"]["message_id"] for r in sent}
    for person in people:
        message = emulator.message(person.id, ids[person.id])
        assert message.content == "Hi"
        assert [b.text for row in message.buttons() for b in row] == ["🔄 Продлить доступ"]

    gone, old, fine = people
    emulator.message(gone.id, ids[gone.id]).deleted = True  # the user deleted it
    emulator.message(old.id, ids[old.id]).date -= 49 * 3600
    for person in people:
        await queue(
            db,
            f"broadcast:del:1:{person.id}",
            {"chat_id": person.id, "template": "broadcast_delete", "message_id": ids[person.id]},
        )
    await drain(sender, db)
    rows = await fetch(
        db,
        "select payload->'chat_id' as chat, status, attempts, last_error from outbox"
        " where dedup_key like 'broadcast:del:%'",
    )
    outcome = {int(r["chat"]): (r["status"], r["attempts"]) for r in rows}
    assert outcome == {gone.id: ("done", 1), old.id: ("dead", 1), fine.id: ("done", 1)}
    assert emulator.message(fine.id, ids[fine.id]).deleted
    assert not emulator.message(old.id, ids[old.id]).deleted
    assert len(emulator.calls_of("deleteMessage")) == 3
    assert alerts.alerts == []
