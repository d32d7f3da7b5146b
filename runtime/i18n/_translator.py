from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from ._plural import CATEGORIES, plural_category, required_categories

DEFAULT_LANGUAGE = "en"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = str(value)
    return flat


def _plural_keys(texts: Mapping[str, str]) -> set[str]:
    """Keys whose texts are plural forms: a table of CLDR categories only, ``other``
    among them (``[admin.broadcast_cancelled]`` with ``one``, ``other``...)."""
    tables: dict[str, set[str]] = {}
    for flat in texts:
        base, _, leaf = flat.rpartition(".")
        tables.setdefault(base, set()).add(leaf)
    return {
        base
        for base, leaves in tables.items()
        if base and "other" in leaves and leaves <= CATEGORIES and len(leaves) > 1
    }


class Translator:
    """``t(language, key, **params)`` with ``str.format`` placeholders.

    A plural key (its forms as ``key.one``, ``key.few``, ``key.many``, ``key.other``...)
    takes its form from the ``count`` parameter, by the language's CLDR rules; a form a
    language lacks falls back to its ``other``, then to English.
    """

    def __init__(self, catalogs: Mapping[str, Mapping[str, str]]) -> None:
        if DEFAULT_LANGUAGE not in catalogs:
            raise ValueError(f"the {DEFAULT_LANGUAGE!r} catalog is required")
        self._catalogs = {lang: dict(texts) for lang, texts in catalogs.items()}
        self._plurals = _plural_keys(self._catalogs[DEFAULT_LANGUAGE])

    @property
    def languages(self) -> list[str]:
        return sorted(self._catalogs)

    def language_for(self, code: str | None) -> str:
        """The supported language for a Telegram ``language_code`` (``ru-RU`` -> ``ru``)."""
        base = (code or "").split("-")[0].lower()
        return base if base in self._catalogs else DEFAULT_LANGUAGE

    def t(self, language: str, key: str, **params: Any) -> str:
        text = self._lookup(language, key, params)
        if text is None and language != DEFAULT_LANGUAGE:
            text = self._lookup(DEFAULT_LANGUAGE, key, params)
        if text is None:
            raise KeyError(f"no text for {key!r}")
        return text.format(**params) if params else text

    def _lookup(self, language: str, key: str, params: Mapping[str, Any]) -> str | None:
        texts = self._catalogs.get(language, {})
        if key not in self._plurals:
            return texts.get(key)
        count = params.get("count")
        if not isinstance(count, int | float):
            raise KeyError(f"{key!r} has plural forms: it needs a number as `count`")
        form = texts.get(f"{key}.{plural_category(language, count)}")
        return form if form is not None else texts.get(f"{key}.other")

    def has(self, key: str) -> bool:
        return key in self._catalogs[DEFAULT_LANGUAGE] or key in self._plurals

    @property
    def plural_keys(self) -> list[str]:
        return sorted(self._plurals)

    def missing(self) -> dict[str, list[str]]:
        """Keys some language lacks, per language (for tests and for translators); a
        plural key counts as one key, whatever forms its language needs."""
        keys = {lang: self._keys(texts) for lang, texts in self._catalogs.items()}
        every = set().union(*keys.values())
        return {lang: sorted(every - mine) for lang, mine in keys.items() if every - mine}

    def _keys(self, texts: Mapping[str, str]) -> set[str]:
        forms = {f"{key}.{category}" for key in self._plurals for category in CATEGORIES}
        plural = {key for key in self._plurals if f"{key}.other" in texts}
        return (set(texts) - forms) | plural

    def missing_plural_forms(self) -> dict[str, list[str]]:
        """Forms a language's CLDR rules need but its texts lack (``key.few``...)."""
        found: dict[str, list[str]] = {}
        for lang, texts in self._catalogs.items():
            needed = required_categories(lang)
            lacking = [
                f"{key}.{category}"
                for key in sorted(self._plurals)
                for category in sorted(needed)
                if f"{key}.{category}" not in texts
            ]
            if lacking:
                found[lang] = lacking
        return found

    def placeholders(self, language: str, key: str) -> set[str]:
        text = self._catalogs.get(language, {}).get(key, "")
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@lru_cache(maxsize=1)
def load_translator() -> Translator:
    """The project's catalogs: every ``*.toml`` under ``locales/<language>/``, merged."""
    root = resources.files("runtime.i18n").joinpath("locales")
    catalogs: dict[str, dict[str, str]] = {}
    for language_dir in root.iterdir():
        if not language_dir.is_dir():
            continue
        texts: dict[str, str] = {}
        for entry in sorted(language_dir.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                texts.update(_flatten(tomllib.loads(entry.read_text(encoding="utf-8"))))
        catalogs[language_dir.name] = texts
    return Translator(catalogs)
