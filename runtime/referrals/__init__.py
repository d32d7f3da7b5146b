"""Referrals and acquisition links: what a start payload says, and the rules of rewards.

``parse_start`` reads a ``/start`` payload (``ref_<code>``, ``ad_<code>``); anything else
is no source at all. ``rules`` turns ``[referrals]`` into the storage's ``Rules``. The
records and grants themselves are ``runtime.storage.referrals``; the jobs that grant and
take back rewards run in the ``referral_rewards`` worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage.referrals import Level, Rules

MAX_PAYLOAD = 64
"""Telegram's limit on a start parameter; anything longer is not ours."""
REFERRAL_PREFIX = "ref_"
AD_PREFIX = "ad_"
_PAYLOAD = re.compile(r"(ref|ad)_([a-z0-9]{6,16})")


@dataclass(frozen=True, slots=True)
class StartSource:
    kind: Literal["ref", "ad"]
    code: str


def parse_start(payload: str | None) -> StartSource | None:
    """The source a start payload names, or None for anything else (malformed, too long,
    another deep link)."""
    if not payload or len(payload) > MAX_PAYLOAD:
        return None
    match = _PAYLOAD.fullmatch(payload)
    if match is None:
        return None
    kind: Literal["ref", "ad"] = "ref" if match.group(1) == "ref" else "ad"
    return StartSource(kind, match.group(2))


def referral_link(bot_username: str, code: str) -> str:
    return f"https://t.me/{bot_username}?start={REFERRAL_PREFIX}{code}"


def ad_link(bot_username: str, code: str) -> str:
    return f"https://t.me/{bot_username}?start={AD_PREFIX}{code}"


def rules(settings: Settings, catalog: Catalog) -> Rules:
    """The reward rules in force (no levels while referrals are disabled)."""
    config = settings.referrals
    levels = tuple(
        Level(level.reward, level.amount, every_payment=level.payments == "every")
        for level in config.levels
    )
    return Rules(
        levels=levels if config.enabled else (),
        balance_currency=settings.billing.balance_currency,
        backend=default_backend(catalog),
        activation_attempts=settings.billing.activation_max_attempts,
    )


def default_backend(catalog: Catalog) -> str | None:
    """Where granted days go for a user with no subscription: the first plan's backend,
    else the trial's."""
    for plan in catalog.plans:
        return plan.backend
    return catalog.trial.backend if catalog.trial is not None else None


def invited_trial(settings: Settings) -> timedelta | None:
    """The trial an invited user gets instead of the usual one, if longer."""
    config = settings.referrals
    hours = config.invited_trial_hours
    if not config.enabled or hours is None or hours <= settings.trial.duration_hours:
        return None
    return timedelta(hours=hours)


__all__ = [
    "AD_PREFIX",
    "MAX_PAYLOAD",
    "REFERRAL_PREFIX",
    "StartSource",
    "ad_link",
    "default_backend",
    "invited_trial",
    "parse_start",
    "referral_link",
    "rules",
]
