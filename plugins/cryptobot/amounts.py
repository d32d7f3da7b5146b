"""Minor units to Crypto Pay's decimal strings and back.

The core keeps every price as an integer in minor units; Crypto Pay wants a decimal
string. The exponent (how many minor units make one unit) is fixed per currency:

- fiat: the ISO 4217 exponent, 2 unless listed below (every fiat Crypto Pay takes today,
  RUB, USD, EUR, UAH, KZT..., has 2): ``19900`` RUB is sent as ``"199.00"``;
- crypto: the asset's smallest on-chain unit (USDT 6, TON 9, BTC 8...), overridable with
  the ``asset_decimals`` setting: ``5000000`` USDT is sent as ``"5"``.

Plan prices are written in these units; the plugin checks at start that every price it
may be asked for has a known exponent.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

_FIAT_EXPONENT_DEFAULT = 2
_FIAT_EXPONENTS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND"), 0
    ),
    **dict.fromkeys(("VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

ASSET_DECIMALS: Mapping[str, int] = {
    "USDT": 6,
    "USDC": 6,
    "TON": 9,
    "BTC": 8,
    "ETH": 18,
    "LTC": 8,
    "BNB": 18,
    "TRX": 6,
    "SOL": 9,
    "DOGE": 8,
    "NOT": 9,
    "JET": 9,
}
"""Crypto assets Crypto Pay lists, with the decimals of their smallest unit."""


class UnknownExponent(ValueError):
    """No exponent is known for a currency (a crypto asset missing from the tables)."""


def exponent(
    currency: str, *, crypto: bool, asset_decimals: Mapping[str, int] | None = None
) -> int:
    """How many decimal places one minor unit of ``currency`` is."""
    if not crypto:
        return _FIAT_EXPONENTS.get(currency, _FIAT_EXPONENT_DEFAULT)
    if asset_decimals and currency in asset_decimals:
        return asset_decimals[currency]
    if currency in ASSET_DECIMALS:
        return ASSET_DECIMALS[currency]
    raise UnknownExponent(f"no decimals known for asset {currency}: set asset_decimals")


def to_decimal_string(amount_minor: int, places: int, *, keep_zeros: bool) -> str:
    """``19900, 2`` -> ``"199.00"``; without ``keep_zeros`` trailing zeros go: ``"199"``."""
    value = Decimal(amount_minor).scaleb(-places)
    if keep_zeros:
        return f"{value:.{places}f}"
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


MAX_MINOR = 2**63 - 1
"""The largest amount the core stores (a PostgreSQL bigint)."""


def to_minor(amount: object, places: int) -> int:
    """A peer amount (``"199.00"``, ``199``, ``"0.5"``) in minor units, rounded half up.

    Raises ``ValueError`` for anything that is not a finite non-negative number of at most
    ``MAX_MINOR`` minor units written in at most 100 characters (``"1e400"`` included).
    """
    if isinstance(amount, bool) or not isinstance(amount, str | int | float):
        raise ValueError(f"not an amount: {str(amount)[:40]!r}")
    text = str(amount)
    if len(text) > 100:
        raise ValueError(f"not an amount: {text[:40]!r}...")
    try:
        value = Decimal(text)
        if not value.is_finite() or value < 0:
            raise ValueError(f"not an amount: {text[:40]!r}")
        minor = value.scaleb(places)
        if minor > MAX_MINOR:
            raise ValueError(f"amount out of range: {text[:40]!r}")
        return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except ArithmeticError:  # decimal's InvalidOperation, Overflow...: still the peer's text
        raise ValueError(f"not an amount: {text[:40]!r}") from None
