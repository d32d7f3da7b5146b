"""Which plural form a number takes in a language, by the CLDR rules (through Babel)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel import Locale

CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})
"""CLDR's plural categories; ``other`` is in every language and is the fallback."""


@lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    from babel import Locale

    return Locale.parse(language)


def plural_category(language: str, count: int | float) -> str:
    """``("ru", 21)`` -> ``"one"``; ``("ru", 3)`` -> ``"few"``; ``("en", 1)`` -> ``"one"``."""
    return str(_locale(language).plural_form(abs(count)))


def required_categories(language: str) -> frozenset[str]:
    """The categories a language's texts must give for every plural key."""
    return frozenset(_locale(language).plural_form.tags) | {"other"}
