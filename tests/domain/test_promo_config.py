"""Promo codes from the configuration: checked with the key named, created at start once,
and an admin's change to them kept."""

from __future__ import annotations

import pathlib

import pytest

from runtime.config import ConfigError, Settings, load_settings
from runtime.promo import seed_codes
from runtime.sandbox import sandbox_settings
from runtime.storage import Database, grants
from runtime.storage import promo as store
from runtime.storage.promo import Kind

PLANS = """
[plans.month]
title = { en = "1 month" }
duration_days = 30
backend = "marzban"
prices = { stars = { XTR = 150 } }
"""


def problems(tmp_path: pathlib.Path, text: str) -> dict[str, str]:
    path = tmp_path / "vpnbot.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return {p.path: p.reason for p in caught.value.problems}


def test_a_wrong_code_is_named_by_its_key(tmp_path: pathlib.Path) -> None:
    found = problems(
        tmp_path,
        "[promo]\nmin_price = { rub = 5 }\n"
        '[promo.codes.spring]\nkind = "days"\nvalue = 0\n'
        '[promo.codes.x]\nkind = "days"\nvalue = 1\n'
        '[promo.codes.LATER]\nkind = "days"\nvalue = 3\nvalid_from = 2027-01-01T00:00:00\n'
        '[promo.codes.WHAT]\nkind = "gift"\nvalue = 3\n',
    )
    assert found["promo.min_price"].startswith("currency 'rub' must be an upper-case code")
    assert found["promo.codes.spring.value"] == "a days code's value is 1 to 3660"
    assert any(path.startswith("promo.codes.x") for path in found)
    assert found["promo.codes.LATER.valid_from"].startswith("must carry a time zone")
    assert "promo.codes.WHAT.kind" in found


def test_a_plan_code_must_name_a_plan(tmp_path: pathlib.Path) -> None:
    found = problems(tmp_path, PLANS + '[promo.codes.GIFT]\nkind = "plan"\nvalue = "year"\n')
    assert found == {"promo.codes.GIFT.value": "names no plan: 'year'"}


async def test_configured_codes_are_created_once_and_an_admins_change_is_kept(
    db: Database,
) -> None:
    settings = Settings.model_validate(
        {
            "promo": {
                "codes": {
                    "welcome": {"kind": "days", "value": 7, "new_users_only": True},
                    "SAVE10": {"kind": "next_discount", "value": 10, "max_activations": 5},
                }
            }
        }
    )
    assert sorted(await seed_codes(db, settings.promo)) == ["SAVE10", "WELCOME"]
    welcome = await store.find(db, "WELCOME")
    assert welcome is not None and welcome.kind is Kind.DAYS and welcome.new_users_only
    assert welcome.created_by == "config"
    await store.disable(db, "WELCOME", actor=grants.admin_actor(1))
    assert await seed_codes(db, settings.promo) == []
    again = await store.find(db, "WELCOME")
    assert again is not None and again.disabled_at is not None


def test_the_sandbox_starts_with_codes_to_try() -> None:
    settings = sandbox_settings(
        Settings(),
        telegram_url="http://127.0.0.1:1",
        token="123456789:AAHsandboxTokenForTheTests012345678",
        panel_url="http://127.0.0.1:2",
        cryptobot_url="http://127.0.0.1:3",
    )
    assert {"WELCOME", "SAVE20", "GIFT50"} <= set(settings.promo.codes)
