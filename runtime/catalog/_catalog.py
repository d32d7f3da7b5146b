from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from runtime.config import ConfigProblem, PlanSettings, Settings
from runtime.failures import DomainError
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
    )


class Catalog:
    def __init__(self, plans: Mapping[str, Plan], trial: Terms | None) -> None:
        self._plans = dict(plans)
        self.trial = trial

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        plans = {plan_id: _plan(plan_id, plan) for plan_id, plan in settings.plans.items()}
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
        self, *, backends: Collection[str], providers: Collection[str]
    ) -> list[ConfigProblem]:
        """Plans that name a backend or provider no loaded plugin offers."""
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
        return found
