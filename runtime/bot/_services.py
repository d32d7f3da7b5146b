"""What the bot asks of the rest of the runtime: one trio call per handler.

Each method is one service call (a unit of work, a checkout, a confirmation), so a handler
crosses the seam once. The services are read from ``Services`` at call time: the
database, billing and access exist only once the runtime has started.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runtime.access import Access, TrialUnavailable
from runtime.billing import BalanceOffer, Billing, Checkout
from runtime.catalog import Catalog, admits
from runtime.failures import DomainError
from runtime.plugin_api import Services
from runtime.plugin_api.payments import TelegramPayment
from runtime.promo import Promos
from runtime.referrals import invited_trial, parse_start
from runtime.storage import (
    Database,
    audiences,
    gates,
    grants,
    saved_methods,
    subscriptions,
    users,
)
from runtime.storage import payments as payment_store
from runtime.storage import referrals as referral_store
from runtime.storage.balance_payments import BalancePayment, Basis
from runtime.storage.discounts import Discount
from runtime.storage.payments import Finalized
from runtime.storage.saved_methods import SavedMethod
from runtime.storage.subscriptions import Subscription
from runtime.storage.users import User
from runtime.traffic import Traffic, TrafficStatus, traffic_of

if TYPE_CHECKING:
    from runtime.admin_actions import UserEditor
    from runtime.storage import admin, moderation, reports

ActorTable = Callable[[], Mapping[str, Any]]
"""Returns the supervisor's status document: ``{"state", "ready", "actors": [...]}`` as
served at ``/status`` (each actor as ``ActorStatus.to_json()``)."""

TELEGRAM_PROVIDERS = ("stars", "card")
"""Providers whose invoices are paid inside Telegram (pre-checkout, successful_payment)."""


STARTED_KEPT = 100_000
"""Users remembered as started, per process (a few MB at most)."""


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
    traffic: Mapping[int, TrafficStatus] = field(default_factory=dict)
    """Used and allowed traffic by subscription id, where known (``runtime.traffic``)."""


class BotServices:
    def __init__(
        self, services: Services, catalog: Catalog, *, actor_table: ActorTable | None = None
    ) -> None:
        self._services = services
        self.catalog = catalog
        self.actor_table = actor_table
        self._started: set[int] = set()
        """Users known to have started: an origin is never changed, so their next
        ``/start`` needs no database call."""

    @property
    def db(self) -> Database:
        return self._services.db

    @property
    def billing(self) -> Billing:
        return self._services.billing

    @property
    def access(self) -> Access:
        return self._services.access

    @property
    def traffic(self) -> Traffic:
        """Plans' limits at work: usage, traffic top-ups, devices."""
        return traffic_of(self._services)

    def provider_names(self) -> list[str]:
        """The payment providers that are loaded, in their order."""
        try:
            return list(self.billing.providers)
        except RuntimeError:  # not started yet
            return []

    # -- users -----------------------------------------------------------------------

    async def touch(
        self,
        user_id: int,
        *,
        username: str | None,
        language: str | None,
        name: str | None,
        start: str | None = None,
    ) -> User:
        """Record a contact; while registration is open it also admits the user. ``start``:
        the contact is a ``/start`` with this payload (``""`` without one), and its first
        start is recorded in the same statement."""
        admit = self._services.settings.access_rules.registration == "open"
        if start is None or user_id in self._started:
            return await users.touch_user(
                self.db, user_id, username=username, language=language, name=name, admit=admit
            )
        referral, ad = self._start_source(start)
        user = await referral_store.touch_at_start(
            self.db,
            user_id,
            username=username,
            language=language,
            name=name,
            admit=admit,
            referral_code=referral,
            ad_code=ad,
        )
        self._remember_started(user_id)
        return user

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
        try:
            traffic = self.traffic
        except RuntimeError:  # not started yet
            return Overview(found, tuple(running))
        return Overview(found, tuple(running), await traffic.statuses(running))

    async def subscription(self, user_id: int, subscription_id: int) -> Subscription | None:
        found = await subscriptions.get(self.db, subscription_id)
        return found if found is not None and found.user_id == user_id else None

    async def set_language(self, user_id: int, language: str) -> SavedMethod | None:
        """Returns the user's saved card, for the settings screen that follows."""
        await users.set_language(self.db, user_id, language)
        return await saved_methods.in_use(self.db, user_id)

    async def set_auto_renew(self, user_id: int, enabled: bool) -> SavedMethod | None:
        """Returns the user's saved card, for the settings screen that follows."""
        await users.set_auto_renew(self.db, user_id, enabled)
        return await saved_methods.in_use(self.db, user_id)

    async def saved_card(self, user_id: int) -> SavedMethod | None:
        """The payment method the user saved for auto-renewal, if any."""
        return await saved_methods.in_use(self.db, user_id)

    async def remove_card(self, user_id: int, method_id: int) -> bool:
        """Revoke the user's own saved method ``method_id``: never charged again. False
        when it is not theirs or was removed already."""
        return await saved_methods.revoke(self.db, user_id, method_id, reason="removed by the user")

    def saves_methods(self, provider: str) -> bool:
        """Whether paying with ``provider`` can save the card for auto-renewal."""
        try:
            return self.billing.saves_methods(provider)
        except RuntimeError:  # not started yet
            return False

    async def mark_blocked(self, user_id: int) -> None:
        await users.mark_blocked(self.db, user_id)

    # -- trial and checkout ------------------------------------------------------------

    async def start_trial(self, user_id: int) -> Subscription:
        """The new trial; ``TrialUsed`` (with the running trial, if any) when it was had.

        Safe to run twice: the second run finds the trial the first one started.
        """
        try:
            return await self.access.start_trial(
                user_id, duration=await self._invited_trial(user_id)
            )
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

    async def _invited_trial(self, user_id: int) -> timedelta | None:
        longer = invited_trial(self._services.settings)
        if longer is None or await referral_store.inviter_of(self.db, user_id) is None:
            return None
        return longer

    async def admitted_plans(self, user_id: int) -> frozenset[str]:
        """The plans this user may see and buy (their ``audience``)."""
        customer = await audiences.customer(self.db, user_id)
        return frozenset(plan.id for plan in self.catalog.plans if admits(plan, customer))

    async def _admitted(self, user_id: int, plan_id: str) -> bool:
        plan = self.catalog.find(plan_id)
        if plan is None or plan.audience == ("everyone",):
            return True  # an unknown plan is refused further on, as before
        return plan_id in await self.admitted_plans(user_id)

    async def buy(
        self,
        user_id: int,
        plan_id: str,
        provider: str,
        *,
        language: str,
        save_method: bool = False,
    ) -> Checkout:
        if not await self._admitted(user_id, plan_id):
            raise DomainError(f"plan {plan_id!r} is not offered to this user")
        return await self.billing.buy(
            user_id, plan_id, provider, language=language, save_method=save_method
        )

    async def discount(self, user_id: int) -> Discount | None:
        """The discount the user's next purchase gets (for the prices on screen)."""
        return await self.billing.discount(user_id)

    @property
    def promo(self) -> Promos:
        """Promo codes and personal discounts (``runtime.promo``)."""
        return Promos(
            self.db,
            self.catalog,
            backend=self.default_backend,
            activation_max_attempts=self._services.settings.billing.activation_max_attempts,
        )

    async def balance_offer(self, user_id: int, plan_id: str) -> BalanceOffer | None:
        if not await self._admitted(user_id, plan_id):
            return None
        return await self.billing.balance_offer(user_id, plan_id)

    async def pay_from_balance(self, user_id: int, plan_id: str, basis: Basis) -> BalancePayment:
        if not await self._admitted(user_id, plan_id):
            raise DomainError(f"plan {plan_id!r} is not offered to this user")
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
    # An admin's, now and then: each imports its storage when called, so that an idle
    # service does not hold it (nor the admins' handlers, see ``handlers._lazy``).

    async def statistics(self) -> admin.Statistics:
        from runtime.storage import admin

        return await admin.statistics(self.db)

    async def lookup(self, query: str) -> tuple[admin.UserCard | None, list[User]]:
        """A user's card by id or username, else by name: the card when one user matches,
        or the users whose name matches."""
        from runtime.storage import admin

        card = await admin.find_user(self.db, query)
        if card is not None or query.startswith("@") or query.lstrip("-").isdigit():
            return card, []
        matches = await admin.search_by_name(self.db, query)
        if len(matches) == 1:
            return await admin.find_user(self.db, str(matches[0].telegram_id)), []
        return None, matches

    async def find_user(self, query: str) -> admin.UserCard | None:
        from runtime.storage import admin

        return await admin.find_user(self.db, query)

    async def grant_days(
        self, who: str, days: int, *, operation_key: str, by: int
    ) -> tuple[int | None, admin.DaysAdjusted | None]:
        """Grant (or, with negative ``days``, take back) days of the user named by id or
        username, as the admin ``by``; returns their id (None when unknown) and what
        changed."""
        from runtime.storage import admin

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

    async def moderate(
        self, action: str, who: str, *, by: int, key: str, reason: str | None, amount_minor: int = 0
    ) -> tuple[int | None, moderation.Applied | None]:
        """An admin's ``action`` (``ban``, ``unban``, ``balance``, ``revoke``) on the user
        named by id or username; their id (None when unknown) and what it did."""
        from runtime.storage import admin, moderation

        card = await admin.find_user(self.db, who)
        if card is None:
            return None, None
        user_id = card.user.telegram_id
        actor = grants.admin_actor(by)
        if action in ("ban", "unban"):
            done = await moderation.set_ban(
                self.db, user_id, banned=action == "ban", actor=actor, key=key, reason=reason
            )
        elif action == "balance":
            done = await moderation.adjust_balance(
                self.db, user_id, amount_minor, actor=actor, key=key, reason=reason or ""
            )
        elif action == "revoke":
            done = await moderation.revoke_access(
                self.db,
                user_id,
                actor=actor,
                key=key,
                reason=reason,
                max_attempts=self._services.settings.billing.activation_max_attempts,
            )
        else:
            raise ValueError(f"unknown moderation action {action!r}")
        return user_id, done

    @property
    def editor(self) -> UserEditor:
        """The admin's user editor: expiry, plans, traffic and device resets."""
        from runtime.admin_actions import UserEditor

        return UserEditor(
            self.db,
            self.catalog,
            lambda: self.traffic,
            default_backend=self.default_backend,
            max_attempts=self._services.settings.billing.activation_max_attempts,
        )

    async def admit(self, user_id: int, *, registration: str) -> bool:
        """Admit a user the bot has not admitted before, if ``registration`` lets them in."""
        if registration == "open":
            await gates.admit(self.db, user_id)
            return True
        if registration == "invite_only":
            return await gates.admit_invited(self.db, user_id)
        return False

    async def accept_rules(self, user_id: int, version: int) -> bool:
        return await gates.accept_rules(self.db, user_id, version)

    async def membership_seen(self, user_id: int) -> None:
        await gates.membership_seen(self.db, user_id)

    async def wait_for_purchases(self, user_id: int) -> None:
        await gates.wait_for_purchases(self.db, user_id)

    async def report(self, period: str) -> reports.Report:
        from runtime.storage import reports

        return await reports.report(self.db, period)

    async def audit_history(
        self, who: str, *, limit: int
    ) -> tuple[int | None, list[grants.AuditEntry]]:
        from runtime.storage import admin

        card = await admin.find_user(self.db, who)
        if card is None:
            return None, []
        user_id = card.user.telegram_id
        return user_id, await grants.history(self.db, user_id, limit=limit)

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

    # -- referrals and acquisition links -------------------------------------------------

    async def record_start(self, user_id: int, payload: str | None) -> referral_store.Origin | None:
        """The user's first start and its source (a referral code while referrals are
        enabled, an ad link); a later start changes nothing."""
        if user_id in self._started:
            return None
        referral, ad = self._start_source(payload)
        origin = await referral_store.record_start(
            self.db, user_id, referral_code=referral, ad_code=ad
        )
        self._remember_started(user_id)
        return origin

    def started(self, user_id: int) -> bool:
        """Whether this process saw the user's first start recorded: a plain read, so that
        asyncio's side need not cross into trio for a start that changes nothing."""
        return user_id in self._started

    def _start_source(self, payload: str | None) -> tuple[str | None, str | None]:
        """The referral code (while referrals are enabled) and the ad code a payload names."""
        source = parse_start(payload)
        referral = source.code if source and source.kind == "ref" else None
        if not self._services.settings.referrals.enabled:
            referral = None
        ad = source.code if source and source.kind == "ad" else None
        return referral, ad

    def _remember_started(self, user_id: int) -> None:
        if len(self._started) >= STARTED_KEPT:
            self._started.clear()
        self._started.add(user_id)

    async def referral_summary(self, user_id: int) -> tuple[str, referral_store.Summary]:
        """The user's referral code (made on first use) and their figures."""
        code = await referral_store.code_of(self.db, user_id)
        return code, await referral_store.summary(self.db, user_id)

    async def referral_statistics(self) -> referral_store.Statistics:
        return await referral_store.statistics(self.db)

    async def create_ad_link(
        self, name: str, *, by: int, operation_key: str
    ) -> referral_store.AdLink:
        return await referral_store.create_ad_link(
            self.db, name, by=by, operation_key=operation_key
        )

    async def ad_links(self) -> list[referral_store.AdLinkTotals]:
        return await referral_store.ad_links(self.db)

    async def ad_link_report(self, code: str) -> referral_store.AdLinkReport | None:
        return await referral_store.ad_link_report(self.db, code)
