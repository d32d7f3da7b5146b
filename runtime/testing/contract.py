"""Behavioural contracts every VPN backend and payment provider must pass.

A plugin author subclasses the contract class in their own tests and provides one async
fixture; pytest then runs every check against their plugin::

    class TestMyBackend(VpnBackendContract):
        @pytest.fixture
        async def subject(self) -> AsyncIterator[BackendUnderTest]:
            fake = MyFakePanel()
            async with fake.running() as url:
                yield BackendUnderTest(MyBackend(url, token="t"), fake, secrets=["t"],
                                       make_fresh=lambda: MyBackend(url, token="t"))

With a real panel instead of a fake, pass ``peer=None``: the fault checks are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from runtime.failures import DependencyError, FailureType, classify
from runtime.plugin_api.vpn import AccountSpec, VpnBackend

from .fakes import FakePeer
from .payment_contract import PaymentProviderContract, ProviderUnderTest

__all__ = [
    "BackendUnderTest",
    "PaymentProviderContract",
    "ProviderUnderTest",
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


def _spec(name: str, *, days: int = 30, **changes: object) -> AccountSpec:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    values: dict[str, object] = {"name": name, "expires_at": expires, "telegram_id": 424242}
    values.update(changes)
    return AccountSpec(**values)  # type: ignore[arg-type]


def _same_moment(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs((a - b).total_seconds()) < 1.5


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
