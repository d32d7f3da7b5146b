"""``[database] dsn``: one host or several, and what makes the bot land where it cannot write."""

from __future__ import annotations

import pytest

from runtime.config import ConfigError, load_settings

SECRET = "s3cret-Pa55"

ACCEPTED = [
    "postgresql://vpnbot:replace-me@127.0.0.1:5432/vpnbot",
    "postgres://vpnbot@db.internal/vpnbot",
    f"postgresql://vpnbot:{SECRET}@pg1:5432,pg2:5433/vpnbot?target_session_attrs=read-write",
    "postgresql://vpnbot@pg1,pg2,pg3/vpnbot?target_session_attrs=primary",
    "postgresql://vpnbot@[::1]:5432,[fd00::2]/vpnbot?target_session_attrs=read-write",
    "postgresql://vpnbot@/vpnbot?host=/run/pg-a,/run/pg-b&port=5432,5433"
    "&target_session_attrs=read-write",
    "postgresql://postgres@/test?host=/var/run/postgresql",
    "postgresql://vpnbot@pg1/vpnbot?target_session_attrs=any&sslmode=require",
]

REFUSED = {
    "mysql://vpnbot@pg1/vpnbot": "must be a postgresql://",
    "postgresql://vpnbot@pg1:5432,pg2:5432/vpnbot": "lists 2 hosts without "
    "target_session_attrs=read-write",
    "postgresql://vpnbot@/vpnbot?host=/run/a,/run/b": "lists 2 hosts without",
    "postgresql://vpnbot@pg1:99999/vpnbot": "has a malformed port",
    "postgresql://vpnbot@pg1:5432,pg2:x/vpnbot?target_session_attrs=read-write": "malformed port",
    "postgresql://vpnbot@pg1:5432,/vpnbot?target_session_attrs=read-write": "empty host",
    "postgresql://vpnbot@:5432/vpnbot": "a port without a host",
    "postgresql://vpnbot@pg1/vpnbot?target_session_attrs=standby": "refuses its writes",
    "postgresql://vpnbot@pg1/vpnbot?target_session_attrs=prefer-standby": "refuses its writes",
    "postgresql://vpnbot@pg1/vpnbot?target_session_attrs=writable": "must be one of",
    "postgresql://vpnbot@pg1/vpnbot?host=pg2": "names hosts twice",
    "postgresql://vpnbot@pg1:5432/vpnbot?port=5433": "names ports twice",
    "postgresql://vpnbot@/vpnbot?host=a,b&port=1,2,3&target_session_attrs=read-write": "3 ports "
    "for 2 hosts",
    "postgresql://vpnbot@pg1/vpnbot?sslmode=require&sslmode=disable": "repeats query",
    "postgresql://vpnbot@[::1/vpnbot": "malformed host",
}


@pytest.mark.parametrize("dsn", ACCEPTED)
def test_single_and_multi_host_urls_that_find_a_writable_server_are_accepted(dsn: str) -> None:
    settings = load_settings(None, environ={"VPNBOT_DATABASE__DSN": dsn})
    assert settings.database.dsn is not None
    assert settings.database.dsn.get_secret_value() == dsn


@pytest.mark.parametrize(("dsn", "reason"), REFUSED.items())
def test_urls_asyncpg_would_refuse_or_send_to_a_standby_are_refused_at_load(
    dsn: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"VPNBOT_DATABASE__DSN": dsn})
    [problem] = caught.value.problems
    assert problem.path == "database.dsn"
    assert reason in problem.reason


def test_a_refused_url_does_not_show_its_password() -> None:
    dsn = f"postgresql://vpnbot:{SECRET}@pg1:5432,pg2:5432/vpnbot"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"VPNBOT_DATABASE__DSN": dsn})
    assert SECRET not in str(caught.value)
    assert all(SECRET not in problem.reason for problem in caught.value.problems)
