"""The sandbox shows referrals to a newcomer: rewards in its settings, and an ad link."""

from __future__ import annotations

from runtime.config import Settings
from runtime.sandbox._sandbox import SANDBOX_AD_LINK, sandbox_ad_link, sandbox_settings
from runtime.storage import Database
from runtime.storage import referrals as store


def _settings(base: Settings) -> Settings:
    return sandbox_settings(
        base,
        telegram_url="http://127.0.0.1:1",
        token="1:unit-test-token-0123456789abcdefghi",
        panel_url="http://127.0.0.1:2",
        cryptobot_url="http://127.0.0.1:3",
    )


def test_the_sandbox_enables_referrals_with_two_levels_and_a_longer_trial() -> None:
    settings = _settings(Settings())
    assert settings.referrals.enabled and len(settings.referrals.levels) == 2
    assert (settings.referrals.invited_trial_hours or 0) > settings.trial.duration_hours
    own = Settings.model_validate(
        {"referrals": {"enabled": True, "levels": [{"reward": "fixed", "amount": 1}]}}
    )
    assert _settings(own).referrals == own.referrals  # an operator's own are kept


async def test_the_sandbox_makes_its_ad_link_once(db: Database) -> None:
    await sandbox_ad_link(db)
    await sandbox_ad_link(db)  # a restart finds it
    (link,) = await store.ad_links(db)
    assert link.link.name == SANDBOX_AD_LINK
