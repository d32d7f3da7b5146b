"""The Bot API client for sending: answers mapped onto failure classes, the token kept out
of every message and log line."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from runtime.failures import TELEGRAM, DependencyError, FailureType, classify
from runtime.telegram import BotApi, BotTokenRejected, ChatBlocked, TooManyRequests

from .fake_bot_api import TOKEN, FakeBotApi


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    peer = FakeBotApi()
    async with peer.running():
        yield peer


@pytest.fixture
async def api(fake: FakeBotApi) -> AsyncIterator[BotApi]:
    client = BotApi(TOKEN, api_base=fake.url)
    yield client
    await client.aclose()


async def test_send_message_and_photo(fake: FakeBotApi, api: BotApi) -> None:
    message = await api.send_message(7, "hello", {"inline_keyboard": []}, True)
    assert message["chat"]["id"] == 7
    await api.send_photo(7, b"\x89PNG fake", "a caption")
    text, photo = fake.sent
    assert (text.method, text.text) == ("sendMessage", "hello")
    assert text.params["allow_paid_broadcast"] is True
    assert text.params["reply_markup"] == {"inline_keyboard": []}
    assert (photo.method, photo.text, photo.photo) == ("sendPhoto", "a caption", b"\x89PNG fake")
    assert "allow_paid_broadcast" not in photo.params


async def test_429_is_transient_with_the_retry_after_of_its_parameters(
    fake: FakeBotApi, api: BotApi
) -> None:
    fake.rate_limit(7)
    with pytest.raises(TooManyRequests) as caught:
        await api.send_message(1, "x")
    assert caught.value.retry_after == 7.0
    failure = classify(caught.value)
    assert (failure.type, failure.transient, failure.retry_after, failure.dependency) == (
        FailureType.DEPENDENCY,
        True,
        7.0,
        TELEGRAM,
    )


async def test_403_is_a_blocked_chat(fake: FakeBotApi, api: BotApi) -> None:
    fake.blocked.add(5)
    with pytest.raises(ChatBlocked) as caught:
        await api.send_message(5, "x")
    assert caught.value.chat_id == 5
    assert not classify(caught.value).transient
    assert "blocked by the user" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "description", "error", "transient", "dependency"),
    [
        (400, "Bad Request: message is too long", DependencyError, False, None),
        (500, "Internal Server Error", DependencyError, True, TELEGRAM),
        (502, "Bad Gateway", DependencyError, True, TELEGRAM),
        (401, "Unauthorized", BotTokenRejected, False, TELEGRAM),
    ],
)
async def test_other_answers(
    fake: FakeBotApi,
    api: BotApi,
    status: int,
    description: str,
    error: type[Exception],
    transient: bool,
    dependency: str | None,
) -> None:
    """Telegram itself failing names Telegram as the cause (one alert for every actor it
    fails); an answer about this one message names nothing."""
    fake.fail(status, description)
    with pytest.raises(error) as caught:
        await api.send_message(1, "x")
    assert classify(caught.value).transient is transient
    assert classify(caught.value).dependency == dependency
    assert not isinstance(caught.value, ChatBlocked | TooManyRequests)


async def test_an_unreachable_api_is_transient() -> None:
    client = BotApi(TOKEN, api_base="http://127.0.0.1:9", timeout=2)
    with pytest.raises(DependencyError) as caught:
        await client.send_message(1, "x")
    await client.aclose()
    assert classify(caught.value).transient
    assert classify(caught.value).dependency == TELEGRAM


async def test_the_token_never_reaches_errors_or_logs(fake: FakeBotApi) -> None:
    wrong = BotApi(TOKEN + "x", api_base=fake.url)
    down = BotApi(TOKEN, api_base="http://127.0.0.1:9", timeout=2)
    errors: list[BaseException] = []
    with capture_logs() as logs:
        for call in (
            lambda: wrong.send_message(1, "x"),
            lambda: down.send_photo(1, b"png", "c"),
        ):
            try:
                await call()
            except DependencyError as exc:
                errors.append(exc)
    await wrong.aclose()
    await down.aclose()
    assert isinstance(errors[0], BotTokenRejected)
    seen = " ".join(
        [str(e) for e in errors]
        + [repr(e) for e in errors]
        + [repr(e.__cause__) + repr(e.__context__) for e in errors]
        + [repr(line) for line in logs]
    )
    assert TOKEN not in seen
    assert TOKEN.split(":")[1] not in seen
