"""The example plugin passes the project's contract kit, and is found by its entry point."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import vpnbot_example
from pydantic import SecretStr
from vpnbot_example import TinyPanelBackend
from vpnbot_example.fake import FakeTinyPanel
from vpnbot_example.settings import ExampleSettings

from runtime.config import ConfigError, Settings
from runtime.plugin_api import load_plugins
from runtime.testing.contract import BackendUnderTest, VpnBackendContract

TOKEN = "example-secret-token"
PRIVATE_INSTALLS = Path(__file__).resolve().parents[1] / "build" / "test-install"


class TestTinyPanelContract(VpnBackendContract):
    @pytest.fixture
    async def subject(self) -> AsyncIterator[BackendUnderTest]:
        fake = FakeTinyPanel(TOKEN)
        async with fake.running() as url:
            settings = ExampleSettings(panel_url=url, panel_token=SecretStr(TOKEN))
            yield BackendUnderTest(
                TinyPanelBackend(settings),
                fake,
                secrets=[TOKEN],
                make_fresh=lambda: TinyPanelBackend(settings),
                use_traffic=fake.use_traffic,
            )


def test_the_entry_point_is_installed() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="vpnbot.plugins")}
    assert "example" in names


def test_the_plugin_under_test_is_the_private_install_not_the_environments() -> None:
    [entry_point] = [
        ep for ep in importlib.metadata.entry_points(group="vpnbot.plugins") if ep.name == "example"
    ]
    assert entry_point.dist is not None
    installed_in = Path(str(entry_point.dist.locate_file(""))).resolve()
    assert installed_in.parent == PRIVATE_INSTALLS
    assert Path(vpnbot_example.__file__).resolve().is_relative_to(installed_in)


def test_the_plugin_loads_through_the_entry_point() -> None:
    settings = Settings.model_validate(
        {
            "plugins": {
                "settings": {
                    "example": {
                        "panel_url": "http://127.0.0.1:9",
                        "panel_token": TOKEN,
                        "chat_webhook_url": "http://127.0.0.1:9/hook",
                    }
                }
            }
        }
    )
    loaded = load_plugins(settings, environ={})
    assert [b.name for b in loaded.vpn_backends()] == ["example"]
    assert "chat" in [s.name for s in loaded.alert_sinks()]
    [info] = [info for info in loaded.plugins if info.name == "example"]
    assert info.offers is not None
    declared = {(offer.kind.value, offer.name) for offer in info.offers}
    assert declared == {(kind, name) for kind, names in info.provides.items() for name in names}


def test_bad_settings_are_a_config_error() -> None:
    settings = Settings.model_validate({"plugins": {"settings": {"example": {"panel_url": 1}}}})
    with pytest.raises(ConfigError) as caught:
        load_plugins(settings, environ={})
    paths = {problem.path for problem in caught.value.problems}
    assert "plugins.settings.example.panel_token" in paths
