"""The config reference documents every plugin's keys, from the model the plugin declares."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from runtime.config import Settings, reference_markdown
from runtime.plugin_api import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    LoadedPlugins,
    Offer,
    OfferKind,
    hookimpl,
    load_plugins,
)

ROOT = Path(__file__).resolve().parents[2]
TABLE = "plugins.settings.third_party"


class ThirdPartyReceipt(BaseModel):
    """Without ``use_attribute_docstrings``: the reference reads its source."""

    email: str
    """Where | receipts go,
    on two lines."""


class ThirdPartySettings(BaseModel):
    """A panel of someone else's.

    Its table, for example::

        [plugins.settings.third_party]
        url = "https://panel.example"
    """

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    url: str
    """The panel's ``url``."""
    api_key: SecretStr = Field(description="From the panel's settings.")
    login: str = "bot"
    """Whose password, not a secret."""
    password: str | None = None
    """A secret by its name."""
    retries: Annotated[int, Field(ge=0)] = 3
    """How often to try again."""
    receipt: ThirdPartyReceipt | None = None
    """Receipts, when wanted."""


class ThirdParty:
    @hookimpl
    def vpnbot_offers(self) -> list[Offer]:
        return [
            Offer(
                OfferKind.VPN_BACKEND,
                "third_party",
                TABLE,
                settings_model=f"{__name__}:ThirdPartySettings",
            ),
            Offer(OfferKind.ALERT_SINK, "third_party_sink", f"{TABLE}.url"),
        ]


class BrokenModel:
    @hookimpl
    def vpnbot_offers(self) -> list[Offer]:
        return [
            Offer(
                OfferKind.VPN_BACKEND,
                "broken",
                "plugins.settings.broken",
                settings_model="no_such_package_anywhere.settings:Missing",
            )
        ]


class NotAModel:
    @hookimpl
    def vpnbot_offers(self) -> list[Offer]:
        return [
            Offer(
                OfferKind.VPN_BACKEND,
                "not_a_model",
                "plugins.settings.not_a_model",
                settings_model=f"{__name__}:ThirdParty",
            )
        ]


class SameTableOtherModel:
    @hookimpl
    def vpnbot_offers(self) -> list[Offer]:
        return [
            Offer(
                OfferKind.ACTOR,
                "squatter",
                TABLE,
                settings_model=f"{__name__}:ThirdPartyReceipt",
            )
        ]


class BadOffer:
    @hookimpl
    def vpnbot_offers(self) -> list[Offer]:
        return [Offer(OfferKind.VPN_BACKEND, "bad", None, settings_model="a:B")]


third_party = ThirdParty()
broken_model = BrokenModel()
not_a_model = NotAModel()
same_table_other_model = SameTableOtherModel()
bad_offer = BadOffer()


def entry(name: str, attribute: str) -> EntryPoint:
    return EntryPoint(name, f"{__name__}:{attribute}", ENTRY_POINT_GROUP)


def builtins() -> list[EntryPoint]:
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in BUILTIN_PLUGINS.items()]


def loaded(*entry_points: EntryPoint) -> LoadedPlugins:
    return load_plugins(Settings(), entry_points=list(entry_points), environ={})


def section(markdown: str, table: str) -> list[list[str]]:
    """The rows of one plugin table's section, split into cells."""
    text = markdown.split(f"### `[{table}]`\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_a_third_party_model_is_documented_key_by_key() -> None:
    markdown = reference_markdown(loaded(entry("third_party", "third_party")))

    rows = {row[0]: row[1:] for row in section(markdown, TABLE)}
    assert rows == {
        f"`{TABLE}.url`": ["str", "required", "", "The panel's `url`."],
        f"`{TABLE}.api_key`": ["SecretStr", "required", "yes", "From the panel's settings."],
        f"`{TABLE}.login`": ["str", '"bot"', "", "Whose password, not a secret."],
        f"`{TABLE}.password`": ["str (optional)", "unset", "yes", "A secret by its name."],
        f"`{TABLE}.retries`": ["int", "3", "", "How often to try again."],
        f"`{TABLE}.receipt`": ["table (optional)", "unset", "", "Receipts, when wanted."],
        f"`{TABLE}.receipt.email`": [
            "str",
            "required",
            "",
            "Where \\| receipts go, on two lines.",
        ],
    }
    intro = f"Plugin `third_party`, model `{__name__}.ThirdPartySettings`. A panel of"
    assert intro in markdown
    assert "Its table, for example" not in markdown  # the example block is left out
    assert "Not documented" not in markdown


def test_an_offer_without_a_model_adds_no_section() -> None:
    markdown = reference_markdown(loaded(entry("third_party", "third_party")))
    assert markdown.count("### `[") == 1


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        ("broken_model", "ModuleNotFoundError"),
        ("not_a_model", "is not a pydantic model"),
        ("same_table_other_model", f"{TABLE} is already described by third_party's"),
    ],
)
def test_a_model_that_cannot_be_used_is_named_and_the_others_are_documented(
    attribute: str, reason: str
) -> None:
    markdown = reference_markdown(
        loaded(entry("third_party", "third_party"), entry("x", attribute))
    )

    assert section(markdown, TABLE)[0][0] == f"`{TABLE}.url`"
    not_documented = markdown.split("Not documented", 1)[1]
    assert reason in not_documented
    assert not_documented.lstrip().split("\n\n", 1)[1].startswith("- x: ")


def test_a_plugin_that_fails_to_load_is_named_in_the_reference() -> None:
    markdown = reference_markdown(
        loaded(EntryPoint("gone", "no_such_plugin_module", ENTRY_POINT_GROUP))
    )
    assert "- gone: import: ModuleNotFoundError" in markdown


@pytest.mark.parametrize(
    ("setting", "model"),
    [
        (TABLE, "no colon"),
        (TABLE, "module:attr; rm -rf"),
        (TABLE, ""),
        (None, f"{__name__}:ThirdPartySettings"),
    ],
)
def test_an_offer_refuses_a_model_it_cannot_name(setting: str | None, model: str) -> None:
    with pytest.raises(TypeError):
        Offer(OfferKind.VPN_BACKEND, "third_party", setting, settings_model=model)


def test_a_refused_offer_leaves_its_plugin_out_as_any_failing_hook() -> None:
    plugins = loaded(entry("bad", "bad_offer"))
    assert [(p.name, p.hook) for p in plugins.problems] == [("bad", "vpnbot_offers")]


# --- the built-in plugins ---------------------------------------------------------------------


def builtin_reference() -> str:
    plugins = loaded(*builtins())
    assert plugins.problems == []
    return reference_markdown(plugins)


def test_every_built_in_plugin_table_declares_its_model() -> None:
    plugins = loaded(*builtins())
    tables = {
        offer.setting: offer.settings_model
        for info in plugins.plugins
        for offer in info.offers or []
        if offer.setting and re.fullmatch(r"plugins\.settings\.[a-z_]+", offer.setting)
    }
    assert set(tables) == {
        f"plugins.settings.{name}" for name in BUILTIN_PLUGINS if name != "alert_sinks"
    }
    assert all(tables.values()), tables


def test_every_key_of_every_built_in_plugin_is_documented() -> None:
    markdown = builtin_reference()
    for info in loaded(*builtins()).plugins:
        for offer in info.offers or []:
            model = offer.load_settings_model()
            if model is None:
                continue
            rows = {row[0].strip("`"): row for row in section(markdown, str(offer.setting))}
            expected = {f"{offer.setting}.{name}" for name in model.model_fields}
            assert expected <= set(rows), expected - set(rows)
            undocumented = [key for key, row in rows.items() if not row[4]]
            assert undocumented == [], f"describe these keys in {model.__module__}"


def test_built_in_settings_models_leave_their_docstrings_to_the_reference() -> None:
    """pydantic's ``use_attribute_docstrings`` walks the importing frames as each model is
    created, a cost of every start; the reference reads the same words from the source."""
    for info in loaded(*builtins()).plugins:
        for offer in info.offers or []:
            model = offer.load_settings_model()
            models = [model] if model is not None else []
            while models:
                current = models.pop()
                assert not current.model_config.get("use_attribute_docstrings"), current
                for field in current.model_fields.values():
                    args = [field.annotation, *getattr(field.annotation, "__args__", ())]
                    models += [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def test_secrets_of_the_built_ins_are_marked() -> None:
    markdown = builtin_reference()
    marked = {
        row[0].strip("`")
        for table in re.findall(r"### `\[(.+?)\]`", markdown)
        for row in section(markdown, table)
        if row[3] == "yes"
    }
    assert {
        "plugins.settings.yookassa.secret_key",
        "plugins.settings.heleket.api_key",
        "plugins.settings.cryptobot.token",
        "plugins.settings.telegram_payments.card_provider_token",
        "plugins.settings.marzban.password",
        "plugins.settings.xui.password",
        "plugins.settings.remnawave.api_token",
        "plugins.settings.outline.api_url",
    } <= marked
    assert "plugins.settings.heleket.merchant" not in marked


def test_the_command_prints_the_plugins_and_nothing_else_on_stdout() -> None:
    """Loading the plugins logs; those lines must not land in the reference."""
    done = subprocess.run(
        [sys.executable, "supervisor.py", "config-reference"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "VPNBOT_DISABLE_PLUGINS": "xui"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Configuration reference\n")
    assert "### `[plugins.settings.yookassa]`" in done.stdout
    assert "### `[plugins.settings.xui]`" not in done.stdout  # disabled: not imported
    assert not re.search(r"^\d{4}-\d\d-\d\d", done.stdout, re.MULTILINE)
    assert "plugin loaded" not in done.stdout + done.stderr


def test_the_example_third_party_package_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin author's example, loaded as its entry point would load it."""
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "example_package" / "src"))
    markdown = reference_markdown(
        loaded(EntryPoint("example", "vpnbot_example", ENTRY_POINT_GROUP))
    )

    rows = {row[0].strip("`"): row for row in section(markdown, "plugins.settings.example")}
    assert set(rows) == {
        f"plugins.settings.example.{key}"
        for key in ("panel_url", "panel_token", "chat_webhook_url", "timeout_seconds")
    }
    assert all(row[4] for row in rows.values())
    assert rows["plugins.settings.example.panel_token"][3] == "yes"
