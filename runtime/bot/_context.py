"""What every handler is given: the services, the texts and the shop's settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.i18n import Translator, format_date, format_days, format_money, format_time_left

from ._services import BotServices


@dataclass(frozen=True, slots=True)
class BotContext:
    """Injected into handlers as ``ctx`` (aiogram workflow data)."""

    svc: BotServices
    translator: Translator
    catalog: Catalog
    settings: Settings
    admin_ids: frozenset[int]

    def t(self, lang: str, key: str, /, **params: Any) -> str:
        return self.translator.t(lang, key, **params)

    @staticmethod
    def money(amount_minor: int, currency: str, *, lang: str) -> str:
        return format_money(amount_minor, currency, language=lang)

    @staticmethod
    def date(moment: datetime, *, lang: str) -> str:
        return format_date(moment, language=lang)

    def days(self, lang: str, days: int) -> str:
        """``30 days``, ``1 day``, ``21 день``."""
        return format_days(self.translator, lang, days)

    def time_left(self, lang: str, moment: datetime, now: datetime | None = None) -> str:
        """Until ``moment``, never understated: ``2 days 23 hours left``, ``ended``."""
        return format_time_left(self.translator, lang, moment - (now or datetime.now(UTC)))

    def provider_label(self, language: str, provider: str) -> str:
        key = f"providers.{provider}"
        if self.translator.has(key):
            return self.t(language, key)
        return self.t(language, "providers.other", name=provider)

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids
