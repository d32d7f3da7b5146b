"""The Remnawave backend against the fake panel on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

import plugins.remnawave as plugin
from plugins.remnawave import RemnawaveBackend, RemnawaveSettings
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError
from runtime.plugin_api import ENTRY_POINT_GROUP, load_plugins
from runtime.plugin_api.vpn import AccountSpec
from runtime.testing.contract import BackendUnderTest, VpnBackendContract
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.testing.links import fetch_configs

TOKEN = "eyJhbGciOiJIUzI1NiJ9.remnawave-SECRET-api-token"
API_KEY = "caddy-SECRET-api-key"
SQUAD = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
OTHER_SQUAD = "7a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"


def make_settings(url: str, **changes: Any) -> RemnawaveSettings:
    values: dict[str, Any] = {"base_url": url, "api_token": TOKEN, "internal_squads": [SQUAD]}
    values.update(changes)
    return RemnawaveSettings.model_validate(values)


def spec(name: str = "u_42_1", *, days: float = 30, **changes: Any) -> AccountSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, Any] = {
        "name": name,
        "expires_at": now + timedelta(days=days),
        "telegram_id": 42,
        "period_start": now - timedelta(days=1),
    }
    values.update(changes)
    return AccountSpec(**values)


def extend_calls(fake: FakeRemnawave) -> list[str]:
    return [r.path for r in fake.requests if r.path.endswith("/actions/extend")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeRemnawave]:
    panel = FakeRemnawave(api_token=TOKEN, internal_squads={SQUAD: "Main", OTHER_SQUAD: "VIP"})
    async with panel.running():
        yield panel


@pytest.fixture
async def backend(fake: FakeRemnawave) -> AsyncIterator[RemnawaveBackend]:
    subject = RemnawaveBackend(make_settings(fake.url))
    yield subject
    await subject.aclose()


class TestRemnawaveContract(VpnBackendContract):
    @pytest.fixture
    async def subject(self, fake: FakeRemnawave) -> AsyncIterator[BackendUnderTest]:
        made: list[RemnawaveBackend] = []
        fake.serve_subscriptions_here()

        def make() -> RemnawaveBackend:
            made.append(RemnawaveBackend(make_settings(fake.url)))
            return made[-1]

        yield BackendUnderTest(
            make(), fake, secrets=[TOKEN], make_fresh=make, use_traffic=fake.use_traffic
        )
        assert extend_calls(fake) == []
        for backend in made:
            await backend.aclose()


# -- the whole life of an account -----------------------------------------------------------


async def test_lifecycle_create_extend_disable_delete(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    first = spec(days=30, traffic_limit_bytes=5 * 2**30, device_limit=2)
    account = await backend.ensure_account(first)
    stored = fake.user("u_42_1")
    assert stored is not None
    assert stored["expireAt"] == first.expires_at
    assert (stored["trafficLimitBytes"], stored["hwidDeviceLimit"]) == (5 * 2**30, 2)
    assert stored["telegramId"] == 42
    assert stored["activeInternalSquads"] == [SQUAD]
    assert stored["status"] == "ACTIVE"
    assert account.reference == str(stored["id"])
    assert account.access_url == f"https://sub.example.com/{stored['shortUuid']}"
    assert account.expires_at == first.expires_at and account.enabled

    later = spec(days=60)
    renewed = await backend.ensure_account(later)
    assert renewed.expires_at == later.expires_at
    assert renewed.reference == account.reference
    assert renewed.access_url == account.access_url
    assert stored["expireAt"] == later.expires_at
    assert (stored["trafficLimitBytes"], stored["hwidDeviceLimit"]) == (0, 0)  # unlimited

    await backend.disable("u_42_1")
    assert stored["status"] == "DISABLED"
    await backend.disable("u_42_1")  # already disabled: fine
    found = await backend.get_account("u_42_1")
    assert found is not None and not found.enabled

    assert (await backend.ensure_account(later)).enabled
    await backend.delete("u_42_1")
    assert fake.user("u_42_1") is None
    assert await backend.get_account("u_42_1") is None
    assert extend_calls(fake) == []


async def test_a_taken_username_is_resolved_and_patched(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    existing = fake.add_user(
        "u_42_1", expireAt=datetime.now(UTC) + timedelta(days=2), activeInternalSquads=[]
    )
    existing["status"] = "DISABLED"
    wanted = spec(days=90, traffic_limit_bytes=2**40, device_limit=5)
    with capture_logs() as logs:
        account = await backend.ensure_account(wanted)

    [create] = fake.calls("POST", "/api/users")
    patch, marked = fake.calls("PATCH", "/api/users")
    body = patch.json()
    assert marked.json() == {"id": existing["id"], "description": f"vpnbot-period:{wanted.period}"}
    assert create.json()["username"] == "u_42_1"
    assert [k for k in ("id", "username") if k in body] == ["username"]  # exactly one
    assert body["expireAt"] == wanted.expires_at.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    assert body["status"] == "ACTIVE"
    assert existing["expireAt"] == wanted.expires_at
    assert (existing["trafficLimitBytes"], existing["hwidDeviceLimit"]) == (2**40, 5)
    assert existing["activeInternalSquads"] == [SQUAD]
    assert existing["status"] == "ACTIVE"
    assert account.reference == str(existing["id"]) and account.enabled
    assert any(entry["event"] == "account exists, adopting it" for entry in logs)
    assert extend_calls(fake) == []


async def test_a_renewal_after_used_up_traffic_resets_usage_once(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    first = spec(traffic_limit_bytes=2**30)
    await backend.ensure_account(first)
    fake.use_traffic("u_42_1", 2**30)
    spent = await backend.get_account("u_42_1")
    assert spent is not None and spent.limited and not spent.enabled

    fake.requests.clear()
    renewed = replace(
        first,
        expires_at=first.expires_at + timedelta(days=30),
        period_start=first.period_start + timedelta(days=30),
    )
    account = await backend.ensure_account(renewed)
    stored = fake.user("u_42_1")
    assert stored is not None
    assert account.enabled and not account.limited
    assert (stored["usedTrafficBytes"], stored["status"]) == (0, "ACTIVE")
    assert stored["lifetimeUsedTrafficBytes"] == 2**30
    assert stored["description"] == f"vpnbot-period:{renewed.period}"
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/api/users"),
        ("PATCH", "/api/users"),
        ("PATCH", "/api/users"),  # the mark opened
        ("POST", f"/api/users/{stored['id']}/actions/reset-traffic"),
        ("PATCH", "/api/users"),  # the mark closed
    ]
    assert fake.requests[2].json()["description"] == f"vpnbot-period:{renewed.period}/open:{2**30}"

    fake.use_traffic("u_42_1", 100)
    await backend.ensure_account(renewed)  # a retry: nothing to reset
    assert stored["usedTrafficBytes"] == 100
    assert len([r for r in fake.requests if r.path.endswith("/reset-traffic")]) == 1


async def test_an_active_status_over_the_limit_is_reported_limited(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    await backend.ensure_account(spec(traffic_limit_bytes=1000))
    stored = fake.user("u_42_1")
    assert stored is not None
    stored["usedTrafficBytes"] = 1000  # counted by a node, not yet seen by the panel's job
    fake.review_on_read = False
    account = await backend.get_account("u_42_1")
    assert account is not None and stored["status"] == "ACTIVE"
    assert account.limited and not account.enabled


async def test_the_subscription_serves_links_of_active_users_only(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    fake.serve_subscriptions_here()
    account = await backend.ensure_account(spec())
    stored = fake.user("u_42_1")
    assert stored is not None
    [link] = await fetch_configs(account.access_url)
    assert link.startswith(f"vless://{stored['vlessUuid']}@") and link.endswith("#Main")
    await backend.disable("u_42_1")
    [placeholder] = await fetch_configs(account.access_url)
    assert "@0.0.0.0:1" in placeholder and placeholder.endswith("#Subscription%20disabled")
    async with httpx.AsyncClient() as client:
        unknown = await client.get(account.access_url[:-4] + "zzzz")
    assert unknown.status_code == 404


async def test_renewing_an_expired_user_makes_it_active(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    stored = fake.add_user("u_42_1", expireAt=datetime.now(UTC) - timedelta(days=1))
    account = await backend.ensure_account(spec(days=30))
    assert account.enabled
    assert stored["status"] == "ACTIVE"


async def test_a_past_expiry_disables_instead_of_patching(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    await backend.ensure_account(spec(days=30))
    before = fake.user("u_42_1")
    assert before is not None
    kept_expiry = before["expireAt"]

    lapsed = await backend.ensure_account(spec(days=-1, traffic_limit_bytes=2**30))
    assert not lapsed.enabled
    assert before["status"] == "DISABLED"
    assert before["expireAt"] == kept_expiry  # the panel refuses a past expireAt
    assert before["trafficLimitBytes"] == 2**30
    [patch] = fake.calls("PATCH", "/api/users")
    assert "expireAt" not in patch.json() and "status" not in patch.json()
    assert len(fake.calls("POST", "/api/users/")) == 1  # the disable action

    fresh = await backend.ensure_account(spec("u_43_1", days=-1))
    assert not fresh.enabled
    created = fake.user("u_43_1")
    assert created is not None and created["status"] == "DISABLED"


async def test_the_fake_extend_action_is_faithfully_not_idempotent(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    account = await backend.ensure_account(spec(days=10))
    stored = fake.user("u_42_1")
    assert stored is not None
    start = stored["expireAt"]
    async with httpx.AsyncClient(base_url=fake.url) as client:
        for _ in range(2):
            response = await client.post(
                f"/api/users/{account.reference}/actions/extend",
                json={"days": 5},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 200
    assert stored["expireAt"] == start + timedelta(days=10)  # a retry adds the days twice


async def test_disable_and_delete_of_missing_users_are_fine(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    await backend.disable("nobody")
    await backend.delete("nobody")
    assert await backend.get_account("nobody") is None
    # gone between the lookup and the action: the panel's A025 is fine too
    client = backend._client
    await client.disable_user(999)
    await client.delete_user(999)
    assert [r.path for r in fake.requests[-2:]] == [
        "/api/users/999/actions/disable",
        "/api/users/999",
    ]


async def test_a_404_without_a_panel_error_code_is_not_a_missing_user(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    fake.fail_next(404, body="Cannot GET", path_prefix="/api/users/by-username/")
    with pytest.raises(DependencyError) as caught:
        await backend.delete("nobody")
    assert not caught.value.transient


async def test_validation_errors_are_permanent(backend: RemnawaveBackend) -> None:
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec("ab"))
    assert not caught.value.transient
    assert "400" in str(caught.value) and "Validation failed" in str(caught.value)


async def test_an_unknown_squad_is_the_panels_500(fake: FakeRemnawave) -> None:
    backend = RemnawaveBackend(
        make_settings(fake.url, internal_squads=["00000000-0000-4000-8000-000000000000"])
    )
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert "A018" in str(caught.value)
    assert fake.users == {}


# -- headers, failures and secrets ----------------------------------------------------------


async def test_headers_reach_the_panel(fake: FakeRemnawave) -> None:
    fake.api_key = API_KEY
    backend = RemnawaveBackend(make_settings(fake.url, api_key=API_KEY))
    try:
        await backend.health()
    finally:
        await backend.aclose()
    [probe] = fake.requests
    assert probe.headers["authorization"] == f"Bearer {TOKEN}"
    assert probe.headers["x-api-key"] == API_KEY
    # a plain http address reaches the panel without its proxy: it wants these
    assert probe.headers["x-forwarded-proto"] == "https"
    assert probe.headers["x-forwarded-for"]


async def test_no_forwarding_headers_over_https() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"message": "User not found", "errorCode": "A063"})

    backend = RemnawaveBackend(
        make_settings("https://panel.test/base"), transport=httpx.MockTransport(answer)
    )
    try:
        await backend.health()
    finally:
        await backend.aclose()
    [request] = seen
    assert str(request.url).startswith("https://panel.test/base/api/users/by-username/")
    assert "x-forwarded-proto" not in request.headers


async def test_a_missing_api_key_or_a_bad_token_is_permanent(fake: FakeRemnawave) -> None:
    fake.api_key = API_KEY
    backend = RemnawaveBackend(make_settings(fake.url))
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.health()
        assert not caught.value.transient and "403" in str(caught.value)
    finally:
        await backend.aclose()
    fake.api_key = None
    backend = RemnawaveBackend(make_settings(fake.url, api_token="not-the-token"))
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
        assert not caught.value.transient and "401" in str(caught.value)
    finally:
        await backend.aclose()


async def test_rate_limit_surfaces_retry_after(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    fake.rate_limit_next(9)
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec())
    assert caught.value.transient
    assert caught.value.retry_after == 9


async def test_a_hanging_panel_times_out_as_transient(fake: FakeRemnawave) -> None:
    backend = RemnawaveBackend(make_settings(fake.url, timeout_seconds=0.2))
    fake.delay_next(3)  # answered after 3 s: a timeout that did not fire lets the call pass
    try:
        with trio.fail_after(30), pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert caught.value.transient
    assert "timed out" in str(caught.value)


async def test_no_secret_in_logs_or_errors(fake: FakeRemnawave) -> None:
    fake.api_key = API_KEY
    backend = RemnawaveBackend(make_settings(fake.url, api_key=API_KEY))
    errors: list[str] = []
    try:
        with capture_logs() as logs:
            await backend.ensure_account(spec())
            await backend.ensure_account(spec(days=45))
            for status in (500, 401, 403, 429, 400):
                fake.fail_next(
                    status,
                    body={"message": f"echo {TOKEN} {API_KEY}", "errorCode": "A001"},
                    headers={"Retry-After": "1"},
                )
                with pytest.raises(DependencyError) as caught:
                    await backend.ensure_account(spec(days=50))
                errors += [str(caught.value), repr(caught.value)]
    finally:
        await backend.aclose()
    text = "\n".join([*errors, *(repr(entry) for entry in logs), repr(backend)])
    assert "***" in text  # the echoed secrets were scrubbed
    for secret in (TOKEN, API_KEY):
        assert secret not in text
    settings_text = repr(make_settings(fake.url, api_key=API_KEY))
    assert TOKEN not in settings_text and API_KEY not in settings_text


async def test_an_answer_of_another_shape_is_a_failure(
    fake: FakeRemnawave, backend: RemnawaveBackend
) -> None:
    fake.fail_next(200, body={"unexpected": True}, path_prefix="/api/users/by-username/")
    with pytest.raises(DependencyError) as caught:
        await backend.get_account("u_42_1")
    assert "3.x" in str(caught.value)


# -- the hook -------------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None) -> Settings:
    tables = {} if table is None else {"remnawave": table}
    return Settings.model_validate({"plugins": {"settings": tables}})


def test_hook_offers_nothing_when_unconfigured() -> None:
    assert plugin.vpnbot_vpn_backends(settings_with(None)) == []


def test_hook_builds_a_backend_from_its_table() -> None:
    table = {
        "base_url": "https://panel.example.com",
        "api_token": TOKEN,
        "api_key": API_KEY,
        "timeout_seconds": 5,
        "internal_squads": [SQUAD.upper()],
        "traffic_limit_strategy": "MONTH",
    }
    [backend] = plugin.vpnbot_vpn_backends(settings_with(table))
    assert isinstance(backend, RemnawaveBackend)
    assert backend.name == "remnawave"


BASE: dict[str, Any] = {"base_url": "https://p", "api_token": "t", "internal_squads": [SQUAD]}


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"base_url": "https://p", "internal_squads": [SQUAD]}, ".api_token"),
        ({"base_url": "https://p", "api_token": "t"}, ".internal_squads"),
        ({**BASE, "internal_squads": []}, ".internal_squads"),
        ({**BASE, "internal_squads": ["not-a-uuid"]}, ".internal_squads[0]"),
        ({**BASE, "base_url": "panel.example.com"}, ".base_url"),
        ({**BASE, "traffic_limit_strategy": "monthly"}, ".traffic_limit_strategy"),
        ({**BASE, "api_tokn": "x"}, ".api_tokn"),
    ],
)
def test_hook_rejects_a_bad_table(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plugin.vpnbot_vpn_backends(settings_with(table))
    assert f"plugins.settings.remnawave{path}" in str(caught.value)


def test_config_errors_do_not_echo_the_token() -> None:
    with pytest.raises(ConfigError) as caught:
        plugin.vpnbot_vpn_backends(settings_with({**BASE, "api_token": TOKEN, "api_key": 7}))
    assert TOKEN not in str(caught.value)


def test_the_plugin_loader_offers_the_backend_and_stops_on_a_bad_table() -> None:
    entry_points = [EntryPoint("remnawave", "plugins.remnawave", ENTRY_POINT_GROUP)]
    loaded = load_plugins(settings_with(BASE), entry_points=entry_points)
    assert [backend.name for backend in loaded.vpn_backends()] == ["remnawave"]
    assert loaded.problems == []
    with pytest.raises(ConfigError):
        load_plugins(settings_with({**BASE, "internal_squads": []}), entry_points=entry_points)


# -- plan limits and devices -------------------------------------------------------------


async def test_limits_are_set_on_create_and_on_extend_and_usage_is_read(
    backend: RemnawaveBackend, fake: FakeRemnawave
) -> None:
    first = spec("lim_1", traffic_limit_bytes=5 * 2**30, device_limit=2)
    created = await backend.ensure_account(first)
    user = fake.user("lim_1")
    assert user is not None
    assert (user["trafficLimitBytes"], user["hwidDeviceLimit"]) == (5 * 2**30, 2)
    assert user["trafficLimitStrategy"] == "NO_RESET"
    assert (created.used_bytes, created.traffic_limit_bytes) == (0, 5 * 2**30)
    fake.use_traffic("lim_1", 2**30)
    extended = await backend.ensure_account(
        replace(
            first,
            expires_at=first.expires_at + timedelta(days=30),
            traffic_limit_bytes=9 * 2**30,
            device_limit=4,
        )
    )
    assert (user["trafficLimitBytes"], user["hwidDeviceLimit"]) == (9 * 2**30, 4)
    assert (extended.used_bytes, extended.traffic_limit_bytes) == (2**30, 9 * 2**30)


async def test_devices_are_listed_limited_and_deleted(
    backend: RemnawaveBackend, fake: FakeRemnawave
) -> None:
    await backend.ensure_account(spec("dev_1", device_limit=2))
    assert await backend.devices("dev_1") == []
    assert fake.add_device("dev_1", "hw-phone", platform="iOS", model="iPhone 15")
    assert fake.add_device("dev_1", "hw-laptop", platform="Windows", model="")
    assert not fake.add_device("dev_1", "hw-third"), "the panel keeps to hwidDeviceLimit"
    listed = await backend.devices("dev_1")
    assert [d.id for d in listed] == ["hw-phone", "hw-laptop"]
    assert listed[0].label == "iOS iPhone 15" and listed[1].label == "Windows"
    assert await backend.delete_device("dev_1", "hw-phone")
    assert not await backend.delete_device("dev_1", "hw-phone"), "gone already"
    assert [d.id for d in await backend.devices("dev_1")] == ["hw-laptop"]
    assert fake.add_device("dev_1", "hw-third"), "a deleted device frees its place"
    assert await backend.devices("nobody") == []
    assert not await backend.delete_device("nobody", "hw-laptop")


async def test_a_client_over_the_device_limit_gets_no_config(
    backend: RemnawaveBackend, fake: FakeRemnawave
) -> None:
    fake.serve_subscriptions_here()
    account = await backend.ensure_account(spec("dev_2", device_limit=1))
    async with httpx.AsyncClient() as client:
        first = await client.get(account.access_url, headers={"x-hwid": "a"})
        second = await client.get(account.access_url, headers={"x-hwid": "b"})
    assert "0.0.0.0" not in base64.b64decode(first.text).decode()
    assert "device%20limit" in base64.b64decode(second.text).decode()


async def test_a_lying_device_list_gives_no_devices(
    backend: RemnawaveBackend, fake: FakeRemnawave
) -> None:
    await backend.ensure_account(spec("dev_3"))
    fake.add_device("dev_3", "ok")
    user = fake.user("dev_3")
    assert user is not None
    fake.devices[user["id"]] += [{"hwid": 5}, "junk", {"hwid": ""}]
    assert [d.id for d in await backend.devices("dev_3")] == ["ok"]
