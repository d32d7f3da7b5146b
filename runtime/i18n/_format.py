"""Money, dates and time left as users of each language read them (CLDR data, via Babel).

Amounts are kept in minor units (kopecks, cents, stars); the currency's exponent says
where the decimal point goes. Times are shown in UTC: users have no time zone here.

Babel is imported on the first formatting, and a language's CLDR data is read when that
language is first formatted: an idle service holds neither.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel import Locale

_EXPONENT = {"XTR": 0}
"""Currencies Babel does not know (Telegram Stars), with their minor-unit exponent."""
_SYMBOL = {"XTR": "⭐", "RUB": "₽"}
"""Signs shown where the locale knows the currency only by its code (``RUB`` in English)."""


@lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    from babel import Locale

    return Locale.parse(language)


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point: 2 for RUB and USD, 0 for JPY and Stars."""
    if currency in _EXPONENT:
        return _EXPONENT[currency]
    from babel.numbers import get_currency_precision

    return get_currency_precision(currency)


@lru_cache(maxsize=4096)
def format_money(amount_minor: int, currency: str, *, language: str) -> str:
    """``19900, "RUB"``: ``199,00 ₽`` in Russian, ``₽199.00`` in English;
    ``150, "XTR"``: ``150 ⭐`` / ``⭐150``. Kept per amount: Babel's formatting costs
    more than the rest of a main menu, which shows the balance on every ``/start``."""
    from babel.numbers import get_currency_symbol, parse_pattern

    locale = _locale(language)
    exponent = currency_exponent(currency)
    pattern = copy.copy(parse_pattern(locale.currency_formats["standard"]))
    pattern.frac_prec = (exponent, exponent)
    number = Decimal(amount_minor).scaleb(-exponent)
    text = str(pattern.apply(number, locale, currency=currency, currency_digits=False))
    sign = _SYMBOL.get(currency)
    if sign is not None and get_currency_symbol(currency, locale) == currency:
        text = text.replace(currency, sign)
    return text


def format_date(moment: datetime, *, language: str) -> str:
    """A date and time in UTC as the language writes it: ``Dec 3, 2026, 6:05 AM UTC``."""
    from babel.dates import format_date as babel_date
    from babel.dates import format_time as babel_time

    locale = _locale(language)
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    date = babel_date(moment, "medium", locale=locale)
    time = babel_time(moment, "short", tzinfo=UTC, locale=locale)
    return f"{locale.datetime_formats['medium'].format(time, date)} UTC"
