"""Plans' limits against what their backends declare, checked when the config is."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from runtime.app import check_configuration
from runtime.catalog import Catalog
from runtime.config import ConfigError, ConfigProblem, Settings, load_settings
from runtime.plugin_api import BackendCapabilities, capabilities_of

MARZBAN = {"base_url": "https://panel.example.com", "username": "bot", "password": "pw-secret"}
REMNAWAVE = {
    "base_url": "https://rw.example.com",
    "api_token": "rw-token",
    "internal_squads": ["0b3c5f4e-7a6d-4c1b-9e8f-2a1d3c4b5e6f"],
}


def plan(backend: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "title": {"en": "Month"},
        "duration_days": 30,
        "backend": backend,
        "prices": {"cryptobot": {"USD": 300}},
    }
    values.update(changes)
    return values


def settings(plans: dict[str, Any], **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "telegram": {"enabled": False},
            "http": {"enabled": False, "public": {"enabled": False}},
            "plugins": {
                "settings": {
                    "marzban": MARZBAN,
                    "remnawave": REMNAWAVE,
                    "cryptobot": {"token": "12345:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
                }
            },
            "plans": plans,
            **extra,
        }
    )


def limit_problems(found: Settings) -> list[ConfigProblem]:
    try:
        check_configuration(found, environ={})
    except ConfigError as exc:
        return [p for p in exc.problems if p.path.endswith(("_limit", "_limit_gb"))]
    return []


def test_a_device_limit_on_a_backend_without_one_is_refused_at_config_time() -> None:
    found = limit_problems(
        settings({"month": plan("marzban", device_limit=3), "ok": plan("marzban")})
    )
    assert found == [
        ConfigProblem(
            "plans.month.device_limit",
            "VPN backend 'marzban' cannot enforce a device limit:"
            " set 0 (unlimited) or use a backend that can",
        )
    ]


def test_limits_a_backend_enforces_pass() -> None:
    check_configuration(
        settings(
            {
                "rw": plan("remnawave", device_limit=3, traffic_limit_gb=50),
                "mz": plan("marzban", traffic_limit_gb=50),
            }
        ),
        environ={},
    )


def test_a_backend_that_declares_nothing_serves_unlimited_plans_only() -> None:
    catalog = Catalog.from_settings(
        settings(
            {"capped": plan("tiny", traffic_limit_gb=5), "free": plan("tiny")},
            trial={"enabled": True, "backend": "tiny", "traffic_limit_gb": 1},
        )
    )
    found = catalog.problems(backends={"tiny": capabilities_of(object())}, providers=["cryptobot"])
    assert [p.path for p in found] == ["plans.capped.traffic_limit_gb", "trial.traffic_limit_gb"]
    assert "'tiny' cannot enforce a traffic limit" in found[0].reason


def test_the_trials_default_device_limit_stays_valid_on_any_backend() -> None:
    catalog = Catalog.from_settings(
        settings({}, trial={"enabled": True, "backend": "marzban", "device_limit": 1})
    )
    declared = {"marzban": BackendCapabilities(traffic_limit=True)}
    assert catalog.problems(backends=declared, providers=[]) == []


def test_plans_are_ordered_by_order_then_by_config_order() -> None:
    catalog = Catalog.from_settings(
        settings(
            {
                "a": plan("marzban"),
                "b": plan("marzban", order=2),
                "c": plan("marzban"),
                "d": plan("marzban", order=1),
            }
        )
    )
    assert [p.id for p in catalog.plans] == ["d", "b", "a", "c"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('audience = ["vip"]', "plans.m.audience[0]"),
        ("audience = []", "plans.m.audience"),
        ('order = "1"', "plans.m.order"),
    ],
)
def test_bad_plan_keys_are_named(tmp_path: pathlib.Path, text: str, path: str) -> None:
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        '[plans.m]\ntitle = { en = "M" }\nduration_days = 30\nbackend = "marzban"\n'
        f"prices = {{ stars = {{ XTR = 5 }} }}\n{text}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert path in [p.path for p in caught.value.problems]


def test_a_repeated_package_id_is_named(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "vpnbot.toml"
    package = '{ id = "gb10", gb = 10, prices = { stars = { XTR = 50 } } }'
    config.write_text(f"[traffic]\npackages = [{package}, {package}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert [p.path for p in caught.value.problems] == ["traffic.packages.1.id"]


def test_traffic_packages_are_checked_against_the_providers_and_plans() -> None:
    found = settings(
        {"mz": plan("marzban", traffic_limit_gb=50)},
        traffic={
            "packages": [
                {"id": "ok", "gb": 10, "prices": {"cryptobot": {"USD": 100}}},
                {"id": "gone", "gb": 10, "prices": {"stars": {"XTR": 5}}},
                {"id": "two", "gb": 10, "prices": {"cryptobot": {"USD": 1, "EUR": 1}}},
                {"id": "asset", "gb": 10, "prices": {"cryptobot": {"TON": 1}}},
            ]
        },
    )
    with pytest.raises(ConfigError) as caught:
        check_configuration(found, environ={})
    assert [p.path for p in caught.value.problems] == ["traffic.packages[3].prices.cryptobot.TON"]
    packages = found.traffic.packages[:3]
    fixed = found.model_copy(
        update={"traffic": found.traffic.model_copy(update={"packages": packages})}
    )
    with pytest.raises(ConfigError) as caught:
        check_configuration(fixed, environ={})
    assert [(p.path, p.reason) for p in caught.value.problems] == [
        (
            "traffic.packages[1].prices.stars",
            "no payment provider 'stars' is loaded (loaded: cryptobot)",
        ),
        ("traffic.packages[2].prices.cryptobot", "give one currency per provider"),
    ]


def test_traffic_packages_without_a_limited_plan_are_refused() -> None:
    found = settings(
        {"mz": plan("marzban")},
        traffic={"packages": [{"id": "ok", "gb": 10, "prices": {"cryptobot": {"USD": 100}}}]},
    )
    with pytest.raises(ConfigError) as caught:
        check_configuration(found, environ={})
    assert [p.path for p in caught.value.problems] == ["traffic.packages"]
