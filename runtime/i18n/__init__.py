"""Texts users see, per language, from TOML files under ``locales/<language>/``.

Code names a key (``"menu.title"``) and passes parameters; the files hold the words. A
missing key in a language falls back to English; a key missing everywhere is a bug the
tests catch (``Translator.missing``). Plural keys take their form from ``count`` by the
language's CLDR rules (``locales/README.md``). Money, dates and time left are formatted
per language with Babel's CLDR data.
"""

from ._format import currency_exponent, format_date, format_money
from ._plural import plural_category, required_categories
from ._relative import format_days, format_time_left, remaining_parts
from ._translator import DEFAULT_LANGUAGE, Translator, load_translator

__all__ = [
    "DEFAULT_LANGUAGE",
    "Translator",
    "currency_exponent",
    "format_date",
    "format_days",
    "format_money",
    "format_time_left",
    "load_translator",
    "plural_category",
    "remaining_parts",
    "required_categories",
]
