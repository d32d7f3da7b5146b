from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runtime.i18n import (
    Translator,
    format_date,
    format_days,
    format_money,
    format_time_left,
    load_translator,
    remaining_parts,
    required_categories,
)


def test_every_language_has_every_key() -> None:
    assert load_translator().missing() == {}


def test_every_language_has_every_plural_form_its_rules_need() -> None:
    translator = load_translator()
    assert {"broadcasts.ready", "admin.revenue_line", "time.days"} <= set(translator.plural_keys)
    assert translator.missing_plural_forms() == {}


def test_the_cldr_categories_of_the_shipped_languages() -> None:
    assert required_categories("en") == {"one", "other"}
    assert required_categories("ru") == {"one", "few", "many", "other"}


def _base(translator: Translator, key: str) -> str:
    base, _, _ = key.rpartition(".")
    return base if base in translator.plural_keys else key


def test_placeholders_agree_across_languages() -> None:
    translator = load_translator()
    for language in translator.languages:
        for key in translator._catalogs[language]:
            base = _base(translator, key)
            reference = f"{base}.other" if base != key else key
            expected = translator.placeholders("en", reference)
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
    ("language", "count", "text"),
    [
        ("en", 1, "1 day"),
        ("en", 0, "0 days"),
        ("en", 2, "2 days"),
        ("en", 21, "21 days"),
        ("ru", 1, "1 день"),
        ("ru", 2, "2 дня"),
        ("ru", 4, "4 дня"),
        ("ru", 5, "5 дней"),
        ("ru", 11, "11 дней"),
        ("ru", 14, "14 дней"),
        ("ru", 21, "21 день"),
        ("ru", 22, "22 дня"),
        ("ru", 25, "25 дней"),
        ("ru", 0, "0 дней"),
        ("ru", 101, "101 день"),
    ],
)
def test_plurals_follow_the_language_rules(language: str, count: int, text: str) -> None:
    assert format_days(load_translator(), language, count) == text


def test_one_payment_and_one_recipient_read_in_the_singular() -> None:
    translator = load_translator()
    line = translator.t(
        "en", "admin.revenue_line", provider="Stars", today="1", week="1", month="1", count=1
    )
    assert line.endswith("(1 payment in 30 days)")
    preview = translator.t("en", "broadcasts.ready", id=7, audience="all users", count=1)
    assert "1 recipient now" in preview
    preview = translator.t("ru", "broadcasts.ready", id=7, audience="всем", count=3)
    assert "3 получателя" in preview
    dropped = translator.t("ru", "admin.broadcast_cancelled", id=7, count=21)
    assert "21 неотправленное сообщение" in dropped


def test_a_missing_plural_form_falls_back_to_other_then_to_english() -> None:
    translator = Translator(
        {
            "en": {"k.one": "{count} apple", "k.other": "{count} apples"},
            "ru": {"k.one": "{count} яблоко", "k.other": "{count} яблока"},
            "uk": {},
        }
    )
    assert translator.plural_keys == ["k"]
    assert translator.t("ru", "k", count=21) == "21 яблоко"
    assert translator.t("ru", "k", count=5) == "5 яблока"  # no `many`: `other`
    assert translator.t("uk", "k", count=1) == "1 apple"  # no forms at all: English
    assert translator.missing() == {"uk": ["k"]}
    assert translator.missing_plural_forms() == {
        "ru": ["k.few", "k.many"],
        "uk": ["k.few", "k.many", "k.one", "k.other"],
    }
    with pytest.raises(KeyError):
        translator.t("en", "k")


def test_a_table_that_merely_holds_an_other_key_is_not_plural() -> None:
    translator = load_translator()
    assert "providers" not in translator.plural_keys
    assert translator.t("en", "providers.other", name="X") == "💸 X"


@pytest.mark.parametrize(
    ("amount", "currency", "language", "text"),
    [
        (19900, "RUB", "en", "₽199.00"),
        (19900, "RUB", "ru", "199,00\xa0₽"),
        (123456789, "RUB", "ru", "1\xa0234\xa0567,89\xa0₽"),
        (123456789, "RUB", "en", "₽1,234,567.89"),
        (150, "XTR", "en", "⭐150"),
        (150, "XTR", "ru", "150\xa0⭐"),
        (5, "USD", "en", "$0.05"),
        (5, "USD", "ru", "0,05\xa0$"),
        (-250, "EUR", "en", "-€2.50"),
        (1000, "JPY", "en", "¥1,000"),
        (1234, "KWD", "en", "KWD1.234"),
    ],
)
def test_money_reads_as_the_language_writes_it(
    amount: int, currency: str, language: str, text: str
) -> None:
    assert format_money(amount, currency, language=language) == text


def test_dates_read_as_the_language_writes_them() -> None:
    moment = datetime(2026, 12, 3, 16, 5, 42, tzinfo=UTC)
    assert format_date(moment, language="en") == "Dec 3, 2026, 4:05\u202fPM UTC"
    assert format_date(moment, language="ru") == "3 дек. 2026\u202fг., 16:05 UTC"  # noqa: RUF001
    naive = datetime(2026, 12, 3, 16, 5)
    assert format_date(naive, language="en") == "Dec 3, 2026, 4:05\u202fPM UTC"


@pytest.mark.parametrize(
    ("left", "parts"),
    [
        (timedelta(hours=72) - timedelta(seconds=1), (3, 0, 0)),  # a trial just started
        (timedelta(hours=71, minutes=59), (3, 0, 0)),
        (timedelta(hours=71, minutes=0), (2, 23, 0)),
        (timedelta(hours=25), (1, 1, 0)),
        (timedelta(hours=24, seconds=1), (1, 1, 0)),
        (timedelta(hours=24), (1, 0, 0)),
        (timedelta(hours=1), (0, 1, 0)),
        (timedelta(minutes=59, seconds=1), (0, 1, 0)),
        (timedelta(minutes=59), (0, 0, 59)),
        (timedelta(seconds=1), (0, 0, 1)),
        (timedelta(0), (0, 0, 0)),
        (timedelta(hours=-3), (0, 0, 0)),
    ],
)
def test_time_left_is_never_understated(left: timedelta, parts: tuple[int, int, int]) -> None:
    assert remaining_parts(left) == parts


@pytest.mark.parametrize(
    ("language", "left", "text"),
    [
        ("en", timedelta(hours=72) - timedelta(seconds=1), "3 days left"),
        ("en", timedelta(hours=71), "2 days 23 hours left"),
        ("en", timedelta(hours=25), "1 day 1 hour left"),
        ("en", timedelta(hours=1), "1 hour left"),
        ("en", timedelta(seconds=30), "1 minute left"),
        ("en", timedelta(0), "ended"),
        ("ru", timedelta(hours=72) - timedelta(seconds=1), "осталось: 3 дня"),
        ("ru", timedelta(hours=25), "осталось: 1 день 1 час"),
        ("ru", timedelta(hours=5), "осталось: 5 часов"),
        ("ru", timedelta(minutes=21), "осталось: 21 минута"),
        ("ru", timedelta(0), "срок истёк"),
    ],
)
def test_time_left_reads_naturally(language: str, left: timedelta, text: str) -> None:
    assert format_time_left(load_translator(), language, left) == text
