"""The Bot API client sends files Telegram already has and deletes messages, against the
Telegram emulator (which answers as Telegram does, 48-hour rule included)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.failures import DependencyError, classify
from runtime.telegram import BotApi
from runtime.testing.telegram import Limits, TelegramEmulator

TOKEN = "123456789:AAMediaBotToken0123456789abcdefghijk"


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, limits=Limits.off())
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.mark.parametrize("kind", ["photo", "video", "animation", "document"])
async def test_media_by_file_id_with_an_html_caption_and_buttons(
    emulator: TelegramEmulator, kind: str
) -> None:
    user = emulator.create_user(first_name="Ann")
    user.send_text("/start")
    upload = user.send_media(kind)  # type: ignore[arg-type]
    assert upload.file_id is not None
    markup = {"inline_keyboard": [[{"text": "Site", "url": "https://example.com"}]]}
    api = BotApi(TOKEN, api_base=emulator.url)
    try:
        sent = await api.send_media(
            user.id, kind, upload.file_id, "<b>Hi</b>", reply_markup=markup, parse_mode="HTML"
        )
        message = emulator.message(user.id, sent["message_id"])
        assert message.caption == "Hi" and message.caption_entities[0]["type"] == "bold"
        assert kind in message.media
        assert [[b.url for b in row] for row in message.buttons()] == [["https://example.com"]]
        # as Telegram does, an animation's message carries its file as a document too
        assert ("document" in message.media) is (kind in ("animation", "document"))
        assert await api.delete_message(user.id, sent["message_id"]) is True
        assert message.deleted
        with pytest.raises(DependencyError, match="message to delete not found"):
            await api.delete_message(user.id, sent["message_id"])
    finally:
        await api.aclose()


async def test_a_message_older_than_48_hours_cannot_be_deleted(
    emulator: TelegramEmulator,
) -> None:
    user = emulator.create_user(first_name="Ann")
    user.send_text("/start")
    api = BotApi(TOKEN, api_base=emulator.url)
    try:
        sent = await api.send_message(user.id, "<i>old</i>", parse_mode="HTML")
        message = emulator.message(user.id, sent["message_id"])
        assert message.content == "old"
        message.date -= 48 * 3600
        with pytest.raises(DependencyError, match="message can't be deleted") as caught:
            await api.delete_message(user.id, sent["message_id"])
        assert not classify(caught.value).transient  # not worth a retry
        assert not message.deleted
        with pytest.raises(ValueError, match="no media kind"):
            await api.send_media(user.id, "sticker", "x")
    finally:
        await api.aclose()
