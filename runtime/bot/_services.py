"""What the bot asks of the rest of the runtime: one trio call per handler.

Each method is one service call (a unit of work, a checkout, a confirmation), so a handler
crosses the seam once. The services are read from ``Services`` at call time: the
database, billing and access exist only once the runtime has started.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.access import Access, TrialUnavailable
from runtime.billing import BalanceOffer, Billing, Checkout
from runtime.catalog import Catalog
from runtime.failures import DomainError
from runtime.plugin_api import Services
from runtime.plugin_api.payments import TelegramPayment
from runtime.storage import Database, admin, grants, subscriptions, users
from runtime.storage import payments as payment_store
from runtime.storage.balance_payments import BalancePayment, Basis
from runtime.storage.payments import Finalized
from runtime.storage.subscriptions import Subscription
from runtime.storage.users import User

ActorTable = Callable[[], Mapping[str, Any]]
"""Returns the supervisor's status document: ``{"state", "ready", "actors": [...]}`` as
served at ``/status`` (each actor as ``ActorStatus.to_json()``)."""

TELEGRAM_PROVIDERS = ("stars", "card")
"""Providers whose invoices are paid inside Telegram (pre-checkout, successful_payment)."""


class TrialUsed(DomainError):
    """The user had their trial; ``current`` is it when it still runs."""

    def __init__(self, current: Subscription | None) -> None:
        super().__init__("the trial was used already")
        self.current = current


@dataclass(frozen=True, slots=True)
class Overview:
    """A user and their subscriptions that still run (newest expiry first)."""

    user: User
    active: tuple[Subscription, ...]


class BotServices:
    def __init__(
        self, services: Services, catalog: Catalog, *, actor_table: ActorTable | None = None
    ) -> None:
        self._services = services
        self.catalog = catalog
        self.actor_table = actor_table

    @property
    def db(self) -> Database:
        return self._services.db

    @property
    def billing(self) -> Billing:
        return self._services.billing

    @property
    def access(self) -> Access:
        return self._services.access

    def provider_names(self) -> list[str]:
        """The payment providers that are loaded, in their order."""
        try:
            return list(self.billing.providers)
        except RuntimeError:  # not started yet
            return []

    # -- users -----------------------------------------------------------------------

    async def touch(self, user_id: int, *, username: str | None, language: str | None) -> User:
        return await users.touch_user(self.db, user_id, username=username, language=language)

    async def overview(self, user_id: int) -> Overview:
        """The user (created if new) and their running subscriptions, in one unit."""
        found = await users.get_user(self.db, user_id)
        if found is None:
            found = await users.touch_user(self.db, user_id, username=None, language=None)
        now = datetime.now(UTC)
        running = [
            s
            for s in await subscriptions.of_user(self.db, user_id)
            if s.status == "active" and s.expires_at > now
        ]
        return Overview(found, tuple(running))

    async def subscription(self, user_id: int, subscription_id: int) -> Subscription | None:
        found = await subscriptions.get(self.db, subscription_id)
        return found if found is not None and found.user_id == user_id else None

    async def set_language(self, user_id: int, language: str) -> None:
        await users.set_language(self.db, user_id, language)

    async def set_auto_renew(self, user_id: int, enabled: bool) -> None:
        await users.set_auto_renew(self.db, user_id, enabled)

    async def mark_blocked(self, user_id: int) -> None:
        await users.mark_blocked(self.db, user_id)

    # -- trial and checkout ------------------------------------------------------------

    async def start_trial(self, user_id: int) -> Subscription:
        """The new trial; ``TrialUsed`` (with the running trial, if any) when it was had.

        Safe to run twice: the second run finds the trial the first one started.
        """
        try:
            return await self.access.start_trial(user_id)
        except TrialUnavailable:
            if self.catalog.trial is None:
                raise
        now = datetime.now(UTC)
        running = [
            s
            for s in await subscriptions.of_user(self.db, user_id)
            if s.kind == "trial" and s.status == "active" and s.expires_at > now
        ]
        raise TrialUsed(running[0] if running else None)

    async def buy(self, user_id: int, plan_id: str, provider: str, *, language: str) -> Checkout:
        return await self.billing.buy(user_id, plan_id, provider, language=language)

    async def balance_offer(self, user_id: int, plan_id: str) -> BalanceOffer | None:
        return await self.billing.balance_offer(user_id, plan_id)

    async def pay_from_balance(self, user_id: int, plan_id: str, basis: Basis) -> BalancePayment:
        return await self.billing.pay_from_balance(user_id, plan_id, basis)

    async def top_up(
        self, user_id: int, amount_minor: int, provider: str, *, title: str
    ) -> Checkout:
        return await self.billing.top_up(user_id, amount_minor, provider, title=title)

    # -- Telegram payments -------------------------------------------------------------

    async def check_pre_checkout(self, payload: str, *, currency: str, total_amount: int) -> bool:
        """Fast local checks only (one read): the intent exists, is for a Telegram
        provider, asks this amount in this currency, and is not paid yet."""
        intent = await payment_store.get(self.db, payload)
        return (
            intent is not None
            and intent.provider in TELEGRAM_PROVIDERS
            and intent.provider in self.provider_names()
            and intent.currency == currency
            and intent.amount_minor == total_amount
            and intent.status in ("created", "invoiced", "expired")
        )

    async def confirm_telegram_payment(self, payment: TelegramPayment) -> Finalized:
        """Credit a ``successful_payment`` from an update Telegram delivered: the update is
        the proof, its sender the payer (see ``Billing.confirm_telegram``)."""
        return await self.billing.confirm_telegram(payment)

    # -- admin -------------------------------------------------------------------------

    async def statistics(self) -> admin.Statistics:
        return await admin.statistics(self.db)

    async def find_user(self, query: str) -> admin.UserCard | None:
        return await admin.find_user(self.db, query)

    async def grant_days(
        self, who: str, days: int, *, operation_key: str, by: int
    ) -> tuple[int | None, admin.DaysAdjusted | None]:
        """Grant (or, with negative ``days``, take back) days of the user named by id or
        username, as the admin ``by``; returns their id (None when unknown) and what
        changed."""
        card = await admin.find_user(self.db, who)
        if card is None:
            return None, None
        user_id = card.user.telegram_id
        return user_id, await admin.adjust_days(
            self.db,
            user_id,
            days,
            operation_key=operation_key,
            backend=self.default_backend(),
            actor=grants.admin_actor(by),
            max_attempts=self._services.settings.billing.activation_max_attempts,
        )

    def default_backend(self) -> str:
        """Where granted days go for a user with no subscription: the first plan's backend,
        else the trial's."""
        for plan in self.catalog.plans:
            return plan.backend
        if self.catalog.trial is not None:
            return self.catalog.trial.backend
        raise DomainError("no plan or trial names a VPN backend to grant days on")

    async def refund(self, payment_id: str, *, through_provider: bool) -> payment_store.Refunded:
        return await self.billing.refund(payment_id, through_provider=through_provider)

    async def stars_refunded(self, charge_id: str, *, payer_id: int) -> None:
        """Telegram's ``refunded_payment``: see ``Billing.refunded_by_provider``."""
        await self.billing.refunded_by_provider("stars", charge_id, payer_id=payer_id)
