"""What a plugin can provide is listed without its config (``vpnbot_offers``)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from runtime.app.tables import render_plugins
from runtime.config import Settings
from runtime.plugin_api import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, LoadedPlugins, load_plugins
from runtime.plugin_api._manager import describe_offers

PLUGIN = "tests.fixtures.offers_plugin"


def fixture(attribute: str) -> list[EntryPoint]:
    return [EntryPoint(attribute, f"{PLUGIN}:{attribute}", ENTRY_POINT_GROUP)]


def load(
    paths: list[str] | None = None,
    *,
    entry_points: list[EntryPoint] | None = None,
    plugin_settings: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> LoadedPlugins:
    document = {
        **(config or {}),
        "plugins": {"paths": paths or [], "settings": plugin_settings or {}},
    }
    return load_plugins(
        Settings.model_validate(document), entry_points=entry_points or [], environ={}
    )


def builtins() -> list[EntryPoint]:
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in BUILTIN_PLUGINS.items()]


def provides(loaded: LoadedPlugins) -> dict[str, str]:
    return {row["name"]: row["provides"] for row in loaded.describe()}


def test_unconfigured_built_ins_say_what_they_can_provide() -> None:
    loaded = load(entry_points=builtins())

    assert loaded.problems == []
    assert provides(loaded) == {
        "alert_sinks": "alert_sinks: webhook (off: set alerts.webhook.url), "
        "telegram (off: set alerts.telegram.enabled), apprise (off: set alerts.apprise.urls)",
        "telegram_payments": "payment_providers: "
        "stars (off: set plugins.settings.telegram_payments), "
        "card (off: set plugins.settings.telegram_payments.card_provider_token)",
        "cryptobot": "payment_providers: cryptobot (off: set plugins.settings.cryptobot)",
        "heleket": "payment_providers: heleket (off: set plugins.settings.heleket)",
        "yookassa": "payment_providers: yookassa (off: set plugins.settings.yookassa)",
        "marzban": "vpn_backends: marzban (off: set plugins.settings.marzban)",
        "xui": "vpn_backends: xui (off: set plugins.settings.xui)",
        "remnawave": "vpn_backends: remnawave (off: set plugins.settings.remnawave)",
        "outline": "vpn_backends: outline (off: set plugins.settings.outline)",
    }
    assert "marzban (off: set plugins.settings.marzban)" in render_plugins(loaded)


def test_vpnbot_plugins_without_a_config_lists_every_built_ins_offers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import supervisor as cli

    assert cli.main(["plugins"], environ={}) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    for name in BUILTIN_PLUGINS:
        assert "(off: set " in rows[name], rows[name]


def test_what_the_config_turns_on_is_marked_on() -> None:
    loaded = load(
        entry_points=builtins(),
        plugin_settings={
            "marzban": {"base_url": "http://127.0.0.1:9", "username": "a", "password": "p"}
        },
        config={"alerts": {"webhook": {"url": "http://127.0.0.1:9/hook"}}},
    )

    rows = provides(loaded)
    assert rows["marzban"] == "vpn_backends: marzban (on)"
    assert rows["alert_sinks"] == (
        "alert_sinks: webhook (on), telegram (off: set alerts.telegram.enabled), "
        "apprise (off: set alerts.apprise.urls)"
    )


def test_an_offer_covers_its_family_of_names() -> None:
    urls = "ntfy://ntfy.example.com/a json://127.0.0.1:9/b ntfy://ntfy.example.com/c"
    loaded = load(entry_points=builtins(), config={"alerts": {"apprise": {"urls": urls}}})

    assert provides(loaded)["alert_sinks"] == (
        "alert_sinks: webhook (off: set alerts.webhook.url), "
        "telegram (off: set alerts.telegram.enabled), "
        "apprise (on: apprise:ntfy, apprise:json, apprise:ntfy:2)"
    )


# What each built-in returns once configured: every object must be one it declares.
FULL_SETTINGS: dict[str, Any] = {
    "marzban": {"base_url": "http://127.0.0.1:9", "username": "a", "password": "p"},
    "remnawave": {
        "base_url": "http://127.0.0.1:9",
        "api_token": "t",
        "internal_squads": ["00000000-0000-4000-8000-000000000001"],
    },
    "outline": {
        "api_url": "https://127.0.0.1:9/XjY3ZkTbq0Lw",
        "cert_sha256": "A1" * 32,
    },
    "xui": {
        "base_url": "http://127.0.0.1:9/",
        "api_token": "t",
        "inbound_ids": [1],
        "subscription_base_url": "http://127.0.0.1:9/sub/",
    },
    "cryptobot": {"token": "1:x"},
    "heleket": {"merchant": "m", "api_key": "k"},
    "yookassa": {"shop_id": "1", "secret_key": "x"},
    "telegram_payments": {"card_provider_token": "c"},
}
FULL_CONFIG: dict[str, Any] = {
    "telegram": {"token": "123456789:AAHexampleBotToken_0123456789abcdef"},
    "alerts": {
        "webhook": {"url": "http://127.0.0.1:9/hook"},
        "telegram": {"enabled": True, "chat_ids": [1]},
        "apprise": {"urls": "ntfy://ntfy.example.com/a"},
    },
}


def test_every_object_a_configured_built_in_returns_is_one_it_declares() -> None:
    loaded = load(entry_points=builtins(), plugin_settings=FULL_SETTINGS, config=FULL_CONFIG)

    assert loaded.problems == []
    for info in loaded.plugins:
        assert info.offers is not None, info.name
        declared = {(offer.kind.value, offer.name) for offer in info.offers}
        returned = {
            (kind, offer.name)
            for kind, names in info.provides.items()
            for name in names
            for offer in info.offers
            if offer.kind == kind and offer.covers(name)
        }
        assert returned == declared, info.name
        assert "undeclared" not in describe_offers(info), info.name


def test_on_off_and_undeclared_objects_are_told_apart() -> None:
    off = provides(load(entry_points=fixture("Declaring")))["Declaring"]
    on = provides(load(entry_points=fixture("Declaring"), plugin_settings={"offers": {}}))

    assert off == (
        "vpn_backends: fake-vpn (off: set plugins.settings.offers); "
        "alert_sinks: undeclared-sink (on, undeclared); actors: always-off (off)"
    )
    assert on["Declaring"].startswith("vpn_backends: fake-vpn (on);")


def test_a_plugin_without_offers_says_what_can_be_known_and_that_it_declares_nothing() -> None:
    unconfigured = provides(load(entry_points=fixture("Silent")))["Silent"]
    configured = provides(load(entry_points=fixture("Silent"), plugin_settings={"silent": {}}))

    assert unconfigured == (
        "vpn_backends: names unknown until configured (the plugin has no vpnbot_offers)"
    )
    assert configured["Silent"] == "vpn_backends: fake-vpn (on) (the plugin has no vpnbot_offers)"


@pytest.mark.parametrize(
    ("attribute", "error"),
    [
        ("BadOffers", "which is not an Offer"),
        ("TwiceOffered", "declares alert_sinks 'a' twice"),
    ],
)
def test_a_plugin_whose_offers_are_wrong_is_left_out(attribute: str, error: str) -> None:
    loaded = load(["tests.fixtures.other_plugin"], entry_points=fixture(attribute))

    [problem] = loaded.problems
    assert (problem.stage, problem.hook) == ("call", "vpnbot_offers")
    assert error in problem.error
    assert [info.name for info in loaded.plugins] == ["tests.fixtures.other_plugin"]


def test_disabled_plugins_are_not_imported_and_the_listing_says_so() -> None:
    loaded = load_plugins(
        Settings.model_validate({"plugins": {"disabled": ["marzban"]}}),
        entry_points=builtins(),
        environ={},
    )

    assert provides(loaded)["marzban"] == "unknown (disabled, so not imported)"
