"""The bot's HTTP session to the Bot API."""

from __future__ import annotations

from runtime.bot._dispatch import JsonBodySession
from runtime.plugin_api.peer import shared_tls_context


def test_sessions_verify_with_the_one_tls_context_of_the_process() -> None:
    """aiogram builds a TLS context (a copy of the whole CA bundle) per session; ours share
    the process's one."""
    first, second = JsonBodySession(), JsonBodySession()
    assert first._connector_init["ssl"] is shared_tls_context()
    assert second._connector_init["ssl"] is shared_tls_context()
