from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from runtime.config import ConfigProblem, PlanSettings, Settings
from runtime.failures import DomainError
from runtime.plugin_api.limits import NO_CAPABILITIES, BackendCapabilities
from runtime.storage.subscriptions import Terms

GIB = 2**30
TRIAL_PLAN_ID = "trial"


class UnknownPlan(DomainError):
    pass


@dataclass(frozen=True, slots=True)
class Price:
    provider: str
    currency: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    titles: Mapping[str, str]
    duration: timedelta
    backend: str
    prices: tuple[Price, ...]
    traffic_limit_bytes: int | None
    device_limit: int | None
    audience: tuple[str, ...] = ("everyone",)
    """Who may see and buy it: names of ``runtime.catalog.audiences`` (any of them)."""

    def title(self, language: str) -> str:
        return (
            self.titles.get(language) or self.titles.get("en") or next(iter(self.titles.values()))
        )

    def price(self, provider: str) -> Price | None:
        return next((p for p in self.prices if p.provider == provider), None)

    def price_in(self, currency: str) -> int | None:
        """What the plan costs from a balance kept in ``currency`` (the lowest price in it,
        if several providers charge in it); None: it cannot be paid from that balance."""
        amounts = [p.amount_minor for p in self.prices if p.currency == currency]
        return min(amounts) if amounts else None

    @property
    def terms(self) -> Terms:
        return Terms(
            plan_id=self.id,
            backend=self.backend,
            duration=self.duration,
            traffic_limit_bytes=self.traffic_limit_bytes,
            device_limit=self.device_limit,
        )


def _plan(plan_id: str, plan: PlanSettings) -> Plan:
    prices = tuple(
        Price(provider, currency, amount)
        for provider, by_currency in plan.prices.items()
        for currency, amount in by_currency.items()
    )
    return Plan(
        id=plan_id,
        titles=dict(plan.title),
        duration=timedelta(days=plan.duration_days),
        backend=plan.backend,
        prices=prices,
        traffic_limit_bytes=plan.traffic_limit_gb * GIB or None,
        device_limit=plan.device_limit or None,
        audience=tuple(plan.audience),
    )


def _ordered(plans: Mapping[str, PlanSettings]) -> list[tuple[str, PlanSettings]]:
    """By ``order`` (plans without one after those with it), then in config order."""
    indexed = list(enumerate(plans.items()))
    indexed.sort(key=lambda item: (item[1][1].order is None, item[1][1].order or 0, item[0]))
    return [entry for _, entry in indexed]


def limit_problems(
    where: str, backend: str, capabilities: BackendCapabilities, *, traffic: bool, devices: bool
) -> list[ConfigProblem]:
    """Limits ``where`` asks of ``backend`` that it cannot enforce."""
    found = []
    if traffic and not capabilities.traffic_limit:
        found.append(
            ConfigProblem(
                f"{where}.traffic_limit_gb",
                f"VPN backend {backend!r} cannot enforce a traffic limit:"
                " set 0 (unlimited) or use a backend that can",
            )
        )
    if devices and not capabilities.device_limit:
        found.append(
            ConfigProblem(
                f"{where}.device_limit",
                f"VPN backend {backend!r} cannot enforce a device limit:"
                " set 0 (unlimited) or use a backend that can",
            )
        )
    return found


class Catalog:
    def __init__(self, plans: Mapping[str, Plan], trial: Terms | None) -> None:
        self._plans = dict(plans)
        self.trial = trial

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        plans = {plan_id: _plan(plan_id, plan) for plan_id, plan in _ordered(settings.plans)}
        trial = None
        if settings.trial.enabled and settings.trial.backend:
            trial = Terms(
                plan_id=TRIAL_PLAN_ID,
                backend=settings.trial.backend,
                duration=timedelta(hours=settings.trial.duration_hours),
                traffic_limit_bytes=settings.trial.traffic_limit_gb * GIB or None,
                device_limit=settings.trial.device_limit or None,
            )
        return cls(plans, trial)

    @property
    def plans(self) -> list[Plan]:
        return list(self._plans.values())

    def get(self, plan_id: str) -> Plan:
        try:
            return self._plans[plan_id]
        except KeyError:
            raise UnknownPlan(f"no plan {plan_id!r}") from None

    def find(self, plan_id: str | None) -> Plan | None:
        return self._plans.get(plan_id) if plan_id else None

    def problems(
        self,
        *,
        backends: Collection[str] | Mapping[str, BackendCapabilities],
        providers: Collection[str],
    ) -> list[ConfigProblem]:
        """Plans that name a backend or provider no loaded plugin offers, or limits their
        backend cannot enforce (``backends`` maps names to what each declares; a plain
        collection of names declares nothing)."""
        declared = backends if isinstance(backends, Mapping) else {}
        found = []
        for plan in self._plans.values():
            if plan.backend not in backends:
                found.append(
                    ConfigProblem(
                        f"plans.{plan.id}.backend",
                        f"no VPN backend {plan.backend!r} is loaded"
                        f" (loaded: {', '.join(sorted(backends)) or 'none'})",
                    )
                )
            else:
                found += limit_problems(
                    f"plans.{plan.id}",
                    plan.backend,
                    declared.get(plan.backend, NO_CAPABILITIES),
                    traffic=plan.traffic_limit_bytes is not None,
                    devices=plan.device_limit is not None,
                )
            per_provider: dict[str, int] = {}
            for price in plan.prices:
                per_provider[price.provider] = per_provider.get(price.provider, 0) + 1
                if price.provider not in providers:
                    found.append(
                        ConfigProblem(
                            f"plans.{plan.id}.prices.{price.provider}",
                            f"no payment provider {price.provider!r} is loaded"
                            f" (loaded: {', '.join(sorted(providers)) or 'none'})",
                        )
                    )
            for provider, count in per_provider.items():
                if count > 1:
                    found.append(
                        ConfigProblem(
                            f"plans.{plan.id}.prices.{provider}",
                            "give one currency per provider",
                        )
                    )
        if self.trial is not None and self.trial.backend not in backends:
            found.append(
                ConfigProblem("trial.backend", f"no VPN backend {self.trial.backend!r} is loaded")
            )
        elif self.trial is not None:
            # not the device limit: ``[trial] device_limit`` defaults to 1, so refusing it
            # would stop every configuration with a trial on a panel without device limits
            found += limit_problems(
                "trial",
                self.trial.backend,
                declared.get(self.trial.backend, NO_CAPABILITIES),
                traffic=self.trial.traffic_limit_bytes is not None,
                devices=False,
            )
        return found
