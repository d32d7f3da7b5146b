"""Promo codes and discounts: what users activate and admins manage.

``rules`` says what a code may be (free of the rest of the runtime: the configuration
uses it); ``Promos`` is the service the bot calls; ``parse_new_code`` reads an admin's
``/promo_new``; ``seed_codes`` creates the configured codes at start. The units of work are
in ``runtime.storage.promo`` and ``runtime.storage.discounts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from ._command import BadCommand, parse_new_code
    from ._seed import seed_codes
    from ._service import CodeInfo, Promos, UnknownPlan

__all__ = ["BadCommand", "CodeInfo", "Promos", "UnknownPlan", "parse_new_code", "seed_codes"]

_exported = lazy_exports(
    __name__,
    {
        "BadCommand": "._command",
        "parse_new_code": "._command",
        "seed_codes": "._seed",
        "CodeInfo": "._service",
        "Promos": "._service",
        "UnknownPlan": "._service",
    },
)


def __getattr__(name: str) -> Any:
    return _exported(name)
