"""Python warnings as log lines, so that every line of a JSON log is JSON.

Libraries warn through ``warnings.warn`` (platformdirs' ``RuntimeDirWarning`` when the
embedded PostgreSQL starts without ``XDG_RUNTIME_DIR``, deprecations at import time), which
Python writes to stderr as two lines of text. ``capture_warnings`` routes them through
structlog instead: one ``warning`` line with the ``category`` and the ``source`` location.

Warnings raised before the logging is configured (while the command line imports the
libraries) are held and logged once ``configure_logging`` runs; a process that never
configures it writes them the usual way when it exits.
"""

from __future__ import annotations

import atexit
import threading
import warnings
from collections import deque
from typing import TextIO

from structlog.typing import FilteringBoundLogger

HELD_AT_MOST = 100
"""Early warnings kept until the logging is configured; more are counted, not kept."""

_original = warnings.showwarning
_lock = threading.Lock()
_held: deque[warnings.WarningMessage] = deque(maxlen=HELD_AT_MOST)
_dropped = 0
_logger: FilteringBoundLogger | None = None
_exit_hook = False


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    global _dropped
    if file is not None:  # someone asked for this warning on a stream of their own
        _original(message, category, filename, lineno, file, line)
        return
    record = warnings.WarningMessage(message, category, filename, lineno)
    with _lock:
        logger = _logger
        if logger is None:
            if len(_held) == HELD_AT_MOST:
                _dropped += 1
            _held.append(record)
            return
    _log(logger, record)


def _log(logger: FilteringBoundLogger, record: warnings.WarningMessage) -> None:
    logger.warning(
        str(record.message),
        category=record.category.__name__,
        source=f"{record.filename}:{record.lineno}",
    )


def hold_warnings() -> None:
    """Route warnings to the log from now on, holding them until it is configured.

    Call it before importing the libraries, so their import-time warnings are held too.
    """
    global _exit_hook
    warnings.showwarning = _show
    if not _exit_hook:
        atexit.register(_write_unlogged)
        _exit_hook = True


def capture_warnings(logger: FilteringBoundLogger) -> None:
    """Log warnings with ``logger`` from now on, and the ones held so far."""
    global _logger, _dropped
    warnings.showwarning = _show
    with _lock:
        _logger = logger
        held, dropped = list(_held), _dropped
        _held.clear()
        _dropped = 0
    for record in held:
        _log(logger, record)
    if dropped:
        logger.warning("early warnings dropped", count=dropped, kept=HELD_AT_MOST)


def release_warnings() -> None:
    """Stop routing warnings: Python writes them to stderr again (for tests)."""
    global _logger
    with _lock:
        _logger = None
    if warnings.showwarning is _show:
        warnings.showwarning = _original


def _write_unlogged() -> None:
    with _lock:
        held = list(_held) if _logger is None else []
        _held.clear()
    for record in held:
        _original(record.message, record.category, record.filename, record.lineno)
