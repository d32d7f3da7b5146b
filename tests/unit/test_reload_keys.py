"""What a reload compares, and which keys wait for a restart."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.app._reload import needs_restart
from runtime.config import ConfigError, Settings
from runtime.config._diff import changed_keys, with_kept

TOKEN = "123:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def settings(price: int = 10, **sections: Any) -> Settings:
    return Settings.model_validate(
        {
            "telegram": {"token": TOKEN},
            "plans": {
                "month": {
                    "title": {"en": "Month"},
                    "duration_days": 30,
                    "backend": "marzban",
                    "prices": {"stars": {"XTR": price}},
                }
            },
            **sections,
        }
    )


def test_the_changed_keys_are_named_never_their_values() -> None:
    old = settings(database={"dsn": "postgresql://a:pw-one@h/d"})
    new = settings(20, database={"dsn": "postgresql://a:pw-two@h/d"})
    keys = changed_keys(old, new)
    assert keys == ["database.dsn", "plans.month.prices.stars.XTR"]
    assert not any("pw-" in key for key in keys)
    assert changed_keys(old, old) == []


def test_a_table_added_is_named_by_the_keys_it_sets() -> None:
    new = settings(actors={"notifier": {"enabled": False}})
    assert changed_keys(settings(), new) == ["actors.notifier.enabled"]


@pytest.mark.parametrize(
    ("path", "waits"),
    [
        ("database.dsn", True),
        ("database.pool_max_size", True),
        ("http.port", True),
        ("http.public.port", True),
        ("telegram.token", True),
        ("bot.mode", True),
        ("service.log_level", True),
        ("plugins.paths", True),
        ("actors.notifier.enabled", True),
        ("actors.http.shutdown_timeout_seconds", True),
        ("plans.month.prices.stars.XTR", False),
        ("plans.month.title.en", False),
        ("trial.duration_hours", False),
        ("notifier.rate_per_second", False),
        ("alerts.throttle_seconds", False),
        ("alerts.webhook.url", False),
        ("plugins.settings.marzban.base_url", False),
        ("actors.notifier.interval_seconds", False),
        ("telegram.admin_chat_ids", False),
        ("databases", False),
    ],
)
def test_which_keys_wait_for_a_restart(path: str, waits: bool) -> None:
    assert needs_restart(path) is waits


def test_the_kept_keys_keep_their_running_values_and_the_rest_is_new() -> None:
    old = settings(database={"dsn": "postgresql://a@h/old"})
    new = settings(30, database={"dsn": "postgresql://a@h/new"}, actors={"x": {"enabled": False}})
    mixed = with_kept(new, old, ["database.dsn", "actors.x.enabled"])
    assert changed_keys(old, mixed) == ["plans.month.prices.stars.XTR"]
    assert mixed.database.dsn is not None
    assert mixed.database.dsn.get_secret_value().endswith("/old")
    assert mixed.telegram.token is not None and mixed.telegram.token.get_secret_value() == TOKEN


def test_a_mix_that_is_not_a_configuration_is_refused() -> None:
    old = settings(
        bot={
            "mode": "webhook",
            "webhook_url": "https://x.example/hook",
            "webhook_secret": "s3cret-value",
        }
    )
    new = settings()
    with pytest.raises(ConfigError) as refused:
        with_kept(new, old, ["bot.mode"])
    assert any(p.path.startswith("bot.webhook") for p in refused.value.problems)
