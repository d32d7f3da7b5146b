"""What a plugin can provide, declared without any configuration.

The other hooks build objects from the settings, so a plugin without its settings answers
them with nothing. ``vpnbot_offers`` takes no arguments and returns ``Offer`` records:
each thing the plugin can provide, the setting that turns it on and, when that setting is
the plugin's table, the pydantic model of the table. ``vpnbot plugins`` lists them,
configured or not; ``vpnbot config-reference`` documents each table's keys from its model::

    @hookimpl
    def vpnbot_offers() -> list[Offer]:
        return [
            Offer(
                OfferKind.VPN_BACKEND,
                "my_panel",
                "plugins.settings.my_panel",
                settings_model="my_panel.settings:MyPanelSettings",
            )
        ]

The model is named, not imported: listing offers stays cheap, and the model's module is
imported only by the command that documents it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["Offer", "OfferKind", "SettingsTable", "settings_tables"]

_MODEL_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class OfferKind(StrEnum):
    """The kinds of things a plugin provides, named like the plugin listing names them."""

    PAYMENT_PROVIDER = "payment_providers"
    VPN_BACKEND = "vpn_backends"
    ALERT_SINK = "alert_sinks"
    ACTOR = "actors"


@dataclass(frozen=True, slots=True)
class Offer:
    """One thing a plugin can provide.

    ``name`` is the name the object will have (a provider's, a backend's, a sink's, an
    actor's), or the family of names ``<name>:<anything>`` when the config makes one object
    per entry (one alert sink per Apprise URL); ``setting`` is the config key that turns it
    on (``plugins.settings.my_panel``), or None when it needs none. ``settings_model`` is
    ``"package.module:Model"``, the pydantic model that validates the table ``setting``
    names; its fields' descriptions (``Field(description=...)``, or else the docstring
    written under each field, read from the model's source) are the words of the config
    reference.
    """

    kind: OfferKind
    name: str
    setting: str | None = None
    settings_model: str | None = None

    def __post_init__(self) -> None:
        if self.settings_model is None:
            return
        if not isinstance(self.settings_model, str) or not _MODEL_PATH.match(self.settings_model):
            raise TypeError(
                f"settings_model must be 'package.module:Model', not {self.settings_model!r}"
            )
        if not self.setting:
            raise TypeError("settings_model needs the setting it describes (the plugin's table)")

    def covers(self, name: str) -> bool:
        """Whether an object named ``name`` is this offer (or one of its family)."""
        return name == self.name or name.startswith(f"{self.name}:")

    def load_settings_model(self) -> type[BaseModel] | None:
        """The model ``settings_model`` names, imported now; None when there is none.

        Raises ``ImportError``, ``AttributeError`` or ``TypeError`` (not a pydantic model).
        """
        if self.settings_model is None:
            return None
        from pydantic import BaseModel

        module_name, _, attribute = self.settings_model.partition(":")
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise TypeError(f"{self.settings_model} is not a pydantic model")
        return found


@dataclass(frozen=True, slots=True)
class SettingsTable:
    """A plugin's config table and the model that validates it."""

    plugin: str
    table: str
    model: type[BaseModel]


def settings_tables(
    offers_by_plugin: Iterable[tuple[str, Iterable[Offer]]],
) -> tuple[list[SettingsTable], list[str]]:
    """Every table a plugin declares a model for, once, and why any other could not be.

    A model that fails to import, or a second model for a table already declared, is a
    problem (``"<plugin>: <why>"``) rather than an exception: the other tables still count.
    """
    tables: dict[str, SettingsTable] = {}
    problems: list[str] = []
    for plugin, offers in offers_by_plugin:
        for offer in offers:
            if offer.settings_model is None or offer.setting is None:
                continue
            try:
                model = offer.load_settings_model()
            except Exception as exc:
                problems.append(f"{plugin}: {offer.settings_model}: {type(exc).__name__}: {exc}")
                continue
            assert model is not None
            known = tables.get(offer.setting)
            if known is None:
                tables[offer.setting] = SettingsTable(plugin, offer.setting, model)
            elif known.model is not model:
                problems.append(
                    f"{plugin}: {offer.setting} is already described by {known.plugin}'s "
                    f"{known.model.__name__}"
                )
    return sorted(tables.values(), key=lambda t: t.table), problems
