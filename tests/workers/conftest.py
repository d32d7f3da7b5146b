from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import trio

from runtime.alerts import Alert
from runtime.config import Settings
from runtime.failures import InfraError, classify
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Connection, Database
from runtime.supervision import ActorSpec, ActorStatus, Supervisor, SupervisorObserver

from .fake_bot_api import TOKEN

SETTINGS_DATA: dict[str, Any] = {
    "telegram": {"token": TOKEN},
    "plans": {
        "month": {
            "title": {"en": "1 month", "ru": "1 месяц"},
            "duration_days": 30,
            "backend": "marzban",
            "prices": {"stars": {"XTR": 150}, "card": {"RUB": 19900}},
        },
        "stars_only": {
            "title": {"en": "Stars month"},
            "duration_days": 30,
            "backend": "marzban",
            "prices": {"stars": {"XTR": 100}},
        },
    },
    "trial": {"enabled": True, "backend": "marzban", "duration_hours": 24},
    "reminders": {"trial_before_hours": [6], "expiry_before_hours": [72, 24]},
}


def make_settings(**sections: Any) -> Settings:
    data = {**SETTINGS_DATA, **sections}
    return Settings.model_validate(data)


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def seen(self) -> list[str]:
        return [a.key for a in self.alerts]


class IterationContext:
    """What a worker's iteration uses of its actor context, for calling it directly: the
    stop event and the degraded mark (kept in ``degraded``)."""

    def __init__(self) -> None:
        self.stop_requested = trio.Event()
        self.degraded: str | None = None
        self.cause: str | None = None
        self.marks: list[str | None] = []

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        self.degraded = reason
        self.cause = cause
        self.marks.append(reason)


class FlakyDatabase:
    """The test database, down (every unit fails as a lost database) while ``down``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise InfraError("the database is not accepting connections (test)")

    async def transaction(self, work: Any, **kwargs: Any) -> Any:
        self._check()
        return await self._db.transaction(work, **kwargs)

    async def read(self, work: Any, **kwargs: Any) -> Any:
        self._check()
        return await self._db.read(work, **kwargs)

    async def statement(self, work: Any, **kwargs: Any) -> Any:
        self._check()
        return await self._db.statement(work, **kwargs)

    async def session(self, work: Any) -> Any:
        self._check()
        return await self._db.session(work)


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


def make_services(db: Any, settings: Settings, alerts: Alerts) -> Services:
    services = Services(settings, Metrics(), instance_id="test-host")
    services.provide_db(db)
    services.provide_alerts(alerts)  # type: ignore[arg-type]
    return services


@pytest.fixture
def services(db: Database, settings: Settings, alerts: Alerts) -> Services:
    return make_services(db, settings, alerts)


async def fetch(db: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return list(await db.transaction(unit))


async def fetchval(db: Any, sql: str, *args: Any) -> Any:
    rows = await fetch(db, sql, *args)
    return next(iter(rows[0].values())) if rows else None


async def add_user(
    db: Any, user_id: int, *, balance: int = 0, auto_renew: bool = False, language: str = "en"
) -> None:
    await fetch(
        db,
        "insert into users (telegram_id, language, balance_minor, auto_renew)"
        " values ($1, $2, $3, $4) on conflict (telegram_id) do update set"
        " balance_minor = $3, auto_renew = $4, language = $2",
        user_id,
        language,
        balance,
        auto_renew,
    )


async def add_subscription(
    db: Any,
    user_id: int,
    expires_in: timedelta,
    *,
    kind: str = "paid",
    plan_id: str = "month",
    status: str = "active",
    backend: str = "marzban",
) -> int:
    """A subscription whose account is active already (no activation job)."""
    await fetch(db, "insert into users (telegram_id) values ($1) on conflict do nothing", user_id)
    value: int = await fetchval(
        db,
        "insert into subscriptions (user_id, plan_id, kind, status, starts_at, expires_at,"
        " activation_status, vpn_backend, vpn_account)"
        " values ($1, $2, $3, $4, least(now(), now() + $5::interval) - interval '30 days',"
        " now() + $5::interval, 'active', $6, 'u' || $1::bigint)"
        " returning id",
        user_id,
        plan_id,
        kind,
        status,
        expires_in,
        backend,
    )
    return value


async def jobs(db: Any, kind: str | None = None) -> list[dict[str, Any]]:
    return await fetch(
        db,
        "select id, kind, dedup_key, payload, status, attempts, last_error from outbox"
        " where $1::text is null or kind = $1 order by id",
        kind,
    )


class Recorder(SupervisorObserver):
    """Iteration failures as the supervisor reports them: (actor, failure type, time)."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str, float]] = []

    def iteration_failed(self, status: ActorStatus, error: BaseException) -> None:
        self.failures.append((status.name, classify(error).type.value, trio.current_time()))

    def actor_failed(self, status: ActorStatus, error: BaseException) -> None:
        self.failures.append((status.name, "crash:" + classify(error).type.value, 0.0))


def fast(spec: ActorSpec, *, interval: float = 0.05, min_sleep: float = 0.3) -> ActorSpec:
    """The spec with test-sized pauses (as ``[actors.<name>]`` would set them)."""
    return spec.evolve(min_sleep_on_failure=min_sleep, extra={**spec.extra, "interval": interval})


@asynccontextmanager
async def supervised(
    *specs: ActorSpec, observer: SupervisorObserver | None = None
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(list(specs), observer=observer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        try:
            yield supervisor
        finally:
            supervisor.request_shutdown()
            with trio.fail_after(60):
                await supervisor.stopped.wait()


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a test helper's deadline
    every: float = 0.05,
) -> None:
    """Poll ``check`` (it reads the database or a fake) until it holds."""
    with trio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110
            await trio.sleep(every)
