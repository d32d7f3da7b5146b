"""Structured logs: the fields of failure lines, correlation ids, rendering, redaction."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio
import trio.lowlevel
from structlog.testing import capture_logs

import runtime.logs._warnings
from runtime.failures import DependencyError, DomainError, FailureType, InfraError, Outcome
from runtime.logs import (
    REDACTED,
    add_secrets,
    configure_logging,
    correlation,
    current_correlation_id,
    get_logger,
    hold_warnings,
    log_failure,
    new_correlation_id,
    redact_processor,
    redact_text,
    reset_logging,
)
from runtime.logs._warnings import HELD_AT_MOST

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET = "crypto-pay-api-key-0f3c9a"
FAILURE_FIELDS = {"component", "operation", "correlation_id", "failure_type", "outcome"}


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    structlog.contextvars.clear_contextvars()
    yield
    reset_logging()
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def raise_and_catch(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


# -- log_failure ----------------------------------------------------------------------------


def test_failure_line_carries_the_contract_fields() -> None:
    log = get_logger("bot")
    with capture_logs() as logs, correlation("abc123"):
        failure = log_failure(log, DependencyError("panel 503"), operation="panel.sync", user_id=7)
    assert failure.type is FailureType.DEPENDENCY
    [line] = logs
    assert line.keys() >= FAILURE_FIELDS
    assert line == {
        "event": "operation failed",
        "log_level": "warning",
        "component": "bot",
        "operation": "panel.sync",
        "correlation_id": "abc123",
        "failure_type": "dependency_error",
        "transient": True,
        "outcome": "failed",
        "error": "panel 503",
        "error_type": "runtime.failures.DependencyError",
        "user_id": 7,
    }


@pytest.mark.parametrize(
    ("exc", "level", "with_traceback"),
    [
        (DomainError("unknown plan"), "warning", False),
        (DependencyError("bot was blocked", transient=False), "warning", False),
        (InfraError("db restarting"), "warning", False),
        (InfraError("disk full", transient=False), "error", False),
        (KeyError("user"), "error", True),
        (RuntimeError("unexpected"), "error", True),
    ],
    ids=repr,
)
def test_level_and_traceback_follow_the_policy(
    exc: Exception, level: str, with_traceback: bool
) -> None:
    exc = raise_and_catch(exc)  # type: ignore[assignment]
    with capture_logs() as logs:
        log_failure(get_logger("worker"), exc, operation="notify")
    [line] = logs
    assert line["log_level"] == level
    assert ("exc_info" in line) is with_traceback
    if with_traceback:
        assert line["exc_info"] is exc


def test_alerting_failures_are_marked() -> None:
    with capture_logs() as logs:
        log_failure(
            get_logger("bot"), DomainError("already paid"), operation="payment_finalization"
        )
        log_failure(get_logger("bot"), DomainError("bad input"), operation="menu")
    assert [line.get("alert") for line in logs] == [True, None]


def test_correlation_id_defaults_to_dash_and_component_to_the_logger() -> None:
    with capture_logs() as logs:
        log_failure(structlog.get_logger(), DomainError("x"), operation="op")
        log_failure(get_logger("bot").bind(actor="a"), DomainError("x"), operation="op")
        log_failure(get_logger("bot"), DomainError("x"), operation="op", component="payments")
    assert [(line["component"], line["correlation_id"]) for line in logs] == [
        ("-", "-"),
        ("bot", "-"),
        ("payments", "-"),
    ]


def test_reserved_fields_win_over_extra_fields() -> None:
    with capture_logs() as logs:
        log_failure(
            get_logger("bot"),
            DomainError("x"),
            operation="op",
            outcome=Outcome.SKIPPED,
            failure_type="bogus",
            error="bogus",
        )
    [line] = logs
    assert (line["failure_type"], line["error"], line["outcome"]) == (
        "domain_error",
        "x",
        "skipped",
    )


def test_log_failure_refuses_cancellation() -> None:
    with pytest.raises(TypeError):
        log_failure(get_logger("bot"), KeyboardInterrupt(), operation="op")


def test_log_failure_of_a_chain_names_the_deciding_exception() -> None:
    try:
        try:
            raise ConnectionResetError(104, "reset by peer")
        except ConnectionResetError:
            raise RuntimeError("query failed")  # noqa: B904
    except RuntimeError as exc:
        with capture_logs() as logs:
            log_failure(get_logger("storage"), exc, operation="storage.credit")
    [line] = logs
    assert (line["failure_type"], line["error_type"]) == ("infra_error", "ConnectionResetError")


# -- correlation ----------------------------------------------------------------------------


def test_correlation_binds_and_restores() -> None:
    assert current_correlation_id() == "-"
    with correlation("outer", actor="bot") as outer:
        assert outer == "outer"
        with correlation() as inner:
            assert inner != "outer"
            assert current_correlation_id() == inner
            assert structlog.contextvars.get_contextvars()["actor"] == "bot"
        assert current_correlation_id() == "outer"
    assert current_correlation_id() == "-"
    assert "actor" not in structlog.contextvars.get_contextvars()


def test_new_correlation_ids_are_short_unique_hex() -> None:
    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


async def test_correlation_is_per_task() -> None:
    seen: dict[str, str] = {}

    async def unit(name: str) -> None:
        with correlation(name):
            await trio.lowlevel.checkpoint()
            seen[name] = current_correlation_id()

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(unit, name)
    assert seen == {"a": "a", "b": "b", "c": "c"}
    assert current_correlation_id() == "-"


# -- rendering ------------------------------------------------------------------------------


def test_json_lines_have_timestamp_level_component_event() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    log = get_logger("supervisor")
    with correlation("c1"):
        log.info("starting", actors=["bot", "http"])
    structlog.get_logger().warning("no component")
    first, second = json_lines(stream)
    assert list(first)[:4] == ["timestamp", "level", "component", "event"]
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert (first["level"], first["component"], first["event"]) == (
        "info",
        "supervisor",
        "starting",
    )
    assert first["correlation_id"] == "c1"
    assert first["actors"] == ["bot", "http"]
    assert second["component"] == "-"


def test_json_failure_line_with_traceback_as_a_string() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    with correlation("c2"):
        log_failure(
            get_logger("bot"), raise_and_catch(ZeroDivisionError("division")), operation="x"
        )
    [line] = json_lines(stream)
    assert line.keys() >= FAILURE_FIELDS
    assert (line["level"], line["failure_type"], line["correlation_id"]) == ("error", "bug", "c2")
    assert isinstance(line["exception"], str)
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ZeroDivisionError: division" in line["exception"]


def test_auto_is_json_off_a_terminal_and_console_on_one() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe = io.StringIO()
    configure_logging(fmt="auto", stream=pipe)
    get_logger("bot").info("hello")
    assert json.loads(pipe.getvalue())["event"] == "hello"

    terminal = Terminal()
    configure_logging(fmt="auto", stream=terminal)
    get_logger("bot").info("hello")
    text = terminal.getvalue()
    assert "hello" in text and "bot" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_level_filters() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=stream)
    log = get_logger("bot")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [line["event"] for line in json_lines(stream)] == ["w", "e"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging(fmt="xml")
    with pytest.raises(ValueError):
        configure_logging(level="loud")


def test_configure_logging_again_takes_over() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(fmt="json", stream=first)
    module_level = get_logger("alerts")  # created once, used after reconfiguration
    bound_early = get_logger("bot").bind(actor="bot")
    configure_logging(fmt="json", stream=second, secrets=[SECRET])
    module_level.info("one", key=SECRET)
    bound_early.info("two", key=SECRET)
    assert first.getvalue() == ""
    assert [(line["event"], line["key"]) for line in json_lines(second)] == [
        ("one", REDACTED),
        ("two", REDACTED),
    ]
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_OurHandler"]
    assert len(ours) == 1  # the earlier handler was replaced, not doubled


def test_library_lines_are_structured_and_redacted() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, secrets=[SECRET])
    library = logging.getLogger("aiogram.dispatcher")
    library.warning("request to https://api.telegram.org/bot%s/getMe failed", TOKEN)
    try:
        raise ConnectionError(f"key {SECRET} refused")
    except ConnectionError:
        library.exception("polling error")
    logging.getLogger("httpx").info("HTTP Request: GET ... 200 OK")  # held to WARNING
    first, second = json_lines(stream)
    assert first["component"] == "aiogram.dispatcher"
    assert first["level"] == "warning"
    assert first["event"] == f"request to https://api.telegram.org/bot{REDACTED}/getMe failed"
    assert SECRET not in second["exception"] and REDACTED in second["exception"]


# -- redaction ------------------------------------------------------------------------------


class RuntimeDirWarning(UserWarning):
    """Named like platformdirs' warning when XDG_RUNTIME_DIR is not set."""


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeDirWarning, stacklevel=1)


def test_library_warnings_are_json_lines() -> None:
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_logging(fmt="json", stream=stream, secrets=[SECRET])
        _warn(f"XDG_RUNTIME_DIR is not set, falling back ({SECRET}, bot{TOKEN})")
    [line] = json_lines(stream)
    assert list(line)[:4] == ["timestamp", "level", "component", "event"]
    assert (line["level"], line["component"], line["category"]) == (
        "warning",
        "warnings",
        "RuntimeDirWarning",
    )
    assert line["event"] == f"XDG_RUNTIME_DIR is not set, falling back ({REDACTED}, bot{REDACTED})"
    assert line["source"].startswith(__file__ + ":")


def test_warnings_before_the_logging_is_configured_are_held_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        hold_warnings()
        _warn("raised while importing")
        assert capsys.readouterr().err == ""  # not written by Python as plain text
        configure_logging(fmt="json", stream=stream)
        _warn("raised while running")
    assert [(line["event"], line["category"]) for line in json_lines(stream)] == [
        ("raised while importing", "RuntimeDirWarning"),
        ("raised while running", "RuntimeDirWarning"),
    ]


def test_held_warnings_are_bounded() -> None:
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        hold_warnings()
        for number in range(HELD_AT_MOST + 5):
            _warn(f"early {number}")
        configure_logging(fmt="json", stream=stream)
    lines = json_lines(stream)
    assert [line["event"] for line in lines[:-1]] == [
        f"early {number}" for number in range(5, HELD_AT_MOST + 5)
    ]
    assert (lines[-1]["event"], lines[-1]["count"]) == ("early warnings dropped", 5)


def test_a_warning_shown_on_a_given_stream_stays_there_and_reset_gives_python_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime.logs._warnings, "_original", lambda *args: shown.append(args))
    stream, own = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        configure_logging(fmt="json", stream=stream)
        warnings.showwarning("for a stream", RuntimeDirWarning, "lib.py", 7, file=own)
        assert shown == [("for a stream", RuntimeDirWarning, "lib.py", 7, own, None)]
        assert stream.getvalue() == ""
        reset_logging()
        assert warnings.showwarning is runtime.logs._warnings._original


def test_redaction_everywhere_in_a_json_line() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, secrets=[SECRET])
    log = get_logger("payments")
    try:
        raise DependencyError(f"provider refused key {SECRET} via bot{TOKEN}")
    except DependencyError as exc:
        failure = log_failure(
            log,
            RuntimeError(f"wrapped {TOKEN}"),
            operation="payment_finalization",
            request={"headers": {"Crypto-Pay-API-Token": SECRET}, "path": [f"/bot{TOKEN}/x"]},
            cause=exc,
        )
    log.info(f"event text with {SECRET}", **{f"key-{SECRET}": 1})
    text = stream.getvalue()
    assert SECRET not in text
    assert TOKEN not in text
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in text
    line, info = json_lines(stream)
    assert failure.message == f"wrapped {TOKEN}"  # the Failure itself is data, not a log line
    assert line["error"] == f"wrapped {REDACTED}"
    assert line["request"] == {
        "headers": {"Crypto-Pay-API-Token": REDACTED},
        "path": [f"/bot{REDACTED}/x"],
    }
    assert line["cause"] == f"DependencyError('provider refused key {REDACTED} via bot{REDACTED}')"
    assert f"RuntimeError: wrapped {REDACTED}" in line["exception"]
    assert info["event"] == f"event text with {REDACTED}"
    assert info[f"key-{REDACTED}"] == 1


def test_redaction_of_a_traceback_in_console_format() -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream, secrets=[SECRET])
    try:
        raise ValueError(f"bad config {SECRET} {TOKEN}")
    except ValueError as exc:
        log_failure(get_logger("config"), exc, operation="load")
    text = stream.getvalue()
    assert "Traceback" in text
    assert SECRET not in text and TOKEN not in text


def test_add_secrets_after_configuration() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    add_secrets(["late-secret-value", ""])
    get_logger("bot").info("x", value="a late-secret-value b", n=3, ok=True, none=None)
    [line] = json_lines(stream)
    assert (line["value"], line["n"], line["ok"], line["none"]) == (
        f"a {REDACTED} b",
        3,
        True,
        None,
    )


def test_configuration_replaces_the_secrets() -> None:
    configure_logging(fmt="json", stream=io.StringIO(), secrets=["old-secret"])
    configure_logging(fmt="json", stream=io.StringIO(), secrets=["new-secret"])
    assert redact_text("old-secret new-secret") == f"old-secret {REDACTED}"


def test_redact_processor_is_a_plain_processor() -> None:
    add_secrets([SECRET, f"{SECRET}-longer"])
    event = {
        "event": f"token {TOKEN}",
        "nested": {"deep": [{"x": (SECRET, 1)}], "set": {SECRET}},
        "level": FailureType.BUG,
        "obj": DomainError(SECRET),
        "plain": DomainError("harmless"),
        "exc_info": True,
        "long": f"{SECRET}-longer",
    }
    result = redact_processor(None, "info", event)
    assert result["event"] == f"token {REDACTED}"
    assert result["nested"] == {"deep": [{"x": (REDACTED, 1)}], "set": [REDACTED]}
    assert result["level"] is FailureType.BUG  # untouched values keep their type
    assert result["obj"] == f"DomainError('{REDACTED}')"
    assert result["plain"] is event["plain"]
    assert result["exc_info"] is True
    assert result["long"] == REDACTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TOKEN, REDACTED),
        (f"https://api.telegram.org/bot{TOKEN}/getUpdates", f"https://api.telegram.org/bot{REDACTED}/getUpdates"),
        ("12:30 meeting", "12:30 meeting"),
        ("id 42: short:value", "id 42: short:value"),
        ("user 5:" + "a" * 29, "user 5:" + "a" * 29),
        ("user 5:" + "a" * 30, f"user {REDACTED}"),
    ],
)  # fmt: skip
def test_token_shape(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_deep_nesting_is_still_redacted() -> None:
    add_secrets([SECRET])
    value: Any = SECRET
    for _ in range(20):
        value = [value]
    result = redact_processor(None, "info", {"v": value})
    assert SECRET not in repr(result)
