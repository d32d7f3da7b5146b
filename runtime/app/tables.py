"""Plain-text tables for the command line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.plugin_api import LoadedPlugins


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def _ago(iso: str | None, *, now: datetime) -> str:
    if not iso:
        return "-"
    delta = (datetime.fromisoformat(iso) - now).total_seconds()
    return f"in {delta:.0f}s" if delta >= 0 else f"{-delta:.0f}s ago"


def render_status(document: dict[str, Any], *, now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    rows = []
    for actor in document.get("actors", []):
        failure = actor.get("last_failure") or {}
        last = f"{failure['type']}: {failure['message']}"[:60] if failure else "-"
        state = actor["state"] + (" (degraded)" if actor.get("degraded") else "")
        rows.append(
            [
                actor["name"],
                state,
                "yes" if actor.get("critical") else "no",
                str(actor.get("restarts", 0)),
                last,
                _ago(actor.get("next_restart_at"), now=moment),
            ]
        )
    header = f"system: {document.get('state', '?')}   ready: {document.get('ready', False)}"
    body = table(["ACTOR", "STATE", "CRITICAL", "RESTARTS", "LAST FAILURE", "NEXT RESTART"], rows)
    return f"{header}\n\n{body}"


def render_plugins(loaded: LoadedPlugins) -> str:
    rows = [
        [row["name"], row["status"], row["source"], row["module"], row["provides"] or row["error"]]
        for row in loaded.describe()
    ]
    return table(["PLUGIN", "STATUS", "SOURCE", "MODULE", "PROVIDES / PROBLEM"], rows)
