from __future__ import annotations

import pytest

from runtime.i18n import Translator, load_translator


def test_every_language_has_every_key() -> None:
    assert load_translator().missing() == {}


def test_placeholders_agree_across_languages() -> None:
    translator = load_translator()
    catalogs = translator._catalogs
    for key in catalogs["en"]:
        expected = translator.placeholders("en", key)
        for language in translator.languages:
            assert translator.placeholders(language, key) == expected, (language, key)


def test_language_codes_map_to_catalogs() -> None:
    translator = load_translator()
    assert translator.language_for("ru-RU") == "ru"
    assert translator.language_for("de") == "en"
    assert translator.language_for(None) == "en"


def test_fallback_and_missing_keys() -> None:
    translator = Translator({"en": {"a": "A {x}"}, "ru": {}})
    assert translator.t("ru", "a", x=1) == "A 1"
    assert translator.missing() == {"ru": ["a"]}
    with pytest.raises(KeyError):
        translator.t("en", "nope")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (19900, "RUB", "199.00 ₽"),
        (150, "XTR", "150 ⭐"),
        (5, "USD", "0.05 $"),
        (-250, "EUR", "-2.50 €"),
    ],
)
def test_money_reads_naturally(amount: int, currency: str, text: str) -> None:
    from runtime.i18n import format_money

    assert format_money(amount, currency) == text
