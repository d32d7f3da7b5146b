from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

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


class Translator:
    """``t(language, key, **params)`` with ``str.format`` placeholders."""

    def __init__(self, catalogs: Mapping[str, Mapping[str, str]]) -> None:
        if DEFAULT_LANGUAGE not in catalogs:
            raise ValueError(f"the {DEFAULT_LANGUAGE!r} catalog is required")
        self._catalogs = {lang: dict(texts) for lang, texts in catalogs.items()}

    @property
    def languages(self) -> list[str]:
        return sorted(self._catalogs)

    def language_for(self, code: str | None) -> str:
        """The supported language for a Telegram ``language_code`` (``ru-RU`` -> ``ru``)."""
        base = (code or "").split("-")[0].lower()
        return base if base in self._catalogs else DEFAULT_LANGUAGE

    def t(self, language: str, key: str, **params: Any) -> str:
        text = self._catalogs.get(language, {}).get(key)
        if text is None:
            text = self._catalogs[DEFAULT_LANGUAGE].get(key)
        if text is None:
            raise KeyError(f"no text for {key!r}")
        return text.format(**params) if params else text

    def has(self, key: str) -> bool:
        return key in self._catalogs[DEFAULT_LANGUAGE]

    def missing(self) -> dict[str, list[str]]:
        """Keys some language lacks, per language (for tests and for translators)."""
        every = set().union(*(set(c) for c in self._catalogs.values()))
        return {
            lang: sorted(every - set(texts))
            for lang, texts in self._catalogs.items()
            if every - set(texts)
        }

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
