"""Texts users see, per language, from TOML files under ``locales/<language>/``.

Code names a key (``"menu.title"``) and passes parameters; the files hold the words. A
missing key in a language falls back to English; a key missing everywhere is a bug the
tests catch (``Translator.missing``).
"""

from ._format import format_date, format_money
from ._translator import DEFAULT_LANGUAGE, Translator, load_translator

__all__ = ["DEFAULT_LANGUAGE", "Translator", "format_date", "format_money", "load_translator"]
