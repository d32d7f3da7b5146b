"""``[referrals]``: valid levels load; a wrong one is refused with the key it is at."""

from __future__ import annotations

import pathlib
from datetime import timedelta

import pytest

from runtime.catalog import Catalog
from runtime.config import ConfigError, Settings, load_settings
from runtime.referrals import StartSource, invited_trial, parse_start, rules
from runtime.storage.referrals import Level


def _load(tmp_path: pathlib.Path, text: str) -> Settings:
    path = tmp_path / "vpnbot.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={})


def _problems(tmp_path: pathlib.Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return {problem.path: problem.reason for problem in caught.value.problems}


def test_levels_and_the_invited_trial_load(tmp_path: pathlib.Path) -> None:
    settings = _load(
        tmp_path,
        '[trial]\nenabled = true\nbackend = "marzban"\nduration_hours = 24\n'
        "[referrals]\nenabled = true\ninvited_trial_hours = 72\n"
        'levels = [{ reward = "percent", amount = 10, payments = "every" },'
        ' { reward = "days", amount = 3 }]\n',
    )
    found = rules(settings, Catalog.from_settings(settings))
    assert found.levels == (Level("percent", 10, every_payment=True), Level("days", 3))
    assert found.backend == "marzban" and found.balance_currency == "RUB"
    assert invited_trial(settings) == timedelta(hours=72)


def test_disabled_referrals_reward_nothing_and_give_the_usual_trial() -> None:
    settings = Settings.model_validate(
        {
            "trial": {"enabled": True, "backend": "marzban", "duration_hours": 24},
            "referrals": {
                "levels": [{"reward": "fixed", "amount": 100}],
                "invited_trial_hours": 48,
            },
        }
    )
    assert rules(settings, Catalog.from_settings(settings)).levels == ()
    assert invited_trial(settings) is None


@pytest.mark.parametrize(
    ("levels", "path", "reason"),
    [
        ('[{ reward = "percent", amount = 101 }]', "referrals.levels[0].amount", "a percentage"),
        ('[{ reward = "days", amount = 9999 }]', "referrals.levels[0].amount", "days must"),
        ('[{ reward = "fixed", amount = 0 }]', "referrals.levels[0].amount", "must be"),
        ('[{ reward = "coins", amount = 5 }]', "referrals.levels[0].reward", "must be"),
        (
            '[{ reward = "fixed", amount = 5, payments = "some" }]',
            "referrals.levels[0].payments",
            "must be",
        ),
        ("[{ amount = 5 }]", "referrals.levels[0].reward", ""),
        (
            '[{ reward = "fixed", amount = 1 }, { reward = "fixed", amount = 1 },'
            ' { reward = "fixed", amount = 1 }]',
            "referrals.levels",
            "",
        ),
    ],
)
def test_a_wrong_level_names_its_key(
    tmp_path: pathlib.Path, levels: str, path: str, reason: str
) -> None:
    problems = _problems(tmp_path, f"[referrals]\nenabled = true\nlevels = {levels}\n")
    assert list(problems) == [path], problems
    assert problems[path].startswith(reason), problems


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("ref_abcd2345", StartSource("ref", "abcd2345")),
        ("ad_zz99zz99", StartSource("ad", "zz99zz99")),
        (None, None),
        ("", None),
        ("ref_", None),
        ("ref_ABCDEFGH", None),
        ("ref_abc", None),
        ("ref_" + "a" * 17, None),
        ("x" * 5000, None),
        ("ref_abcd2345\n", None),
        ("plans", None),
        ("promo_abcdefgh", None),
    ],
)
def test_start_payloads(payload: str | None, expected: StartSource | None) -> None:
    assert parse_start(payload) == expected
