"""Behavioural contracts every VPN backend and payment provider must pass.

A plugin author subclasses the contract class in their own tests and provides one async
fixture; pytest then runs every check against their plugin::

    class TestMyBackend(VpnBackendContract):
        @pytest.fixture
        async def subject(self) -> AsyncIterator[BackendUnderTest]:
            fake = MyFakePanel()
            async with fake.running() as url:
                yield BackendUnderTest(MyBackend(url, token="t"), fake, secrets=["t"],
                                       make_fresh=lambda: MyBackend(url, token="t"),
                                       use_traffic=fake.use_traffic)

With a real panel instead of a fake, pass ``peer=None``: the fault checks are skipped
(and the traffic checks, without ``use_traffic``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from runtime.failures import DependencyError, FailureType, classify
from runtime.plugin_api.limits import capabilities_of
from runtime.plugin_api.vpn import AccountSpec, VpnBackend

from .fakes import FakePeer
from .links import fetch_configs
from .payment_contract import (
    DeliveryProof,
    PaymentProviderContract,
    ProviderUnderTest,
    Signature,
)

__all__ = [
    "BackendUnderTest",
    "DeliveryProof",
    "PaymentProviderContract",
    "ProviderUnderTest",
    "Signature",
    "VpnBackendContract",
]


@dataclass
class BackendUnderTest:
    backend: VpnBackend
    peer: FakePeer | None
    secrets: Sequence[str] = ()
    make_fresh: Callable[[], VpnBackend] | None = None
    """A second backend object on the same panel: what a restarted process would build."""
    stores_expiry: bool = True
    """False for panels without expiry (Outline): the core deletes accounts instead."""
    use_traffic: Callable[[str, int], Awaitable[None] | None] | None = None
    """Make the account of that name use that many bytes on the panel (a fake's usage
    counter); None skips the checks of traffic periods."""


TRAFFIC_LIMIT = 10 * 2**20


def _spec(
    name: str, *, days: int = 30, period_start: datetime | None = None, **changes: object
) -> AccountSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, object] = {
        "name": name,
        "expires_at": now + timedelta(days=days),
        "telegram_id": 424242,
        "period_start": period_start or now,
    }
    values.update(changes)
    return AccountSpec(**values)  # type: ignore[arg-type]


def _same_moment(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs((a - b).total_seconds()) < 1.5


async def _use(subject: BackendUnderTest, name: str, data_bytes: int) -> None:
    assert subject.use_traffic is not None
    done = subject.use_traffic(name, data_bytes)
    if inspect.isawaitable(done):
        await done


class VpnBackendContract:
    """Subclass and provide a ``subject`` fixture yielding a ``BackendUnderTest``."""

    async def test_ensure_creates_an_account_with_an_access_url(
        self, subject: BackendUnderTest
    ) -> None:
        spec = _spec("c_create_1", traffic_limit_bytes=10 * 2**30, device_limit=3)
        account = await subject.backend.ensure_account(spec)
        assert account.name == spec.name
        assert account.reference
        assert account.access_url
        assert account.enabled
        if subject.stores_expiry:
            assert _same_moment(account.expires_at, spec.expires_at)

    async def test_the_access_url_yields_configs(self, subject: BackendUnderTest) -> None:
        account = await subject.backend.ensure_account(_spec("c_link_1"))
        configs = await fetch_configs(account.access_url)
        assert configs, f"{account.access_url!r} gives a client no config"
        found = await subject.backend.get_account("c_link_1")
        assert found is not None and await fetch_configs(found.access_url)

    async def test_a_new_period_restores_an_account_whose_traffic_ran_out(
        self, subject: BackendUnderTest
    ) -> None:
        if subject.use_traffic is None:
            pytest.skip("no use_traffic given: cannot spend an account's traffic")
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=29)
        first = _spec("c_period_1", days=1, period_start=started, traffic_limit_bytes=TRAFFIC_LIMIT)
        await subject.backend.ensure_account(first)
        await _use(subject, first.name, TRAFFIC_LIMIT)
        spent = await subject.backend.ensure_account(first)  # the same period again
        assert not spent.enabled and spent.limited

        renewed = _spec(
            first.name,
            days=31,
            period_start=started + timedelta(days=29),
            traffic_limit_bytes=TRAFFIC_LIMIT,
        )
        restored = await subject.backend.ensure_account(renewed)
        assert restored.enabled and not restored.limited
        assert await fetch_configs(restored.access_url)
        if subject.stores_expiry:
            assert _same_moment(restored.expires_at, renewed.expires_at)

    async def test_a_retried_activation_of_a_period_never_resets_it_twice(
        self, subject: BackendUnderTest
    ) -> None:
        if subject.use_traffic is None:
            pytest.skip("no use_traffic given: cannot spend an account's traffic")
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=29)
        first = _spec("c_period_2", days=1, period_start=started, traffic_limit_bytes=TRAFFIC_LIMIT)
        await subject.backend.ensure_account(first)
        await _use(subject, first.name, TRAFFIC_LIMIT // 2)
        renewed = _spec(
            first.name,
            days=31,
            period_start=started + timedelta(days=29),
            traffic_limit_bytes=TRAFFIC_LIMIT,
        )
        await subject.backend.ensure_account(renewed)
        await _use(subject, first.name, TRAFFIC_LIMIT - 1)
        retried = await subject.backend.ensure_account(renewed)
        assert retried.enabled, "the period's usage counts until the limit"
        if subject.make_fresh is not None:
            assert (await subject.make_fresh().ensure_account(renewed)).enabled
        await _use(subject, first.name, 1)
        found = await subject.backend.get_account(first.name)
        assert found is not None and found.limited and not found.enabled
        again = await subject.backend.ensure_account(renewed)
        assert again.limited and not again.enabled, "a retry must not reset the usage again"

    async def test_declared_usage_is_read_and_a_new_period_resets_it(
        self, subject: BackendUnderTest
    ) -> None:
        """A backend that declares ``usage`` reports the period's bytes and limit."""
        if not capabilities_of(subject.backend).usage:
            pytest.skip("the backend does not declare usage")
        if subject.use_traffic is None:
            pytest.skip("no use_traffic given: cannot spend an account's traffic")
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=29)
        first = _spec("c_usage_1", days=1, period_start=started, traffic_limit_bytes=TRAFFIC_LIMIT)
        created = await subject.backend.ensure_account(first)
        assert created.used_bytes == 0
        assert created.traffic_limit_bytes == TRAFFIC_LIMIT
        await _use(subject, first.name, TRAFFIC_LIMIT // 4)
        found = await subject.backend.get_account(first.name)
        assert found is not None and found.used_bytes == TRAFFIC_LIMIT // 4
        renewed = _spec(
            first.name,
            days=31,
            period_start=started + timedelta(days=29),
            traffic_limit_bytes=TRAFFIC_LIMIT,
        )
        assert (await subject.backend.ensure_account(renewed)).used_bytes == 0

    async def test_a_raised_limit_in_the_same_period_restores_access_without_a_reset(
        self, subject: BackendUnderTest
    ) -> None:
        """A traffic top-up: the same period, a higher absolute limit, the usage kept."""
        if not capabilities_of(subject.backend).traffic_limit:
            pytest.skip("the backend does not declare traffic limits")
        if subject.use_traffic is None:
            pytest.skip("no use_traffic given: cannot spend an account's traffic")
        spec = _spec("c_raise_1", traffic_limit_bytes=TRAFFIC_LIMIT)
        await subject.backend.ensure_account(spec)
        await _use(subject, spec.name, TRAFFIC_LIMIT)
        spent = await subject.backend.ensure_account(spec)
        assert spent.limited and not spent.enabled
        raised = replace(spec, traffic_limit_bytes=2 * TRAFFIC_LIMIT)
        account = await subject.backend.ensure_account(raised)
        again = await subject.backend.ensure_account(raised)
        assert account.enabled and not account.limited
        assert again.enabled
        if capabilities_of(subject.backend).usage:
            assert again.used_bytes == TRAFFIC_LIMIT, "a raised limit keeps the usage"
            assert again.traffic_limit_bytes == 2 * TRAFFIC_LIMIT

    async def test_ensure_twice_gives_one_state(self, subject: BackendUnderTest) -> None:
        spec = _spec("c_twice_1")
        first = await subject.backend.ensure_account(spec)
        second = await subject.backend.ensure_account(spec)
        assert second.reference == first.reference
        found = await subject.backend.get_account(spec.name)
        assert found is not None and found.reference == first.reference
        if subject.stores_expiry:
            assert _same_moment(found.expires_at, spec.expires_at)

    async def test_a_restarted_process_adopts_what_a_crashed_one_created(
        self, subject: BackendUnderTest
    ) -> None:
        if subject.make_fresh is None:
            pytest.skip("no make_fresh given: cannot build a second client")
        spec = _spec("c_adopt_1")
        created = await subject.backend.ensure_account(spec)
        # the process died before committing `created`; a new process retries the job
        adopted = await subject.make_fresh().ensure_account(spec)
        assert adopted.reference == created.reference

    async def test_expiry_is_absolute(self, subject: BackendUnderTest) -> None:
        if not subject.stores_expiry:
            pytest.skip("this panel keeps no expiry")
        await subject.backend.ensure_account(_spec("c_expiry_1", days=30))
        later = _spec("c_expiry_1", days=60)
        await subject.backend.ensure_account(later)
        again = await subject.backend.ensure_account(later)
        assert _same_moment(again.expires_at, later.expires_at)

    async def test_disable_then_ensure_enables_again(self, subject: BackendUnderTest) -> None:
        spec = _spec("c_disable_1")
        await subject.backend.ensure_account(spec)
        await subject.backend.disable(spec.name)
        disabled = await subject.backend.get_account(spec.name)
        assert disabled is not None and not disabled.enabled
        assert (await subject.backend.ensure_account(spec)).enabled

    async def test_delete_removes_and_missing_accounts_are_fine(
        self, subject: BackendUnderTest
    ) -> None:
        spec = _spec("c_delete_1")
        await subject.backend.ensure_account(spec)
        await subject.backend.delete(spec.name)
        assert await subject.backend.get_account(spec.name) is None
        await subject.backend.delete(spec.name)
        await subject.backend.disable("c_never_existed")
        await subject.backend.delete("c_never_existed")

    async def test_health_passes_on_a_healthy_panel(self, subject: BackendUnderTest) -> None:
        await subject.backend.health()

    @pytest.mark.parametrize(
        ("status", "transient"), [(500, True), (502, True), (503, True), (429, True), (403, False)]
    )
    async def test_failures_are_classified(
        self, subject: BackendUnderTest, status: int, transient: bool
    ) -> None:
        if subject.peer is None:
            pytest.skip("a real panel cannot be told to fail")
        subject.peer.fail_next(
            status, body={"detail": "injected"}, headers={"Retry-After": "7"}, times=50
        )
        with pytest.raises(DependencyError) as caught:
            await subject.backend.ensure_account(_spec(f"c_fail_{status}"))
        failure = classify(caught.value)
        assert failure.type is FailureType.DEPENDENCY
        assert failure.transient is transient
        if status == 429:
            assert caught.value.retry_after == 7
        for secret in subject.secrets:
            assert secret not in str(caught.value)

    async def test_health_fails_when_the_panel_fails(self, subject: BackendUnderTest) -> None:
        if subject.peer is None:
            pytest.skip("a real panel cannot be told to fail")
        subject.peer.fail_next(503, body={"detail": "down"}, times=50)
        with pytest.raises(DependencyError):
            await subject.backend.health()
