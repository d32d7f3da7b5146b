"""What users do with their plan's limits: see the traffic they used, buy more for the
current period, list and reset their devices."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

from runtime.billing import Checkout
from runtime.config import ConfigProblem, TrafficPackageSettings, TrafficSettings
from runtime.failures import DomainError
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.plugin_api.limits import Device, DeviceManager, capabilities_of
from runtime.plugin_api.payments import PaymentIntent, PaymentProvider
from runtime.plugin_api.vpn import VpnBackend
from runtime.storage import Database, subscriptions
from runtime.storage import payments as payment_store
from runtime.storage import traffic as store
from runtime.storage.subscriptions import Subscription, Terms, account_name

from ._usage import UsageReader

GIB = 2**30
TRAFFIC_START_PARAMETER = "sub"
"""Where a forwarded copy of a traffic invoice links: the subscription screen."""

_log = get_logger("traffic")

_TermsOf = Callable[[Subscription], Terms | None]


class NotOnSale(DomainError):
    """The package, provider or subscription does not allow this purchase."""


@dataclass(frozen=True, slots=True)
class TrafficStatus:
    limit_bytes: int | None
    """The period's limit (plan and top-ups); None: unlimited."""
    used_bytes: int | None
    """None: unknown (the panel cannot say, or is down with nothing cached)."""

    @property
    def remaining_bytes(self) -> int | None:
        if self.limit_bytes is None or self.used_bytes is None:
            return None
        return max(0, self.limit_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class DeviceReset:
    done: bool
    deleted: int = 0
    next_at: datetime | None = None
    """While cooling down: when the next reset is allowed."""


class Traffic:
    def __init__(
        self,
        db: Database,
        terms_of: _TermsOf,
        backends: Mapping[str, VpnBackend],
        providers: Mapping[str, PaymentProvider],
        settings: TrafficSettings,
        *,
        balance_currency: str,
        invoice_ttl_minutes: int = 60,
        activation_attempts: int = 8,
    ) -> None:
        self._db = db
        self._terms_of = terms_of
        self._backends = backends
        self._providers = providers
        self._settings = settings
        self._balance_currency = balance_currency
        self._ttl = invoice_ttl_minutes
        self._activation_attempts = activation_attempts
        self.usage = UsageReader(
            backends, ttl=settings.usage_cache_seconds, timeout=settings.panel_timeout_seconds
        )

    # -- usage ---------------------------------------------------------------------------

    def base_limit(self, subscription: Subscription) -> int | None:
        terms = self._terms_of(subscription)
        return terms.traffic_limit_bytes if terms else None

    async def status(self, subscription: Subscription) -> TrafficStatus:
        base = self.base_limit(subscription)
        limit = base
        if base is not None:
            limit = base + await store.extra_bytes(
                self._db, subscription.id, subscription.period_started_at
            )
        return await self.status_with(subscription, limit)

    async def status_with(self, subscription: Subscription, limit: int | None) -> TrafficStatus:
        name = subscription.vpn_account or account_name(subscription.user_id, subscription.id)
        found = await self.usage.used(subscription.vpn_backend, name)
        return TrafficStatus(limit, found.used_bytes if found is not None else None)

    async def statuses(self, running: Sequence[Subscription]) -> dict[int, TrafficStatus]:
        """Each subscription's status, the panels asked side by side (each within the
        panel timeout)."""
        found: dict[int, TrafficStatus] = {}

        async def one(subscription: Subscription) -> None:
            found[subscription.id] = await self.status(subscription)

        async with trio.open_nursery() as nursery:
            for subscription in running:
                if self.usage.supported(subscription.vpn_backend) or self.base_limit(subscription):
                    nursery.start_soon(one, subscription)
        return found

    # -- top-ups -------------------------------------------------------------------------

    def packages(self) -> list[TrafficPackageSettings]:
        return list(self._settings.packages)

    def package(self, package_id: str) -> TrafficPackageSettings:
        found = next((p for p in self._settings.packages if p.id == package_id), None)
        if found is None:
            raise NotOnSale(f"no traffic package {package_id!r}")
        return found

    def providers_for(self, package: TrafficPackageSettings) -> list[str]:
        return [name for name in self._providers if package.prices.get(name)]

    async def buy(
        self,
        user_id: int,
        subscription: Subscription,
        package_id: str,
        provider_name: str,
        *,
        title: str,
    ) -> Checkout:
        """Store the intent and its order, then ask the provider for an invoice."""
        package = self.package(package_id)
        if self.base_limit(subscription) is None:
            raise NotOnSale("the subscription's traffic is unlimited")
        by_currency = package.prices.get(provider_name) or {}
        provider = self._providers.get(provider_name)
        if provider is None or len(by_currency) != 1:
            raise NotOnSale(f"package {package_id!r} has no price for {provider_name!r}")
        ((currency, amount),) = by_currency.items()
        payment = await store.create_order(
            self._db,
            user_id=user_id,
            provider=provider_name,
            amount_minor=amount,
            currency=currency,
            order=store.TrafficOrder(
                subscription_id=subscription.id,
                package=package.id,
                bytes=package.gb * GIB,
                keep_as_balance=currency == self._balance_currency,
                activation_attempts=self._activation_attempts,
            ),
            ttl_minutes=self._ttl,
        )
        if payment is None:
            raise NotOnSale("the subscription is not running")
        invoice = await provider.create_invoice(
            PaymentIntent(
                id=payment.id,
                user_id=user_id,
                amount_minor=amount,
                currency=currency,
                purpose="topup",
                title=title,
                description=title,
                plan_id=None,
                start_parameter=TRAFFIC_START_PARAMETER,
            )
        )
        await payment_store.mark_invoiced(
            self._db, payment.id, external_id=invoice.external_id, url=invoice.url
        )
        _log.info(
            "traffic checkout created",
            operation="traffic.checkout",
            payment_id=payment.id,
            provider=provider_name,
            package=package.id,
            outcome="success",
        )
        return Checkout(payment, invoice)

    # -- what a user asks, for a subscription of theirs ---------------------------------

    async def running_of(self, user_id: int, subscription_id: int) -> Subscription | None:
        """The user's subscription if it is theirs and running; ids from outside are
        bounded here (a callback's number is no PostgreSQL bigint necessarily)."""
        if not 0 < subscription_id < 2**63:
            return None
        found = await subscriptions.get(self._db, subscription_id)
        if found is None or found.user_id != user_id or found.status != "active":
            return None
        return found if found.expires_at > datetime.now(UTC) else None

    async def buy_for(
        self, user_id: int, subscription_id: int, package_id: str, provider: str, *, title: str
    ) -> Checkout:
        subscription = await self.running_of(user_id, subscription_id)
        if subscription is None:
            raise NotOnSale("no such running subscription of this user")
        return await self.buy(user_id, subscription, package_id, provider, title=title)

    async def devices_of(
        self, user_id: int, subscription_id: int
    ) -> tuple[Subscription, list[Device]] | None:
        """None: no such running subscription of the user, or its panel keeps no devices.
        Raises when the panel fails (the caller says "try later")."""
        subscription = await self.running_of(user_id, subscription_id)
        if subscription is None or self.device_manager(subscription) is None:
            return None
        return subscription, await self.devices(subscription)

    async def reset_devices_of(self, user_id: int, subscription_id: int) -> DeviceReset | None:
        subscription = await self.running_of(user_id, subscription_id)
        if subscription is None or self.device_manager(subscription) is None:
            return None
        return await self.reset_devices(subscription)

    # -- devices -------------------------------------------------------------------------

    def device_manager(self, subscription: Subscription) -> DeviceManager | None:
        backend = self._backends.get(subscription.vpn_backend)
        if backend is None or not capabilities_of(backend).devices:
            return None
        return backend if isinstance(backend, DeviceManager) else None

    async def devices(self, subscription: Subscription) -> list[Device]:
        manager = self.device_manager(subscription)
        if manager is None:
            return []
        with trio.fail_after(self._settings.panel_timeout_seconds * 3):
            return await manager.devices(_name(subscription))

    async def reset_devices(self, subscription: Subscription) -> DeviceReset:
        """Delete every device of the subscription's account, at most once per cool-down
        (held in the database). A panel that fails gives the reset back."""
        manager = self.device_manager(subscription)
        if manager is None:
            raise NotOnSale("this panel keeps no devices")
        cooldown = timedelta(hours=self._settings.device_reset_cooldown_hours)
        taken, at = await store.claim_device_reset(
            self._db, subscription.id, user_id=subscription.user_id, cooldown=cooldown
        )
        if not taken:
            return DeviceReset(False, next_at=at + cooldown)
        try:
            deleted = await self.delete_devices(subscription)
        except BaseException:
            with trio.CancelScope(shield=True):
                await store.release_device_reset(self._db, subscription.id, at)
            raise
        return DeviceReset(True, deleted=deleted)

    async def delete_devices(self, subscription: Subscription) -> int:
        """Delete every device the panel lists for the subscription's account, with no
        cool-down (safe to repeat); how many it deleted. Raises when the panel fails."""
        manager = self.device_manager(subscription)
        if manager is None:
            raise NotOnSale("this panel keeps no devices")
        with trio.fail_after(self._settings.panel_timeout_seconds * 3):
            name = _name(subscription)
            deleted = 0
            for device in await manager.devices(name):
                deleted += await manager.delete_device(name, device.id)
        return deleted


def _name(subscription: Subscription) -> str:
    return subscription.vpn_account or account_name(subscription.user_id, subscription.id)


_shared: weakref.WeakKeyDictionary[Services, Traffic] = weakref.WeakKeyDictionary()


def traffic_of(services: Services) -> Traffic:
    """The one ``Traffic`` of a running instance (the bot and the reminders share its
    usage cache); made on first use, once billing and access have started."""
    found = _shared.get(services)
    if found is None:
        settings = services.settings
        found = Traffic(
            services.db,
            services.access.terms_of,
            services.access.backends,
            services.billing.providers,
            settings.traffic,
            balance_currency=settings.billing.balance_currency,
            invoice_ttl_minutes=settings.billing.invoice_ttl_minutes,
            activation_attempts=settings.billing.activation_max_attempts,
        )
        _shared[services] = found
    return found


def package_problems(
    settings: TrafficSettings, *, providers: Collection[str], limited_plans: bool
) -> list[ConfigProblem]:
    """Traffic packages priced by a provider no plugin offers, or in several currencies
    by one provider (an invoice is in one), or on sale with no plan to add traffic to."""
    found = []
    for index, package in enumerate(settings.packages):
        where = f"traffic.packages[{index}]"
        for provider, by_currency in package.prices.items():
            if provider not in providers:
                found.append(
                    ConfigProblem(
                        f"{where}.prices.{provider}",
                        f"no payment provider {provider!r} is loaded"
                        f" (loaded: {', '.join(sorted(providers)) or 'none'})",
                    )
                )
            elif len(by_currency) != 1:
                found.append(
                    ConfigProblem(f"{where}.prices.{provider}", "give one currency per provider")
                )
    if settings.packages and not limited_plans:
        found.append(
            ConfigProblem(
                "traffic.packages", "no plan limits traffic: there is nothing to add traffic to"
            )
        )
    return found
