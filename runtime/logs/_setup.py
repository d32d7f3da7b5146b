"""Logging setup: structlog for our lines, the stdlib loggers and the warnings of libraries
routed through it.

Every line has an ISO 8601 UTC ``timestamp``, a ``level``, a ``component`` (``"-"`` when
nobody bound one; the logger name for library lines) and an ``event``; context bound with
``structlog.contextvars`` (``correlation_id``...) is merged in. Tracebacks are rendered as
text (the ``exception`` field) before the secrets are masked, so they are masked too.

``configure_logging`` may be called again at any time (tests do): it keeps one processor
list and one output object, updated in place, so loggers bound after an earlier call follow
the new settings. Loggers handed out by ``get_logger`` resolve the settings on every call.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from ._redact import redact_processor, set_secrets
from ._warnings import capture_warnings, release_warnings

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("auto", "json", "console")

_QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "pgserver")
"""Libraries that log every request at INFO; they are held to WARNING at least."""
_PER_UPDATE_LOGGER = "aiogram.event"
"""aiogram's logger for its "Update id=... is handled" line, one per update at INFO."""

_lock = threading.Lock()
_stream: TextIO | None = None
_PROCESSORS: list[Processor] = []
"""The list structlog holds; changed in place so bound loggers see every reconfiguration."""


def _current_stream() -> TextIO:
    # Looked up at each write, so a replaced sys.stderr (pytest's capture) is honoured.
    return _stream if _stream is not None else sys.stderr


class _Output:
    """The structlog logger: writes each rendered line to the configured stream."""

    def msg(self, message: str) -> None:
        stream = _current_stream()
        with _lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg


_OUTPUT = _Output()


def _output_factory(*args: Any) -> _Output:
    return _OUTPUT


class _StreamProxy:
    """A file-like object for the stdlib handler that writes to the current stream."""

    def write(self, text: str) -> int:
        stream = _current_stream()
        with _lock:
            return stream.write(text)

    def flush(self) -> None:
        _current_stream().flush()


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installs on the root logger, to replace it later."""


class _PerUpdateToDebug(logging.Filter):
    """aiogram's per-update lines are DEBUG lines: at INFO they were half of all output,
    and the bot logs what it does with each update itself."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Update id="):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def _demote_per_update_lines(level: int | None) -> None:
    """Install (or, with None, remove) the filter on aiogram's per-update logger."""
    logger = logging.getLogger(_PER_UPDATE_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, _PerUpdateToDebug)]:
        logger.removeFilter(old)
    if level is not None:
        logger.addFilter(_PerUpdateToDebug(level))


def _default_component(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("component", "-")
    return event_dict


def _library_component(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict.setdefault("component", record.name)
    return event_dict


_LEADING_KEYS = ("timestamp", "level", "component", "event")


def _leading_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Timestamp, level, component and event first: JSON lines read left to right."""
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


class _JsonLines:
    """One JSON object per line, leading keys first."""

    def __init__(self) -> None:
        self._render = structlog.processors.JSONRenderer(ensure_ascii=False)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        rendered = self._render(logger, method_name, _leading_keys(logger, method_name, event_dict))
        return str(rendered)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _console_lines() -> Processor:
    """The terminal's renderer, imported only for a terminal (a service logs JSON)."""
    from ._console import ConsoleLines

    return ConsoleLines(colors=_is_tty(_current_stream()))


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up logging for the process; safe to call again.

    ``fmt``: ``"json"`` (one JSON object per line), ``"console"`` (one short line per
    event, 100 columns at most, coloured on a terminal) or ``"auto"`` (console on a
    terminal, JSON otherwise). ``level``: ``debug``,
    ``info``, ``warning``, ``error`` or ``critical``. ``secrets`` replaces the values masked
    in every line (``add_secrets`` adds more later). ``stream`` defaults to ``sys.stderr``.
    """
    global _stream
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    level_number = LEVELS.get(level.lower())
    if level_number is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")

    set_secrets(secrets)
    _stream = stream
    console = fmt == "console" or (fmt == "auto" and _is_tty(_current_stream()))
    renderer: Processor = _console_lines() if console else _JsonLines()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)

    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        _default_component,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_processor,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        context_class=dict,
        logger_factory=_output_factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(level_number, timestamper, renderer)
    capture_warnings(get_logger("warnings"))


def _route_stdlib_logging(level: int, timestamper: Processor, renderer: Processor) -> None:
    """Library lines (aiogram, asyncpg, hypercorn, httpx) get the same shape and masking."""
    handler = _OurHandler(cast(TextIO, _StreamProxy()))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                timestamper,
                _library_component,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    _demote_per_update_lines(level)


def reset_logging() -> None:
    """Undo ``configure_logging``: structlog's defaults, no root handler of ours, no secrets,
    warnings written by Python again."""
    global _stream
    release_warnings()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _demote_per_update_lines(None)
    set_secrets(())
    _stream = None
    structlog.reset_defaults()
    # Loggers bound earlier hold our list: give it structlog's default pipeline.
    _PROCESSORS[:] = structlog.get_config()["processors"]


def get_logger(component: str, **bound: Any) -> FilteringBoundLogger:
    """A logger bound with ``component`` (and ``bound``), following the current settings.

    It may be created at import time: it resolves the configuration on each call.
    """
    return cast(FilteringBoundLogger, structlog.get_logger(component=component, **bound))
