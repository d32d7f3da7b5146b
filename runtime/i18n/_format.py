"""Money and dates as users read them."""

from __future__ import annotations

from datetime import datetime

_EXPONENT = {"XTR": 0, "JPY": 0, "KRW": 0}
_SYMBOL = {"XTR": "⭐", "RUB": "₽", "USD": "$", "EUR": "€"}


def format_money(amount_minor: int, currency: str) -> str:
    """``19900, "RUB"`` -> ``199.00 ₽``; ``150, "XTR"`` -> ``150 ⭐``."""
    exponent = _EXPONENT.get(currency, 2)
    if exponent:
        sign = "-" if amount_minor < 0 else ""
        whole, part = divmod(abs(amount_minor), 10**exponent)
        number = f"{sign}{whole}.{part:0{exponent}d}"
    else:
        number = str(amount_minor)
    return f"{number} {_SYMBOL.get(currency, currency)}"


def format_date(moment: datetime) -> str:
    """A date and time users of any language read the same way (UTC)."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")
