"""Who may see and buy a plan: small predicates over what is known of a user, by name.

``[plans.<id>] audience`` lists names from ``AUDIENCES``; a plan admits a user when any of
them does. A new group is a field of ``Customer`` (read in one query by
``runtime.storage.audiences``), a predicate here and its name in the config's
``PlanAudience``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._catalog import Plan


@dataclass(frozen=True, slots=True)
class Customer:
    has_paid: bool
    """A payment of theirs was credited (a purchase or a top-up), refunded or not."""
    invited: bool = False
    """Their first start came through a referral or an acquisition link."""


AUDIENCES: Mapping[str, Callable[[Customer], bool]] = {
    "everyone": lambda customer: True,
    "new": lambda customer: not customer.has_paid,
    "invited": lambda customer: customer.invited,
}


def admits(plan: Plan, customer: Customer) -> bool:
    return any(AUDIENCES[name](customer) for name in plan.audience if name in AUDIENCES)
