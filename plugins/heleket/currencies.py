"""The currencies a Heleket invoice can be priced in, checked against the plans at start.

A Heleket invoice is in a coin (``currency: "USDT"``: paid in that coin) or in a fiat
currency (``"USD"``: the payer pays its worth in a coin, at Heleket's rate). A price in a
currency Heleket does not take would be refused on every checkout, and a coin whose
smallest unit we do not know would be invoiced at the wrong amount (its minor units read
as cents), so such a plan is refused at start, naming the plan and the currency.

What this relies on. Heleket's authoritative list is ``POST /v1/payment/services``
(doc.heleket.com, "List of services": the merchant's ``network``/``currency`` pairs with
``is_available``); it needs the merchant's key and the network, which a configuration
check has neither of, so it is not asked at start. ``COINS`` is a static list instead:
the coins Heleket's documentation and payment page show (the "List of services" example
answers ``VERSE`` and ``DAI`` on ``ETH``), not checked against a live answer; each with the
decimals our prices count in (the coin's usual smallest unit; the API takes amounts as
decimal strings, so this is our convention, not the chain's). A coin missing here is
declared with ``asset_decimals``, which also overrides these decimals. Fiat currencies are
the operator's ``fiat_currencies`` (Heleket's documentation names no fixed list; USD is
its own example).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from runtime.config import ConfigProblem

COINS: Mapping[str, int] = {
    "BTC": 8,
    "BCH": 8,
    "DASH": 8,
    "DOGE": 8,
    "LTC": 8,
    "ETH": 18,
    "BNB": 18,
    "DAI": 18,
    "POL": 18,
    "SHIB": 18,
    "VERSE": 18,
    "TON": 9,
    "SOL": 9,
    "TRX": 6,
    "USDT": 6,
    "USDC": 6,
    "XMR": 12,
}
"""Coins Heleket takes (see the module's text), with the decimals of their minor unit."""

DEFAULT_FIAT = ("USD", "EUR", "RUB")

PROVIDER = "heleket"


def price_problems(
    plans: Mapping[str, Any], *, asset_decimals: Mapping[str, int], fiat: Collection[str]
) -> list[ConfigProblem]:
    """A problem for each plan priced for Heleket in a currency it does not take here:
    neither a known coin, nor a declared one, nor an allowed fiat currency."""
    found = []
    for plan_id, plan in plans.items():
        for currency in plan.prices.get(PROVIDER) or {}:
            if currency in asset_decimals or currency in COINS or currency in fiat:
                continue
            found.append(
                ConfigProblem(
                    f"plans.{plan_id}.prices.{PROVIDER}",
                    f"plan {plan_id!r} is priced in {currency!r}, which Heleket does not"
                    f" take here: use a coin it takes ({', '.join(sorted(COINS))}), declare"
                    f" the coin's decimals in plugins.settings.{PROVIDER}.asset_decimals, or"
                    f" allow the fiat currency in plugins.settings.{PROVIDER}.fiat_currencies"
                    f" (now {', '.join(fiat) or 'none'})",
                )
            )
    return found
