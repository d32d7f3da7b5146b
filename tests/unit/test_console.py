"""What a terminal shows: short lines, aiogram's per-update lines at DEBUG only."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update

from runtime.logs import configure_logging, get_logger, log_failure, reset_logging
from runtime.logs._console import VALUE_WIDTH

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET = "crypto-pay-api-key-0f3c9a"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    structlog.contextvars.clear_contextvars()
    yield
    reset_logging()
    structlog.contextvars.clear_contextvars()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed_one_update() -> None:
    """One update through aiogram's dispatcher, as the bot feeds them (no handler)."""

    async def feed() -> None:
        bot = Bot(TOKEN)
        try:
            await Dispatcher().feed_update(bot, Update(update_id=41))
        finally:
            await bot.session.close()

    asyncio.run(feed())


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_aiogram_per_update_lines_are_debug_lines(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging(fmt=fmt, level="info", stream=stream)
    feed_one_update()
    get_logger("bot").info("after")
    assert "Update id=41" not in stream.getvalue()
    assert "after" in stream.getvalue()

    stream = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=stream)
    feed_one_update()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [update] = [line for line in lines if "Update id=41" in line["event"]]
    assert (update["level"], update["component"]) == ("debug", "aiogram.event")


def test_other_aiogram_info_lines_stay_info() -> None:
    import logging

    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    logging.getLogger("aiogram.event").info("Start polling")
    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (line["event"], line["level"]) == ("Start polling", "info")


def test_console_lines_fit_in_100_columns() -> None:
    stream = Terminal()
    configure_logging(fmt="console", stream=stream)
    log = get_logger("notifier")
    log.info(
        "batch sent",
        operation="notify",
        outcome="success",
        claimed=3,
        sent=3,
        failed=0,
        released=0,
        skipped=0,
        correlation_id="9f1c6a0e-5d3b-4b7e-8f21-7c0d6e2a9b44",
        url="http://127.0.0.1:8080/" + "x" * 200,
        note="two\nlines",
    )
    log.warning("a " * 80 + "very long event")
    get_logger("a-component-with-a-long-name").error("short")
    lines = [ANSI.sub("", line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]
    first = lines[0]
    assert re.match(r"^\d\d:\d\d:\d\d info  notifier   batch sent  claimed=3 sent=3 ", first)
    assert "outcome=" not in first  # success goes without saying
    assert re.search(r"  \+\d+$", first)  # the pairs left out, counted
    assert "…" in lines[1] and lines[1].split()[1] == "warn"
    assert "\x1b[" in stream.getvalue()  # coloured on a terminal


def test_long_values_are_cut_and_newlines_folded() -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream)
    get_logger("bot").info("x", url="http://h/" + "y" * 100, note="two\nlines")
    [line] = stream.getvalue().splitlines()
    assert f"url=http://h/{'y' * (VALUE_WIDTH - 10)}… " in line
    assert "note='two lines'" in line
    assert "\x1b[" not in line  # no colours off a terminal


def test_console_lines_are_still_redacted_and_tracebacks_whole() -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream, secrets=[SECRET])
    get_logger("bot").info("calling", url=f"https://api.telegram.org/bot{TOKEN}/getMe")
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError as exc:
        log_failure(get_logger("payments"), exc, operation="charge")
    text = stream.getvalue()
    assert SECRET not in text and TOKEN not in text and "123456789:" not in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: bad key ***" in text
    head = text.splitlines()[1]
    expected = "payments   operation failed  failure_type=bug outcome=failed operation=charge"
    assert expected in head and len(head) <= 100
