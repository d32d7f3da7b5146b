"""What Apprise logged while one thread sent one alert, kept out of the process's log.

Apprise says why a delivery failed only in its log (``notify`` returns ``False``), and its
lines may carry the service URL, which holds the token. Its logger is cut off from ours;
each sending thread collects its own warnings and errors, which the sink then redacts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

_MAX_LINES = 5
_MAX_LINE_CHARACTERS = 300


class _PerThread(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._lines: dict[int, list[str]] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            lines = self._lines.get(record.thread or 0)
        if lines is not None and len(lines) < _MAX_LINES:
            with contextlib.suppress(Exception):
                lines.append(record.getMessage()[:_MAX_LINE_CHARACTERS])

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[str]]:
        ident = threading.get_ident()
        lines: list[str] = []
        with self._guard:
            self._lines[ident] = lines
        try:
            yield lines
        finally:
            with self._guard:
                self._lines.pop(ident, None)


_HANDLER = _PerThread()
_installed = threading.Lock()


def collecting() -> contextlib.AbstractContextManager[list[str]]:
    """Within this block, this thread's Apprise warnings are appended to the list yielded."""
    with _installed:
        logger = logging.getLogger("apprise")
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
            logger.propagate = False
            # Its own level, not the root's: the reasons are wanted whatever vpnbot logs.
            logger.setLevel(logging.WARNING)
    return _HANDLER.collecting()
