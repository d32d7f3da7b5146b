"""One short line per event on a terminal: what an operator reads in the sandbox.

``06:21:05 info  bot        broadcast finished  broadcast_id=1 delivered=3 blocked=0``

Time (UTC, to the second), level, component (a library's top package), event, then
key=value pairs while they fit in ``width`` columns: for a failure, what went wrong and
where first; otherwise the event's own values first, ``operation`` and the correlation id
last, ``outcome=success`` not at all. Long values are cut with ``…`` and the pairs left out
are counted (``+2``). A traceback follows on its own lines, whole. Production writes JSON.
"""

from __future__ import annotations

from typing import Any

from structlog.typing import EventDict, WrappedLogger

WIDTH = 100
VALUE_WIDTH = 36
EVENT_WIDTH = 56
COMPONENT_WIDTH = 10

_HIDDEN = frozenset({"timestamp", "level", "component", "event", "exception", "stack"})
_FAILURE_FIRST = ("failure_type", "outcome", "operation", "error_type", "error")
_FIRST = ("outcome",)
_LAST = ("operation", "correlation_id")
_SHORT_LEVEL = {"warning": "warn", "critical": "crit", "exception": "error"}
_COLOUR = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warn": "\x1b[33m",
    "error": "\x1b[31m",
    "crit": "\x1b[1;31m",
}
_RESET = "\x1b[0m"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line: newlines and runs of spaces become one space
    return text if len(text) <= width else text[: width - 1] + "…"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = _cut(text, VALUE_WIDTH)
    return repr(text) if text == "" or " " in text or "=" in text else text


class ConsoleLines:
    """A structlog renderer: the compact line described above."""

    def __init__(self, *, colors: bool = False, width: int = WIDTH) -> None:
        self.colors = colors
        self.width = width

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        timestamp = str(event_dict.get("timestamp", ""))
        clock = timestamp[11:19] if len(timestamp) >= 19 else timestamp
        level = str(event_dict.get("level", method_name)).lower()
        level = _SHORT_LEVEL.get(level, level)
        component = str(event_dict.get("component", "-")).split(".")[0]
        component = _cut(component, COMPONENT_WIDTH)
        event = _cut(str(event_dict.get("event", "")), EVENT_WIDTH)
        head = f"{clock} {level:<5} {component:<{COMPONENT_WIDTH}} {event}"
        line = self._pairs(head, event_dict)
        if self.colors:
            colour = _COLOUR.get(level, "")
            line = line.replace(f" {level:<5} ", f" {colour}{level:<5}{_RESET} ", 1)
        for block in ("stack", "exception"):
            if event_dict.get(block):
                line += "\n" + str(event_dict[block]).rstrip("\n")
        return line

    def _pairs(self, head: str, event_dict: EventDict) -> str:
        first = _FAILURE_FIRST if "failure_type" in event_dict else _FIRST
        last = tuple(k for k in _LAST if k not in first)
        keys = [k for k in first if k in event_dict]
        keys += [k for k in event_dict if k not in _HIDDEN and k not in first and k not in last]
        keys += [k for k in last if k in event_dict]
        if event_dict.get("outcome") == "success":
            keys.remove("outcome")
        line = head
        shown = 0
        for index, key in enumerate(keys):
            pair = f"{_cut(str(key), VALUE_WIDTH)}={_value(event_dict[key])}"
            rest = len(keys) - index - 1
            marker = len(f"  +{rest}") if rest else 0
            separator = "  " if shown == 0 else " "
            if len(line) + len(separator) + len(pair) + marker > self.width:
                break
            line += separator + pair
            shown += 1
        left = len(keys) - shown
        if left:
            line += f"  +{left}"
        return line
